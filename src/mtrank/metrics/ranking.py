"""Ranking quality per request: NDCG@k and MAP for binary labels; the one NDCG of the project.

For one request with candidates ranked by score (descending), binary labels ``y_1..y_n`` in that order and
``P = Σ y_i`` positives::

    DCG@k  = Σ_{i ≤ k} y_i / log2(i + 1)
    IDCG@k = Σ_{i ≤ min(P, k)} 1 / log2(i + 1)            (all positives on top)
    NDCG@k = DCG@k / IDCG@k
    AP     = (1 / P) Σ_{i : y_i = 1} precision@i,   precision@i = (Σ_{j ≤ i} y_j) / i

Figures are averaged over the requests with at least one positive (a request without any has no ideal
ranking; such requests are counted in ``n_requests`` but not averaged).

Ties in score (isotonic calibration makes many) are never broken by the row order of the log, which follows the
logged position and would flatter a model whose scores tie:

* NDCG@k: **tie-averaged**. Candidates whose scores tie in a request share the ranks ``a+1..a+m`` their block
  spans, and each gets the mean discount of those ranks (ranks beyond k discount 0). This is the exact expected
  NDCG over the orders of the tied candidates (McSherry & Najork 2008), the rule of scikit-learn's ``ndcg_score``
  and torchmetrics' ``retrieval_normalized_dcg``: deterministic, independent of row order and of any seed, and
  without ties equal to the usual NDCG. :func:`ndcg_per_request` (numpy) is the one implementation: the
  evaluation report (:func:`ranking_metrics`) and the utility objectives (:mod:`mtrank.utility.objectives`)
  both use it.
* AP: ties broken by a fixed pseudo-random order (``seed``).

torchmetrics' retrieval metrics compute the same numbers but took ~25 s for 50k requests × 100 candidates; this
takes well under a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl

__all__ = ["ranking_metrics", "per_request_metrics", "ndcg_per_request", "mean_ndcg", "tie_averaged_discounts"]

_R = "__rank"


def _idcg_table(max_pos: int) -> np.ndarray:
    """idcg[m] = Σ_{i=1..m} 1/log2(i+1), m = 0..max_pos."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, max_pos + 2)))])


