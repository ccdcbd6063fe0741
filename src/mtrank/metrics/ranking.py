"""Ranking quality per request, vectorised with Polars: NDCG@k and MAP for binary labels.

For one request with candidates ranked by score (descending), binary labels ``y_1..y_n`` in that order and
``P = Σ y_i`` positives::

    DCG@k  = Σ_{i ≤ k} y_i / log2(i + 1)
    IDCG@k = Σ_{i ≤ min(P, k)} 1 / log2(i + 1)            (all positives on top)
    NDCG@k = DCG@k / IDCG@k
    AP     = (1 / P) Σ_{i : y_i = 1} precision@i,   precision@i = (Σ_{j ≤ i} y_j) / i

Figures are averaged over the requests with at least one positive (a request without any has no ideal
ranking; such requests are counted in ``n_requests`` but not averaged). Ties in score are broken by a fixed
pseudo-random order (seeded), never by the row order of the log, which follows the logged position and would
flatter a model whose scores tie (isotonic calibration makes ties). torchmetrics' retrieval metrics compute
the same numbers but took ~25 s for 50k requests × 100 candidates; this takes well under a second.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import polars as pl

__all__ = ["ranking_metrics", "per_request_metrics"]

_R = "__rank"


def _idcg_table(max_pos: int) -> np.ndarray:
    """idcg[m] = Σ_{i=1..m} 1/log2(i+1), m = 0..max_pos."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, max_pos + 2)))])


def per_request_metrics(
    df: pl.DataFrame | pl.LazyFrame,
    score: str,
    label: str,
    ks: Iterable[int] = (10,),
    request_col: str = "request_id",
    seed: int = 0,
) -> pl.DataFrame:
    """One row per request: ``request_id``, ``n``, ``n_pos``, ``ndcg@k`` for each k, ``ap``.

    ``ndcg@k`` and ``ap`` are null for requests without positives.
    """
    ks = sorted({int(k) for k in ks})
    if any(k < 1 for k in ks):
        raise ValueError(f"ks={ks}: every k must be ≥ 1")
    lf = df.lazy() if isinstance(df, pl.DataFrame) else df
    schema = lf.collect_schema()
    for c in (request_col, score, label):
        if c not in schema:
            raise KeyError(f"column '{c}' is not in the frame (columns: {list(schema)})")
    y = pl.col(label).cast(pl.Float64)
    ranked = (
        lf.select(pl.col(request_col), pl.col(score).cast(pl.Float64).alias("__s"), y.alias("__y"))
        .with_columns(pl.int_range(pl.len()).shuffle(seed=seed).alias("__tie"))
        .sort([request_col, "__s", "__tie"], descending=[False, True, False])
        .with_columns(
            (pl.int_range(pl.len()).over(request_col) + 1).alias(_R),
            pl.col("__y").cum_sum().over(request_col).alias("__cum"),
        )
        .with_columns((1.0 / (pl.col(_R).cast(pl.Float64) + 1.0).log(2)).alias("__disc"))
    )
    aggs = [pl.len().alias("n"), pl.col("__y").sum().alias("n_pos"),
            (pl.col("__y") * pl.col("__cum") / pl.col(_R)).sum().alias("__ap_sum")]
    aggs += [(pl.col("__y") * pl.col("__disc")).filter(pl.col(_R) <= k).sum().alias(f"__dcg@{k}") for k in ks]
    per = ranked.group_by(request_col).agg(aggs).sort(request_col).collect()
    n_pos = per["n_pos"].to_numpy()
    table = _idcg_table(int(max(ks)))
    has = n_pos > 0
    out = [per[request_col], per["n"].cast(pl.Int64), per["n_pos"].cast(pl.Int64)]
    for k in ks:
        idcg = table[np.minimum(n_pos, k).astype(np.int64)]
        ndcg = np.where(has, per[f"__dcg@{k}"].to_numpy() / np.where(has, idcg, 1.0), np.nan)
        out.append(pl.Series(f"ndcg@{k}", ndcg).fill_nan(None))
    ap = np.where(has, per["__ap_sum"].to_numpy() / np.where(has, n_pos, 1.0), np.nan)
    out.append(pl.Series("ap", ap).fill_nan(None))
    return pl.DataFrame(out)


def ranking_metrics(
    df: pl.DataFrame | pl.LazyFrame,
    tasks: Sequence[str],
    ks: Iterable[int] = (10,),
    score_template: str = "p_{task}",
    label_template: str = "label_{task}",
    request_col: str = "request_id",
    prefix: str = "",
    seed: int = 0,
) -> dict[str, float]:
    """Mean NDCG@k and MAP per task, ranking each request's candidates by the task's score.

    Keys ``"{prefix}/{task}/ndcg@{k}"``, ``"{prefix}/{task}/map"``, ``"{prefix}/{task}/n_requests_pos"`` (requests
    with a positive, those averaged) and ``"{prefix}/mean/ndcg@{k}"``, ``"{prefix}/mean/map"`` over tasks.
    """
    base = df.lazy() if isinstance(df, pl.DataFrame) else df
    head = f"{prefix}/" if prefix else ""
    out: dict[str, float] = {}
    ks = sorted({int(k) for k in ks})
    for t in tasks:
        per = per_request_metrics(base, score_template.format(task=t), label_template.format(task=t), ks,
                                  request_col, seed)
        pos = per.filter(pl.col("n_pos") > 0)
        for k in ks:
            out[f"{head}{t}/ndcg@{k}"] = float(pos[f"ndcg@{k}"].mean()) if pos.height else float("nan")
        out[f"{head}{t}/map"] = float(pos["ap"].mean()) if pos.height else float("nan")
        out[f"{head}{t}/n_requests_pos"] = float(pos.height)
    for name in [f"ndcg@{k}" for k in ks] + ["map"]:
        vals = [out[f"{head}{t}/{name}"] for t in tasks]
        out[f"{head}mean/{name}"] = float(np.nanmean(vals)) if not all(np.isnan(vals)) else float("nan")
    return out
