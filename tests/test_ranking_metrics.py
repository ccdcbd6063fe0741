"""NDCG@k and MAP per request against hand-computed values and torchmetrics' retrieval metrics."""

import math

import numpy as np
import polars as pl
import pytest
import torch

from mtrank.metrics.ranking import per_request_metrics, ranking_metrics
from mtrank.scoring.plots import reliability_table


def _hand_frame():
    return pl.DataFrame(
        {
            "request_id": [1, 1, 1, 1, 2, 2, 3, 3],
            "p_click": [0.9, 0.8, 0.7, 0.1, 0.5, 0.4, 0.2, 0.6],
            "label_click": [0, 1, 0, 1, 0, 0, 1, 0],
        }
    )


def test_ndcg_and_map_hand_computed():
    df = _hand_frame()
    per = per_request_metrics(df, "p_click", "label_click", ks=[3])
    # request 1, ranked labels 0,1,0,1: DCG@3 = 1/log2(3); IDCG@3 = 1 + 1/log2(3)
    # AP = (1/2)(1/2 + 2/4) = 1/2
    r1 = per.filter(pl.col("request_id") == 1).row(0, named=True)
    assert r1["ndcg@3"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert r1["ap"] == pytest.approx(0.5)
    # request 2 has no positive: no figure
    r2 = per.filter(pl.col("request_id") == 2).row(0, named=True)
    assert r2["ndcg@3"] is None and r2["ap"] is None and r2["n_pos"] == 0
    # request 3, ranked labels 0,1: NDCG = 1/log2(3), AP = 1/2
    r3 = per.filter(pl.col("request_id") == 3).row(0, named=True)
    assert r3["ndcg@3"] == pytest.approx(1 / math.log2(3))
    out = ranking_metrics(df, ["click"], ks=[1, 3], prefix="test")
    assert out["test/click/ndcg@3"] == pytest.approx((r1["ndcg@3"] + r3["ndcg@3"]) / 2)
    assert out["test/click/ndcg@1"] == 0.0  # both top candidates are negatives
    assert out["test/click/map"] == pytest.approx(0.5)
    assert out["test/click/n_requests_pos"] == 2
    assert out["test/mean/map"] == pytest.approx(0.5)


def test_perfect_ranking_scores_one():
    df = _hand_frame().with_columns(pl.col("label_click").cast(pl.Float64).alias("p_click"))
    out = ranking_metrics(df, ["click"], ks=[2, 10])
    assert out["click/ndcg@2"] == pytest.approx(1.0) and out["click/map"] == pytest.approx(1.0)


def test_ties_are_not_broken_by_row_order():
    """All scores equal: a tie-break by row order would always put the first row (a positive) on top."""
    n_req, k = 400, 5
    df = pl.DataFrame(
        {
            "request_id": np.repeat(np.arange(n_req), k),
            "p_click": np.full(n_req * k, 0.1),
            "label_click": np.tile([1, 0, 0, 0, 0], n_req),
        }
    )
    out = ranking_metrics(df, ["click"], ks=[1])
    assert 0.1 < out["click/ndcg@1"] < 0.3  # expected 1/5


def test_matches_torchmetrics_retrieval_metrics():
    from torchmetrics.retrieval import RetrievalMAP, RetrievalNormalizedDCG

    rng = np.random.default_rng(0)
    n_req, k = 300, 12
    rid = np.repeat(np.arange(n_req), k)
    score = rng.random(n_req * k)
    label = (rng.random(n_req * k) < 0.15 + 0.3 * score).astype(np.int64)
    df = pl.DataFrame({"request_id": rid, "p_click": score, "label_click": label})
    out = ranking_metrics(df, ["click"], ks=[5])
    idx, s, y = torch.as_tensor(rid), torch.as_tensor(score), torch.as_tensor(label)
    ndcg = RetrievalNormalizedDCG(top_k=5, empty_target_action="skip")(s, y, indexes=idx)
    mapk = RetrievalMAP(empty_target_action="skip")(s, y, indexes=idx)
    assert out["click/ndcg@5"] == pytest.approx(float(ndcg), abs=1e-6)
    assert out["click/map"] == pytest.approx(float(mapk), abs=1e-6)


def test_missing_column_is_named():
    with pytest.raises(KeyError, match="p_save"):
        ranking_metrics(_hand_frame(), ["save"])


def test_reliability_table_bins():
    rng = np.random.default_rng(1)
    p = rng.beta(1, 30, 50_000)
    y = (rng.random(p.size) < p).astype(float)
    q = reliability_table(p, y, n_bins=10, strategy="quantile")
    assert sum(q["count"]) == p.size and len(q["count"]) == 10
    assert max(q["count"]) - min(q["count"]) <= 1  # equal-count bins
    # calibrated by construction: each bin's fraction of positives is within its 95% interval of mean p (mostly)
    inside = [lo - 0.002 <= m <= hi + 0.002 for m, lo, hi in zip(q["mean_p"], q["lo"], q["hi"])]
    assert sum(inside) >= 8
    u = reliability_table(p, y, n_bins=10, strategy="uniform")
    assert sum(u["count"]) == p.size and u["count"][0] > u["count"][-1]
    with pytest.raises(ValueError, match="bins"):
        reliability_table(p, y, strategy="log")


def test_tied_scores_share_their_ranks_discount_as_torchmetrics_does():
    """NDCG's tie rule (mtrank.metrics.ranking): tied candidates get the mean discount of the ranks they span, the
    expected NDCG over their orders; the report and the utility objectives use the same function."""
    from torchmetrics.functional.retrieval import retrieval_normalized_dcg

    from mtrank.utility.objectives import ndcg_at_k

    rng = np.random.default_rng(4)
    n_req, k = 200, 10
    rid = np.repeat(np.arange(n_req), k)
    score = np.round(rng.random(n_req * k), 1)  # many ties
    label = (rng.random(n_req * k) < 0.1 + 0.3 * score).astype(np.int64)
    df = pl.DataFrame({"request_id": rid, "p_click": score, "label_click": label})
    out = ranking_metrics(df, ["click"], ks=[3])
    ref = [
        float(retrieval_normalized_dcg(torch.as_tensor(score[rid == r]), torch.as_tensor(label[rid == r]), top_k=3))
        for r in range(n_req)
        if label[rid == r].any()
    ]
    assert out["click/ndcg@3"] == pytest.approx(np.mean(ref), abs=1e-6)
    assert ndcg_at_k(rid, score, label, k=3) == pytest.approx(out["click/ndcg@3"], abs=1e-12)
    # independent of the row order
    perm = rng.permutation(n_req * k)
    assert ndcg_at_k(rid[perm], score[perm], label[perm], k=3) == pytest.approx(out["click/ndcg@3"], abs=1e-12)
    # hand case: a positive tied with two negatives at ranks 1-3 → NDCG@2 = (1 + 1/log2(3) + 0) / 3
    one = per_request_metrics(pl.DataFrame({"request_id": [0, 0, 0], "p": [0.5] * 3, "y": [0, 1, 0]}), "p", "y", ks=[2])
    assert one["ndcg@2"][0] == pytest.approx((1 + 1 / math.log2(3)) / 3)
