"""mtrank.utility.objectives: utility scores (Eq. 4), ranking within requests, PR-AUC and NDCG@k objectives (Eq. 5)."""

from __future__ import annotations

import math
import time

import numpy as np
import polars as pl
import pytest
import torch
from torchmetrics.functional.classification import binary_average_precision
from torchmetrics.functional.retrieval import retrieval_normalized_dcg

from mtrank.tuning.synthetic import simulated_predictions
from mtrank.utility.objectives import (
    UtilityEvaluator,
    average_precision,
    ndcg_at_k,
    rank_within_requests,
    read_predictions,
    utility_scores,
)

TASKS4 = ["save", "click", "long_click", "closeup"]


def test_utility_scores_weighted_sum_with_negative_weight():
    p = np.array([[0.1, 0.5, 0.2], [0.3, 0.0, 0.9]])
    u = utility_scores(p, [1.0, 2.0, -0.5])
    np.testing.assert_allclose(u, [0.1 + 1.0 - 0.1, 0.3 + 0.0 - 0.45])
    assert u.dtype == np.float64
    with pytest.raises(ValueError, match="weights"):
        utility_scores(p, [1.0, 2.0])


def test_rank_within_requests_hand_case():
    rid = np.array([7, 3, 7, 3, 7, 3])
    s = np.array([0.1, 0.9, 0.8, 0.2, 0.5, 0.5])
    # request 7: 0.8 → 0, 0.5 → 1, 0.1 → 2 ; request 3: 0.9 → 0, 0.5 → 1, 0.2 → 2
    np.testing.assert_array_equal(rank_within_requests(rid, s), [2, 0, 0, 2, 1, 1])


def test_average_precision_hand_cases():
    # no ties: positives at ranks 1 and 3 → (1/1 + 2/3) / 2
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])) == pytest.approx(5 / 6)
    # a tie of a positive and a negative is one threshold: recall 1/2 at precision 1/2, then 2/3
    assert average_precision(np.array([0.5, 0.5, 0.1]), np.array([1, 0, 1])) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    # perfect ranking → 1; no positive → nan
    assert average_precision(np.array([3.0, 2.0, 1.0]), np.array([1, 1, 0])) == pytest.approx(1.0)
    assert math.isnan(average_precision(np.array([3.0, 2.0]), np.array([0, 0])))
    # several labels at once
    out = average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([[1, 0], [0, 1], [1, 1], [0, 0]]))
    np.testing.assert_allclose(out, [5 / 6, (1 / 2 + 2 / 3) / 2])


def test_average_precision_matches_torchmetrics_with_ties():
    rng = np.random.default_rng(0)
    n = 20_000
    s = np.round(rng.random(n), 2)  # many ties
    y = (rng.random((n, 3)) < [0.02, 0.1, 0.4]).astype(np.uint8)
    ours = average_precision(s, y)
    ref = [
        float(binary_average_precision(torch.from_numpy(s), torch.from_numpy(y[:, j].astype(np.int64))))
        for j in range(3)
    ]
    np.testing.assert_allclose(ours, ref, rtol=1e-6)


def test_ndcg_at_k_matches_torchmetrics_per_request():
    rng = np.random.default_rng(1)
    n_req, k_items = 40, 8
    rid = np.repeat(rng.permutation(1000)[:n_req], k_items)
    perm = rng.permutation(n_req * k_items)  # requests not contiguous
    rid, s = rid[perm], rng.random(n_req * k_items)[perm]
    y = (rng.random(n_req * k_items) < 0.2).astype(np.uint8)
    vals = []
    for r in np.unique(rid):
        m = rid == r
        if y[m].sum() > 0:
            vals.append(
                float(
                    retrieval_normalized_dcg(torch.from_numpy(s[m]), torch.from_numpy(y[m].astype(np.int64)), top_k=3)
                )
            )
    assert ndcg_at_k(rid, s, y, k=3) == pytest.approx(np.mean(vals), rel=1e-6)  # torchmetrics: float32
    # hand case: one request, positive at rank 2 of 3 → (1/log2(3)) / 1
    assert ndcg_at_k(np.zeros(3), np.array([0.9, 0.5, 0.1]), np.array([0, 1, 0]), k=2) == pytest.approx(
        1 / math.log2(3)
    )
    assert ndcg_at_k(np.zeros(3), np.array([0.9, 0.5, 0.1]), np.array([0, 0, 1]), k=2) == 0.0


