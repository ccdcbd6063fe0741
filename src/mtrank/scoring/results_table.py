"""Collect per-run test metrics into one long table and render mean ± spread over seeds as Markdown.

A run is described by a :class:`RunResult` (data set, model, seed, and its ``metrics.json`` figures);
:func:`long_table` turns runs into rows ``(dataset, model, seed, task, metric, value)`` and
:func:`markdown_tables` renders, per data set and metric, one row per task and one column per model with
``mean ± sd`` over seeds (sample standard deviation; a single run shows its value alone).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

__all__ = ["RunResult", "long_table", "summary", "markdown_tables"]


@dataclass(frozen=True)
class RunResult:
    dataset: str
    model: str  # e.g. "single-task", "shared bottom", "MMoE", "logistic", "popularity"
    seed: int
    metrics: Mapping[str, float]  # "test/<task>/<metric>" -> value (other keys are ignored)
    tasks: Sequence[str] | None = None  # keep only these tasks (None: every task in metrics)
    extra: Mapping[str, str] = field(default_factory=dict)


def long_table(
    runs: Iterable[RunResult], stage: str = "test", metric_names: Sequence[str] = ("auroc", "pr_auc", "n_pos")
) -> pl.DataFrame:
    rows = []
    for r in runs:
        for key, value in r.metrics.items():
            parts = key.split("/")
            if len(parts) != 3 or parts[0] != stage or parts[1] == "mean" or parts[2] not in metric_names:
                continue
            if r.tasks is not None and parts[1] not in r.tasks:
                continue
            rows.append(
                {
                    "dataset": r.dataset,
                    "model": r.model,
                    "seed": r.seed,
                    "task": parts[1],
                    "metric": parts[2],
                    "value": float(value),
                }
            )
    schema = {
        "dataset": pl.String,
        "model": pl.String,
        "seed": pl.Int64,
        "task": pl.String,
        "metric": pl.String,
        "value": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


def summary(table: pl.DataFrame) -> pl.DataFrame:
    """Mean, sample standard deviation and number of seeds per (dataset, model, task, metric)."""
    return table.group_by(["dataset", "model", "task", "metric"], maintain_order=True).agg(
        pl.col("value").mean().alias("mean"), pl.col("value").std().alias("sd"), pl.len().alias("runs")
    )


def _cell(mean: float | None, sd: float | None, digits: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if sd is None or (isinstance(sd, float) and math.isnan(sd)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown_tables(
    table: pl.DataFrame,
    models: Sequence[str],
    tasks: Mapping[str, Sequence[str]] | None = None,
    metrics: Sequence[str] = ("auroc", "pr_auc"),
    digits: int = 3,
    task_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[tuple[str, str], str]:
    """``{(dataset, metric): markdown}``: rows are tasks (with the test positives they rest on), columns models;
    the best mean of each row is in bold."""
    s = summary(table)
    out = {}
    for dataset in s["dataset"].unique(maintain_order=True).to_list():
        ds = s.filter(pl.col("dataset") == dataset)
        order = list(tasks[dataset]) if tasks and dataset in tasks else ds["task"].unique(maintain_order=True).to_list()
        present = [m for m in models if m in set(ds["model"].to_list())]
        npos = {r["task"]: r["mean"] for r in ds.filter(pl.col("metric") == "n_pos").iter_rows(named=True)}
        for metric in metrics:
            dm = ds.filter(pl.col("metric") == metric)
            cells = {(r["task"], r["model"]): (r["mean"], r["sd"]) for r in dm.iter_rows(named=True)}
            header = "| task | test positives | " + " | ".join(present) + " |"
            lines = [header, "|---|---:|" + "---:|" * len(present)]
            for task in order:
                means = [cells.get((task, m), (None, None))[0] for m in present]
                valid = [x for x in means if x is not None and not math.isnan(x)]
                best = max(valid) if valid else None
                row = []
                for m in present:
                    mean, sd = cells.get((task, m), (None, None))
                    text = _cell(mean, sd, digits)
                    if best is not None and mean is not None and round(mean, digits) == round(best, digits):
                        text = f"**{text}**"
                    row.append(text)
                label = (task_labels or {}).get(dataset, {}).get(task, task)
                n = npos.get(task)
                lines.append(f"| {label} | {'' if n is None else int(round(n))} | " + " | ".join(row) + " |")
            out[(dataset, metric)] = "\n".join(lines)
    return out
