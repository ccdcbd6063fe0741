"""What an A/B simulation leaves in its run folder: Markdown tables and plots (matplotlib Agg).

* :func:`table1_markdown` / :func:`plot_lifts`: the post's Table 1 — per engagement type, the control's and the
  treatment's propensity and volume and the treatment's relative lift with its 95 % interval;
* :func:`comparison_markdown`: hand-picked vs offline-BO vs online-BO weights on fresh traffic;
* :func:`online_bo_markdown` / :func:`plot_online_bo`: every round's arms and their lifts.

Writes are atomic (:func:`mtrank.tuning.report.atomic_write`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mtrank.online.experiment import ExperimentResult
from mtrank.online.stats import Lift
from mtrank.tuning.report import atomic_write

__all__ = [
    "fmt_lift",
    "table1_markdown",
    "lifts_markdown",
    "comparison_markdown",
    "online_bo_markdown",
    "plot_lifts",
    "plot_online_bo",
    "direction_sentence",
]


def _pct(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.{digits}f}%"


def fmt_lift(lf: Lift | Mapping[str, Any]) -> str:
    """``+2.31% [+0.85%, +3.79%]``, with ``*`` when the interval excludes 0."""
    d = lf.to_dict() if isinstance(lf, Lift) else lf
    star = " *" if d.get("significant") else ""
    return f"{_pct(d['value'])} [{_pct(d['low'])}, {_pct(d['high'])}]{star}"


def _rate(x: float) -> str:
    return f"{100 * x:.3f}%"


def table1_markdown(res: ExperimentResult, treatment: str, level: float = 0.95) -> str:
    c, t = res.arms[res.control], res.arms[treatment]
    pc = int(round(100 * level))
    lines = [
        f"| engagement | propensity control | propensity treatment | propensity lift ({pc}% CI) | volume control "
        f"| volume treatment | volume lift ({pc}% CI) | expected propensity lift ({pc}% CI) |",
        "|---|---:|---:|---|---:|---:|---|---|",
    ]
    for ty in res.types:
        lines.append(
            f"| {ty} | {_rate(c.metrics['propensity'][ty].value)} | {_rate(t.metrics['propensity'][ty].value)} "
            f"| {fmt_lift(res.lift(treatment, 'propensity', ty))} "
            f"| {c.metrics['volume'][ty].value:.4f} | {t.metrics['volume'][ty].value:.4f} "
            f"| {fmt_lift(res.lift(treatment, 'volume', ty))} "
            f"| {fmt_lift(res.lift(treatment, 'expected_propensity', ty))} |"
        )
    lines.append("")
    lines.append(
        f"control: {res.policies[0].describe()} — {c.users} users, {c.requests} requests, {c.impressions} impressions; "
        f"treatment: {next(p for p in res.policies if p.name == treatment).describe()} — {t.users} users, "
        f"{t.requests} requests, {t.impressions} impressions; top-{res.traffic.k} slots shown. Propensity = engaged "
        f"impressions / impressions, volume = engagements per user; lift = treatment / control − 1 with a "
        f"delta-method interval over users (`*`: the interval excludes 0). Expected: the same lift computed from "
        f"the true probabilities of the shown impressions (no label noise)."
    )
    return "\n".join(lines) + "\n"


def lifts_markdown(
    res: ExperimentResult, arms: Sequence[str], labels: Mapping[str, str], kinds: Sequence[str], level: float = 0.95
) -> str:
    """One row per (arm, kind): the lift of each type against the control with its interval."""
    pc = int(round(100 * level))
    lines = [
        "| arm (vs "
        + labels.get(res.control, res.control)
        + ") | metric | "
        + " | ".join(f"{t} ({pc}% CI)" for t in res.types)
        + " |",
        "|---|---|" + "---|" * len(res.types),
    ]
    for arm in arms:
        for kind in kinds:
            lines.append(
                f"| {labels.get(arm, arm)} | {kind.replace('_', ' ')} lift | "
                + " | ".join(fmt_lift(res.lift(arm, kind, t)) for t in res.types)
                + " |"
            )
    return "\n".join(lines) + "\n"


def direction_sentence(res: ExperimentResult, treatment: str) -> str:
    """Whether Table 1 reproduces the post's direction (every type up in propensity and volume)."""
    up, flat, down = [], [], []
    for ty in res.types:
        for kind in ("propensity", "volume"):
            lf = res.lift(treatment, kind, ty)
            (up if lf.low > 0 else down if lf.high < 0 else flat).append(f"{ty} {kind} ({fmt_lift(lf)})")
    if not flat and not down:
        return (
            "Reproduced: the multi-task model raised the propensity and the volume of every engagement type, "
            "each interval above 0, as in the post's Table 1."
        )
    parts = []
    if down:
        parts.append("significantly down: " + "; ".join(down))
    if flat:
        parts.append("not distinguishable from 0: " + "; ".join(flat))
    return "Not reproduced for every type: " + " | ".join(parts) + "."


