"""Assign rows to train / val / test: by time cut points, by request hash fractions, or by files."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from mtrank.data import reading
from mtrank.data.config import PipelineConfig
from mtrank.data.reading import TIME_COL
from mtrank.data.spec import (
    REQUEST_COL,
    ROW_INDEX,
)

SPLITS = ("train", "val", "test")


SPLIT_CODE = "__split"  # UInt8: the index in SPLITS


def split_code(split: str) -> pl.Expr:
    """The ``__split`` value of a split (its index in SPLITS, UInt8)."""
    return pl.lit(SPLITS.index(split), dtype=pl.UInt8)


def _uniform_from_hash(expr: pl.Expr, seed: int) -> pl.Expr:
    return (expr.hash(seed=seed) % 1_000_003).cast(pl.Float64) / 1_000_003.0


def uniform_hash(expr: pl.Expr, seed: int, salt: int) -> pl.Expr:
    """A uniform draw in [0, 1) (53 bits) per value of ``expr``; ``salt`` keeps draws for different purposes
    independent when they share a seed."""
    return (expr.hash(seed=seed).hash(seed=salt) // 2048).cast(pl.Float64) / 2.0**53


def _by_fraction(q: pl.Expr, v: float, t: float) -> pl.Expr:
    return (
        pl.when(q < 1.0 - v - t)
        .then(split_code("train"))
        .when(q < 1.0 - t)
        .then(split_code("val"))
        .otherwise(split_code("test"))
    )


def _by_cut_points(first: pl.Expr, cuts: Mapping[str, int]) -> pl.Expr:
    split = split_code("train")
    if "val" in cuts:
        split = pl.when(first >= cuts["val"]).then(split_code("val")).otherwise(split)
    if "test" in cuts:
        split = pl.when(first >= cuts["test"]).then(split_code("test")).otherwise(split)
    return split


def _fractions(cfg: PipelineConfig) -> tuple[float, float]:
    produced = cfg.produced_splits
    return (
        cfg.split.val_fraction if "val" in produced else 0.0,
        cfg.split.test_fraction if "test" in produced else 0.0,
    )


def _rank_cut(n: int, threshold: float) -> int:
    """How many ranks r in [0, n) have r / n < threshold (a prefix: r / n grows with r)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if mid / n < threshold:
            lo = mid + 1
        else:
            hi = mid
    return lo


def assign_splits(cfg: PipelineConfig, lf: pl.LazyFrame, cuts: Mapping[str, int] | None = None) -> pl.LazyFrame:
    """Add ``__split`` (the index in SPLITS of the split each row goes to, among ``cfg.produced_splits``); whole
    requests stay together. Time splits first collect one small row per request (its first impression's time).

    ``cuts``: the time cut points (``split.val_start`` / ``test_start`` on the ``__time`` scale), if configured.
    """
    produced = cfg.produced_splits
    if len(produced) == 1:
        return lf.with_columns(split_code(produced[0]).alias(SPLIT_CODE))
    v, t = _fractions(cfg)
    if cfg.split.by == "time":
        return _assign_by_time(cfg, lf, cuts or {}, v, t)
    if cfg.split.by == "request":
        q = _uniform_from_hash(pl.col(REQUEST_COL), cfg.split.seed)
    else:
        q = _uniform_from_hash(pl.col(ROW_INDEX), cfg.split.seed)
    return lf.with_columns(_by_fraction(q, v, t).alias(SPLIT_CODE))


def _assign_by_time(cfg: PipelineConfig, lf: pl.LazyFrame, cuts: Mapping[str, int], v: float, t: float) -> pl.LazyFrame:
    if cfg.columns.request_id:
        # one row per request: the time of its first impression, and from it the request's split
        firsts = lf.group_by(REQUEST_COL).agg(pl.col(TIME_COL).min().alias("__t")).collect(engine="streaming")
        if cuts:
            table = firsts.select(REQUEST_COL, _by_cut_points(pl.col("__t"), cuts).alias(SPLIT_CODE))
        else:
            q = pl.col("__rank").cast(pl.Float64) / pl.len().cast(pl.Float64)
            table = (
                firsts.sort(["__t", REQUEST_COL])
                .with_row_index("__rank")
                .select(REQUEST_COL, _by_fraction(q, v, t).alias(SPLIT_CODE))
            )
        return lf.join(table.lazy(), on=REQUEST_COL, how="left", maintain_order="left")
    # every impression is its own request
    if cuts:
        return lf.with_columns(_by_cut_points(pl.col(TIME_COL), cuts).alias(SPLIT_CODE))
    # ranks in (time, row) order: the first k_val rows are train, the next ones val up to k_test, the rest test;
    # found from the sorted (time, row) pairs, then applied as comparisons with the pairs at those ranks
    keys = lf.select(TIME_COL, ROW_INDEX).collect(engine="streaming").sort([TIME_COL, ROW_INDEX])
    n = keys.height

    def before(k: int) -> pl.Expr:
        if k >= n:
            return pl.lit(True)
        tk, rk = keys.row(k)
        return (pl.col(TIME_COL) < tk) | ((pl.col(TIME_COL) == tk) & (pl.col(ROW_INDEX) < rk))

    split = (
        pl.when(before(_rank_cut(n, 1.0 - v - t)))
        .then(split_code("train"))
        .when(before(_rank_cut(n, 1.0 - t)))
        .then(split_code("val"))
        .otherwise(split_code("test"))
    )
    return lf.with_columns(split.alias(SPLIT_CODE))


def cut_points(cfg: PipelineConfig, time_dtype) -> dict[str, int]:
    if not (cfg.split.by == "time" and cfg.split.cut_points):
        return {}
    cols = cfg.columns
    return {
        s: reading.cut_point(
            value, f"data.pipeline.split.{s}_start", cols.time, time_dtype, cols.time_unit, cols.time_zone
        )
        for s in ("val", "test")
        if s in cfg.produced_splits and (value := getattr(cfg.split, f"{s}_start")) is not None
    }
