"""One simulated A/B experiment: traffic → arms by user → each arm's ranking → users respond → metrics.

:func:`run_experiment` draws ``requests_per_arm × len(policies)`` fresh requests (in chunks of
``chunk_requests`` to bound memory), assigns users to arms with an experiment-specific salt, scores each
model's rows once (arms that share a model share the scoring), ranks each arm's requests with its policy,
shows the top ``k`` and draws the users' engagements from the world. Everything random comes from
``(seed, name)``: the same configuration gives the same figures.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from mtrank.data.world_api import RankingWorld
from mtrank.online.metrics import (
    ArmMetrics,
    arm_metrics,
    lifts,
    merge_totals,
    user_totals,
)
from mtrank.online.policies import ModelScorer, Policy
from mtrank.online.response import respond
from mtrank.online.stats import Lift
from mtrank.online.traffic import (
    ARM_COL,
    TRAFFIC_REQUEST_ID_START,
    experiment_rng,
    salt_of,
    sample_traffic,
)

log = logging.getLogger(__name__)

__all__ = ["TrafficConfig", "ExperimentResult", "run_experiment"]


@dataclass(frozen=True)
class TrafficConfig:
    """How much traffic an experiment gets and how it is served."""

    requests_per_arm: int
    k: int = 10
    chunk_requests: int = 50_000
    level: float = 0.95

    def __post_init__(self) -> None:
        if self.requests_per_arm < 1:
            raise ValueError(f"requests_per_arm must be >= 1, got {self.requests_per_arm}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.chunk_requests < 1:
            raise ValueError(f"chunk_requests must be >= 1, got {self.chunk_requests}")


@dataclass
class ExperimentResult:
    name: str
    control: str
    policies: list[Policy]
    types: list[str]
    arms: dict[str, ArmMetrics]
    lifts: dict[str, dict[str, dict[str, Lift]]]
    traffic: TrafficConfig
    seconds: float = 0.0
    users_by_arm: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def lift(self, arm: str, kind: str, type_: str) -> Lift:
        return self.lifts[arm][kind][type_]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "control": self.control,
            "types": self.types,
            "traffic": {
                "requests_per_arm": self.traffic.requests_per_arm,
                "k": self.traffic.k,
                "level": self.traffic.level,
            },
            "policies": {
                p.name: {
                    "model": p.model,
                    "weights": dict(p.weights) if p.weights is not None else None,
                    "description": p.describe(),
                }
                for p in self.policies
            },
            "arms": {n: a.to_dict() for n, a in self.arms.items()},
            "lifts": {
                a: {k: {t: lf.to_dict() for t, lf in v.items()} for k, v in kinds.items()}
                for a, kinds in self.lifts.items()
            },
            "seconds": self.seconds,
        }


def run_experiment(
    world: RankingWorld,
    policies: Sequence[Policy],
    scorers: Mapping[str, ModelScorer],
    traffic: TrafficConfig,
    types: Sequence[str],
    seed: int,
    name: str,
    control: str | None = None,
    start_request_id: int = TRAFFIC_REQUEST_ID_START,
) -> ExperimentResult:
    """Run one experiment; ``control`` (default: the first policy) is the arm every lift is measured against."""
    if len(policies) < 2:
        raise ValueError(f"experiment {name}: an A/B test needs at least two arms, got {len(policies)}")
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ValueError(f"experiment {name}: arm names must be distinct, got {names}")
    unknown = sorted({p.model for p in policies} - set(scorers))
    if unknown:
        raise KeyError(f"experiment {name}: no scorer for model(s) {unknown}; have {sorted(scorers)}")
    control = names[0] if control is None else control
    t0 = time.perf_counter()
    rng = experiment_rng(seed, "traffic", name)
    salt = salt_of(seed, "arms", name)
    total = traffic.requests_per_arm * len(policies)
    parts: list[pl.DataFrame] = []
    done = 0
    by_model: dict[str, list[Policy]] = {}
    for p in policies:
        by_model.setdefault(p.model, []).append(p)
    while done < total:
        n = min(traffic.chunk_requests, total - done)
        frame = sample_traffic(world, n, names, rng, salt, start_request_id=start_request_id + done)
        for model, pols in by_model.items():
            rows = frame.filter(pl.col(ARM_COL).is_in([p.name for p in pols]))
            if rows.height == 0:
                continue
            scores = scorers[model].score(rows)
            arm_of_row = rows.get_column(ARM_COL).to_numpy()
            for p in pols:
                idx = np.flatnonzero(arm_of_row == p.name)
                if idx.size == 0:
                    continue
                sub = rows[idx]
                shown = respond(world, sub, p.ranking_scores(scores.take(idx)), traffic.k, rng)
                parts.append(user_totals(shown, types))
        done += n
    totals = merge_totals(parts)
    arms = {p.name: arm_metrics(totals, p.name, types, traffic.level) for p in policies}
    result = ExperimentResult(
        name=name,
        control=control,
        policies=list(policies),
        types=list(types),
        arms=arms,
        lifts=lifts(arms, control, traffic.level),
        traffic=traffic,
        seconds=time.perf_counter() - t0,
        users_by_arm={p.name: totals.filter(pl.col(ARM_COL) == p.name)["user_id"].to_numpy() for p in policies},
    )
    log.info("Experiment %s: %d arms, %d requests, %.1fs", name, len(policies), total, result.seconds)
    return result