def comparison_markdown(
    res: ExperimentResult,
    rows: Sequence[Mapping[str, Any]],
    kind: str,
    weight_tasks: Sequence[str],
    objective: str,
    level: float = 0.95,
) -> str:
    """``rows``: ``{"arm", "source", "weights", "offline": {task: f_t}, "offline_lift": {task: lift}}`` per arm."""
    pc = int(round(100 * level))
    head = (
        "| weights | "
        + " | ".join(f"w_{t}" for t in weight_tasks)
        + f" | offline f_{objective} (lift) | "
        + " | ".join(f"online {kind} lift {t} ({pc}% CI)" for t in res.types)
        + " |"
    )
    lines = [head, "|---|" + "---:|" * len(weight_tasks) + "---|" + "---|" * len(res.types)]
    for row in rows:
        arm = row["arm"]
        w = row.get("weights")
        wcells = " | ".join(f"{float(w[t]):.3f}" if w is not None else "—" for t in weight_tasks)
        off = row.get("offline") or {}
        off_l = row.get("offline_lift") or {}
        off_cell = f"{off[objective]:.4f} ({_pct(off_l.get(objective, math.nan))})" if objective in off else "—"
        if arm == res.control:
            cells = " | ".join("control" for _ in res.types)
        else:
            cells = " | ".join(fmt_lift(res.lift(arm, kind, t)) for t in res.types)
        lines.append(f"| {row['source']} | {wcells} | {off_cell} | {cells} |")
    return "\n".join(lines) + "\n"


def online_bo_markdown(
    rounds: Sequence[Mapping[str, Any]], types: Sequence[str], weight_tasks: Sequence[str], kind: str
) -> str:
    lines = [
        "| round | arm | generator | "
        + " | ".join(f"w_{t}" for t in weight_tasks)
        + " | "
        + " | ".join(f"{kind} lift {t}" for t in types)
        + " | feasible (observed) |",
        "|---|---|---|" + "---:|" * len(weight_tasks) + "---|" * len(types) + "---|",
    ]
    for r in rounds:
        for name, a in r["arms"].items():
            lines.append(
                f"| {r['round']} | {name} | {a['generator']} | "
                + " | ".join(f"{a['weights'][t]:.3f}" for t in weight_tasks)
                + " | "
                + " | ".join(fmt_lift(a["lifts"][t]) for t in types)
                + f" | {a['feasible_observed']} |"
            )
    return "\n".join(lines) + "\n"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    plt = _plt()
    out = atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip(".") or "png"))
    plt.close(fig)
    return out


def plot_lifts(
    res: ExperimentResult,
    arms: Sequence[str],
    kinds: Sequence[str],
    path: str | Path,
    title: str = "",
    labels: Mapping[str, str] | None = None,
) -> Path:
    """One panel per kind: the relative lift (%) of each arm per type with its interval, 0 dashed."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.6), squeeze=False, sharey=True)
    types = res.types
    width = 0.8 / max(1, len(arms))
    for ax, kind in zip(axes[0], kinds):
        for j, arm in enumerate(arms):
            xs = [i + (j - (len(arms) - 1) / 2) * width for i in range(len(types))]
            lf = [res.lift(arm, kind, t) for t in types]
            ys = [100 * x.value for x in lf]
            err = [[100 * (x.value - x.low) for x in lf], [100 * (x.high - x.value) for x in lf]]
            ax.bar(
                xs,
                ys,
                width=width * 0.9,
                yerr=err,
                capsize=3,
                color=f"C{j}",
                label=(labels or {}).get(arm, arm),
                alpha=0.85,
            )
        ax.axhline(0, color="k", lw=0.8, ls="--")
        ax.set_xticks(range(len(types)), types, rotation=20)
        ax.set_title(kind.replace("_", " "), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel(f"lift vs {(labels or {}).get(res.control, res.control)} (%)")
    axes[0, -1].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_online_bo(rounds: Sequence[Mapping[str, Any]], types: Sequence[str], path: str | Path, kind: str) -> Path:
    """Per type, every arm's lift (%) against its round's control with the interval, by trial order."""
    plt = _plt()
    fig, axes = plt.subplots(len(types), 1, figsize=(8, 2.2 * len(types) + 0.6), sharex=True, squeeze=False)
    for ax, t in zip(axes[:, 0], types):
        x = 0
        for r in rounds:
            for name, a in r["arms"].items():
                lf = a["lifts"][t]
                ax.errorbar(
                    [x],
                    [100 * lf["value"]],
                    yerr=[[100 * (lf["value"] - lf["low"])], [100 * (lf["high"] - lf["value"])]],
                    fmt="o",
                    color=f"C{r['round']}",
                    ms=4,
                    capsize=2,
                    label=f"round {r['round']}" if name == next(iter(r["arms"])) else None,
                )
                x += 1
        ax.axhline(0, color="k", lw=0.8, ls="--")
        ax.set_ylabel(f"{t} (%)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=max(1, len(rounds)), loc="best")
    axes[-1, 0].set_xlabel("arm (in the order Ax proposed them)")
    fig.suptitle(f"online BO: {kind} lift of each arm vs its round's control (hand-picked weights)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
