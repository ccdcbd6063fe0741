"""Online metrics per arm and engagement type, from the shown impressions, with users as the unit.

* :func:`user_totals`: one row per (arm, user): requests, impressions, engaged impressions per type
  (``engaged_<t>``, drawn labels) and expected engaged impressions (``expected_<t>``, the sum of the true
  probabilities: the same quantity without the Bernoulli noise of the labels);
* :func:`merge_totals`: add up per-user totals of several traffic chunks;
* :func:`arm_metrics`: per type, **propensity** (share of impressions engaged = Σ engaged / Σ impressions, a
  ratio over users, delta method) and **volume** (engagements per user, a mean over users), each with its
  95 % interval, plus the same two computed from the expected counts (``expected_*``);
* :func:`lifts`: relative lift of every arm against the control arm with its interval
  (:func:`mtrank.online.stats.relative_lift`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from mtrank.online.stats import (
    Estimate,
    Lift,
    mean_estimate,
    ratio_estimate,
    relative_lift,
)
from mtrank.online.traffic import ARM_COL

__all__ = ["KINDS", "user_totals", "merge_totals", "ArmMetrics", "arm_metrics", "lifts"]

# metric kinds: labels drawn from the world, and their expectation (true probabilities)
KINDS = ("propensity", "volume", "expected_propensity", "expected_volume")


def user_totals(shown: pl.DataFrame, types: Sequence[str]) -> pl.DataFrame:
    """Per (arm, user) totals of shown impressions (needs ``arm``, ``user_id``, ``request_id``, the label and
    ``p_true_<t>`` column of each type)."""
    missing = [
        c for c in [ARM_COL, "user_id", "request_id", *types, *[f"p_true_{t}" for t in types]] if c not in shown.columns
    ]
    if missing:
        raise KeyError(f"shown impressions lack column(s) {missing}; have {shown.columns}")
    return shown.group_by(ARM_COL, "user_id").agg(
        pl.col("request_id").n_unique().alias("requests"),
        pl.len().cast(pl.Int64).alias("impressions"),
        *[pl.col(t).cast(pl.Int64).sum().alias(f"engaged_{t}") for t in types],
        *[pl.col(f"p_true_{t}").sum().alias(f"expected_{t}") for t in types],
    )


def merge_totals(parts: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Sum the per-user totals of several chunks (a user's requests may fall in several chunks)."""
    if not parts:
        raise ValueError("no per-user totals to merge")
    frame = pl.concat(list(parts), how="vertical")
    value_cols = [c for c in frame.columns if c not in (ARM_COL, "user_id")]
    return frame.group_by(ARM_COL, "user_id").agg(pl.col(c).sum() for c in value_cols).sort(ARM_COL, "user_id")


@dataclass(frozen=True)
class ArmMetrics:
    """Everything measured on one arm: sizes and, per kind and type, an :class:`Estimate`."""

    arm: str
    users: int
    requests: int
    impressions: int
    metrics: dict[str, dict[str, Estimate]]  # kind -> type -> estimate

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "users": self.users,
            "requests": self.requests,
            "impressions": self.impressions,
            "metrics": {k: {t: e.to_dict() for t, e in v.items()} for k, v in self.metrics.items()},
        }


def arm_metrics(totals: pl.DataFrame, arm: str, types: Sequence[str], level: float = 0.95) -> ArmMetrics:
    """Propensity and volume per type (observed and expected) of ``arm`` from :func:`user_totals`."""
    rows = totals.filter(pl.col(ARM_COL) == arm)
    if rows.height < 2:
        raise ValueError(f"arm {arm!r} has {rows.height} user(s) in the traffic: give it more requests")
    x = rows["impressions"].to_numpy().astype(float)
    out: dict[str, dict[str, Estimate]] = {k: {} for k in KINDS}
    for t in types:
        y = rows[f"engaged_{t}"].to_numpy().astype(float)
        e = rows[f"expected_{t}"].to_numpy().astype(float)
        out["propensity"][t] = ratio_estimate(y, x, level)
        out["volume"][t] = mean_estimate(y, level)
        out["expected_propensity"][t] = ratio_estimate(e, x, level)
        out["expected_volume"][t] = mean_estimate(e, level)
    return ArmMetrics(arm, rows.height, int(rows["requests"].sum()), int(x.sum()), out)


def lifts(arms: Mapping[str, ArmMetrics], control: str, level: float = 0.95) -> dict[str, dict[str, dict[str, Lift]]]:
    """``{arm: {kind: {type: lift vs control}}}`` for every arm but the control."""
    if control not in arms:
        raise KeyError(f"control arm {control!r} is not among the arms {list(arms)}")
    c = arms[control]
    out: dict[str, dict[str, dict[str, Lift]]] = {}
    for name, a in arms.items():
        if name == control:
            continue
        out[name] = {
            k: {t: relative_lift(a.metrics[k][t], c.metrics[k][t], level) for t in a.metrics[k]} for k in a.metrics
        }
    return out
