"""What a tuning run leaves in its folder: the trial table, a per-trial plot, YAML/JSON summaries.

Every file is written atomically (temp file in the same folder, then rename).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from mtrank.tuning.ax_loop import AxLoop, TrialRecord
from mtrank.tuning.outcomes import OutcomeConstraint
from mtrank.utils.io import atomic_write, write_text_atomic

__all__ = [
    "write_text",
    "write_yaml",
    "write_json",
    "trial_table",
    "best_so_far",
    "trials_to_fraction",
    "plot_trials",
]


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_text_atomic(path, text)


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def write_yaml(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    return write_text(path, yaml.safe_dump(_plain(data), sort_keys=False))


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    return write_text(path, json.dumps(_plain(data), indent=2))


def trial_table(records: Sequence[TrialRecord]) -> pl.DataFrame:
    """One row per trial: index, arm, status, generator, feasibility, parameters, metrics, timings."""
    rows = [r.row() for r in records]
    if not rows:
        return pl.DataFrame()
    cols: list[str] = []
    for r in rows:
        cols.extend(k for k in r if k not in cols)
    return pl.DataFrame([{c: r.get(c) for c in cols} for r in rows], infer_schema_length=None)


def best_so_far(values: Sequence[float | None], feasible: Sequence[bool | None], minimize: bool = False) -> list[float]:
    """Running best of ``values`` counting feasible entries only (``nan`` until the first one)."""
    out, best = [], math.nan
    for v, f in zip(values, feasible):
        if f and v is not None and math.isfinite(v):
            if math.isnan(best) or (v < best if minimize else v > best):
                best = v
        out.append(best)
    return out


def trials_to_fraction(
    values: Sequence[float | None], feasible: Sequence[bool | None], target: float, fraction: float = 0.99
) -> int | None:
    """1-based number of trials until a feasible one reaches ``fraction · target`` (maximisation), else None."""
    goal = fraction * target
    for k, (v, f) in enumerate(zip(values, feasible), start=1):
        if f and v is not None and v >= goal:
            return k
    return None


def plot_trials(
    loop: AxLoop, path: str | os.PathLike, title: str = "", extra: Mapping[str, Sequence[TrialRecord]] | None = None
) -> Path:
    """Objective and each constrained metric per trial (matplotlib Agg): feasible trials filled, others hollow,
    the baseline as a star, the constraint thresholds as dashed lines, the best feasible so far as a step line.
    ``extra`` adds comparators (e.g. random search) to the objective panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in loop.records() if r.status == "COMPLETED"]
    base = loop.baseline_values()
    constrained: list[OutcomeConstraint] = loop.constraints
    metrics = [loop.objective] + [c.metric for c in constrained]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(8, 2.4 * len(metrics) + 0.6), sharex=True, squeeze=False)
    for ax, metric in zip(axes[:, 0], metrics):
        xs = [r.index for r in recs if not r.is_baseline and metric in r.metrics]
        ys = [r.metrics[metric] for r in recs if not r.is_baseline and metric in r.metrics]
        feas = [bool(r.feasible) for r in recs if not r.is_baseline and metric in r.metrics]
        ax.scatter(
            [x for x, f in zip(xs, feas) if f], [y for y, f in zip(ys, feas) if f], s=22, c="C0", label="feasible"
        )
        ax.scatter(
            [x for x, f in zip(xs, feas) if not f],
            [y for y, f in zip(ys, feas) if not f],
            s=22,
            facecolors="none",
            edgecolors="C0",
            label="infeasible",
        )
        if base is not None and metric in base:
            b = loop.baseline_index
            ax.scatter([b], [base[metric]], marker="*", s=120, c="C3", label="baseline", zorder=3)
        if metric == loop.objective:
            allr = [r for r in recs if metric in r.metrics]  # the baseline arm included: the bar to beat
            ax.step(
                [r.index for r in allr],
                best_so_far([r.metrics[metric] for r in allr], [bool(r.feasible) for r in allr], loop.minimize),
                where="post",
                c="C2",
                label="best feasible so far",
            )
            for k, (name, other) in enumerate((extra or {}).items()):
                ox = [r.index for r in other if r.status == "COMPLETED" and not r.is_baseline and metric in r.metrics]
                oy = [
                    r.metrics[metric]
                    for r in other
                    if r.status == "COMPLETED" and not r.is_baseline and metric in r.metrics
                ]
                of = [
                    bool(r.feasible)
                    for r in other
                    if r.status == "COMPLETED" and not r.is_baseline and metric in r.metrics
                ]
                ax.step(
                    ox,
                    best_so_far(oy, of, loop.minimize),
                    where="post",
                    c=f"C{4 + k}",
                    ls=":",
                    label=f"{name}: best so far",
                )
        for c in constrained:
            if c.metric == metric and (base is not None or not c.relative):
                ax.axhline(c.threshold((base or {}).get(metric)), ls="--", c="grey", lw=1, label=str(c))
        ax.set_ylabel(metric)
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("trial")
    axes[-1, 0].xaxis.get_major_locator().set_params(integer=True)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png"))
    plt.close(fig)
    return out
