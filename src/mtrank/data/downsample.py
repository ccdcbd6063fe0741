"""Negative downsampling at keep rate β by a seeded hash, with the counts Eq. 3 needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import polars as pl

from mtrank.data.spec import (
    LABEL_PREFIX,
    ROW_INDEX,
)
from mtrank.data.splits import uniform_hash

_DOWNSAMPLE_SALT = 0x6D7472616E6B2D64


def keep_expr(labels: Sequence[pl.Expr], beta: float, seed: int) -> tuple[pl.Expr, pl.Expr]:
    """(keep, engaged): a row is kept when it has an engagement of any task, or else with probability β, drawn
    from a hash of its row number (so the same rows are kept by every pass and every run)."""
    engaged = pl.any_horizontal([y > 0 for y in labels])
    return engaged | (uniform_hash(pl.col(ROW_INDEX), seed, _DOWNSAMPLE_SALT) < beta), engaged


def downsample_aggs(labels: Mapping[str, pl.Expr], keep: pl.Expr, engaged: pl.Expr) -> list[pl.Expr]:
    aggs = [
        pl.len().alias("ds:rows"),
        keep.sum().alias("ds:kept"),
        (~engaged).sum().alias("ds:unengaged"),
        (keep & ~engaged).sum().alias("ds:unengaged_kept"),
    ]
    for t, y in labels.items():
        aggs += [(y > 0).sum().alias(f"ds:pos:{t}"), ((y > 0) & keep).sum().alias(f"ds:pos_kept:{t}")]
    return aggs


def downsample_counts(row: Mapping[str, int], tasks: Sequence[str], beta: float) -> dict:
    rows, kept = int(row["ds:rows"]), int(row["ds:kept"])
    per_task = {}
    for t in tasks:
        pos, pos_after = int(row[f"ds:pos:{t}"]), int(row[f"ds:pos_kept:{t}"])
        neg_before, neg_after = rows - pos, kept - pos_after
        per_task[t] = {
            "positives_before": pos,
            "positives_after": pos_after,
            "negatives_before": neg_before,
            "negatives_after": neg_after,
            "effective_beta": neg_after / neg_before if neg_before else 1.0,
        }
    return {
        "beta": beta,
        "rows_before": rows,
        "rows_after": kept,
        "unengaged_before": int(row["ds:unengaged"]),
        "unengaged_after": int(row["ds:unengaged_kept"]),
        "per_task": per_task,
    }


def downsample(df: pl.DataFrame, tasks, beta: float, seed: int) -> tuple[pl.DataFrame, dict]:
    """Keep all impressions with an engagement of any task and a fraction β of the others.

    The rows kept are those the pipeline keeps: the draw hashes the ``__row`` column (the row number when ``df``
    has none). Returns the kept frame and the counts the calibration stage needs: rows and no-engagement rows
    before and after, and per task its positives and negatives before and after (a head's negatives also hold
    the kept rows engaged with other tasks, so its effective keep rate β_t = negatives_after / negatives_before).
    """
    lf = df.lazy() if ROW_INDEX in df.columns else df.lazy().with_row_index(ROW_INDEX)
    labels = {t: pl.col(LABEL_PREFIX + t) for t in tasks}
    keep, engaged = keep_expr(list(labels.values()), beta, seed)
    counts = downsample_counts(
        lf.select(downsample_aggs(labels, keep, engaged)).collect().row(0, named=True), tasks, beta
    )
    kept = lf.filter(keep)
    if ROW_INDEX not in df.columns:
        kept = kept.drop(ROW_INDEX)
    return kept.collect(), counts