def tie_averaged_discounts(request_index: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Per row, the NDCG@k discount of its rank within its request, tied scores averaged (module docstring).

    A row at 0-based rank r with no tie gets ``1/log2(r + 2)`` (0 when r ≥ k); a block of m tied rows starting at
    rank a gets ``(1/m) Σ_{r=a}^{a+m-1} disc(r)`` each. ``request_index``: any integer request key per row.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(request_index)
    if s.shape != g.shape or s.ndim != 1:
        raise ValueError(f"request ids and scores must be 1-d of the same length, got {g.shape} and {s.shape}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    n = len(s)
    order = np.lexsort((-s, g))  # by request, then decreasing score
    gs, ss = g[order], s[order]
    new_request = np.r_[True, gs[1:] != gs[:-1]]
    new_block = new_request | np.r_[True, ss[1:] != ss[:-1]]
    idx = np.arange(n)
    request_start = np.maximum.accumulate(np.where(new_request, idx, 0))
    block_start = np.maximum.accumulate(np.where(new_block, idx, 0))
    block_id = np.cumsum(new_block) - 1
    size = np.bincount(block_id)[block_id]
    first = block_start - request_start  # 0-based rank of the block's first row
    disc = np.r_[1.0 / np.log2(np.arange(k) + 2.0), 0.0]  # disc[k] = 0 for every rank ≥ k
    cum = np.r_[0.0, np.cumsum(disc[:k])]
    shared = (cum[np.minimum(first + size, k)] - cum[np.minimum(first, k)]) / size
    out = np.empty(n)
    out[order] = np.where(size == 1, disc[np.minimum(first, k)], shared)  # no tie: the discount itself
    return out


def ndcg_per_request(
    request_index: np.ndarray, n_requests: int, scores: np.ndarray, positives: Sequence[np.ndarray], k: int
) -> np.ndarray:
    """NDCG@k of every request for each label, ``[n_labels, n_requests]`` (nan where a request has no positive).

    ``request_index``: the dense request index of each row (``0..n_requests-1``); ``positives``: per label, the
    row indices of its positives (binary gains). Ties in score are averaged (module docstring).
    """
    g = np.asarray(request_index, dtype=np.int64)
    disc = tie_averaged_discounts(g, scores, k)
    ideal = _idcg_table(k)
    out = np.full((len(positives), int(n_requests)), np.nan)
    for j, rows in enumerate(positives):
        dcg = np.bincount(g[rows], weights=disc[rows], minlength=n_requests)
        n_pos = np.bincount(g[rows], minlength=n_requests)
        has = n_pos > 0
        out[j, has] = dcg[has] / ideal[np.minimum(n_pos[has], k)]
    return out


def mean_ndcg(
    request_index: np.ndarray, n_requests: int, scores: np.ndarray, positives: Sequence[np.ndarray], k: int
) -> np.ndarray:
    """Per label, NDCG@k (:func:`ndcg_per_request`) averaged over the requests with a positive (nan if none)."""
    per = ndcg_per_request(request_index, n_requests, scores, positives, k)
    out = np.full(len(positives), np.nan)
    for j in range(len(positives)):
        vals = per[j][~np.isnan(per[j])]
        if vals.size:
            out[j] = float(np.mean(vals))
    return out


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
    rows = lf.select(
        pl.col(request_col),
        pl.col(score).cast(pl.Float64).alias("__s"),
        y.alias("__y"),
        (pl.col(request_col).rank("dense") - 1).cast(pl.Int64).alias("__g"),
    ).collect()
    ranked = (
        rows.lazy()
        .drop("__g")
        .with_columns(pl.int_range(pl.len()).shuffle(seed=seed).alias("__tie"))
        .sort([request_col, "__s", "__tie"], descending=[False, True, False])
        .with_columns(
            (pl.int_range(pl.len()).over(request_col) + 1).alias(_R),
            pl.col("__y").cum_sum().over(request_col).alias("__cum"),
        )
    )
    aggs = [
        pl.len().alias("n"),
        pl.col("__y").sum().alias("n_pos"),
        (pl.col("__y") * pl.col("__cum") / pl.col(_R)).sum().alias("__ap_sum"),
    ]
    per = ranked.group_by(request_col).agg(aggs).sort(request_col).collect()
    n_pos = per["n_pos"].to_numpy()
    has = n_pos > 0
    out = [per[request_col], per["n"].cast(pl.Int64), per["n_pos"].cast(pl.Int64)]
    request_index, s = rows["__g"].to_numpy(), rows["__s"].to_numpy()
    positives = [np.flatnonzero(rows["__y"].to_numpy() != 0)]
    for k in ks:
        ndcg = ndcg_per_request(request_index, per.height, s, positives, k)[0]
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
        per = per_request_metrics(
            base, score_template.format(task=t), label_template.format(task=t), ks, request_col, seed
        )
        pos = per.filter(pl.col("n_pos") > 0)
        for k in ks:
            out[f"{head}{t}/ndcg@{k}"] = float(pos[f"ndcg@{k}"].mean()) if pos.height else float("nan")
        out[f"{head}{t}/map"] = float(pos["ap"].mean()) if pos.height else float("nan")
        out[f"{head}{t}/n_requests_pos"] = float(pos.height)
    for name in [f"ndcg@{k}" for k in ks] + ["map"]:
        vals = [out[f"{head}{t}/{name}"] for t in tasks]
        out[f"{head}mean/{name}"] = float(np.nanmean(vals)) if not all(np.isnan(vals)) else float("nan")
    return out