def test_evaluator_matches_functions_and_ranking_moves_with_weights():
    frame = simulated_predictions(20_000, noise=0.5, seed=3)
    ev = UtilityEvaluator.from_frame(frame, TASKS4, TASKS4)
    w = {"save": 0.1, "click": 0.2, "long_click": 0.6, "closeup": 0.1}
    got = ev.evaluate(w)
    u = sum(w[t] * frame[f"p_{t}"].to_numpy().astype(np.float64) for t in TASKS4)
    for t in TASKS4:
        assert got[t] == pytest.approx(average_precision(u, frame[f"label_{t}"].to_numpy()), rel=1e-12)
    only_long = ev.evaluate({"save": 0.0, "click": 0.0, "long_click": 1.0, "closeup": 0.0})
    only_save = ev.evaluate({"save": 1.0, "click": 0.0, "long_click": 0.0, "closeup": 0.0})
    assert only_long["long_click"] > only_save["long_click"]
    assert only_save["save"] > only_long["save"]
    ranks = ev.ranks(w)
    assert ranks.min() == 0 and ranks.max() == 19  # 20 candidates per simulated request
    with pytest.raises(KeyError, match="missing"):
        ev.evaluate({"save": 1.0})
    nd = UtilityEvaluator.from_frame(frame, TASKS4, ["long_click"], metric="ndcg@5").evaluate(w)
    assert set(nd) == {"long_click"} and 0 < nd["long_click"] < 1
    with pytest.raises(ValueError, match="ndcg@<k>"):
        UtilityEvaluator.from_frame(frame, TASKS4, TASKS4, metric="ndcg")


def test_all_objectives_for_a_million_predictions_well_under_a_second():
    rng = np.random.default_rng(0)
    n, tasks = 1_000_000, [f"t{i}" for i in range(6)]
    ev = UtilityEvaluator(
        {t: rng.random(n).astype(np.float32) for t in tasks},
        {t: (rng.random(n) < 0.03).astype(np.uint8) for t in tasks},
    )
    w = {t: 1.0 / 6 for t in tasks}
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        ev.evaluate(w)
        times.append(time.perf_counter() - t0)
    assert min(times) < 1.0, times


def test_read_predictions_names_file_and_column(tmp_path):
    path = tmp_path / "pred.parquet"
    frame = simulated_predictions(2_000, seed=0, tasks=TASKS4)
    frame.drop("p_save").write_parquet(path)
    with pytest.raises(KeyError, match=r"pred\.parquet.*p_save"):
        read_predictions(path, TASKS4, TASKS4)
    bad = tmp_path / "bad.parquet"
    frame.with_columns(pl.lit(2, dtype=pl.UInt8).alias("label_click")).write_parquet(bad)
    with pytest.raises(ValueError, match="label_click"):
        read_predictions(bad, TASKS4, TASKS4)
    with pytest.raises(FileNotFoundError, match="predictions="):
        read_predictions(tmp_path / "nope.parquet", TASKS4, TASKS4)
    ok = tmp_path / "ok.parquet"
    frame.write_parquet(ok)
    ev = UtilityEvaluator.from_parquet(ok, TASKS4, ["long_click"], prob_prefix="p_true_")
    assert ev.n == frame.height and set(ev.evaluate(dict.fromkeys(TASKS4, 0.25))) == {"long_click"}
