"""Evaluation in memory that does not grow with the rows: binned AUROC / PR-AUC with the fast update, the streaming
ECE, calibrators fitted on binned scores, the report from batches and the per-request ranking in hash buckets."""

import json
import math

import numpy as np
import polars as pl
import pytest
import torch
from torchmetrics.classification import (
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryCalibrationError,
)
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
)
from torchmetrics.functional.classification.precision_recall_curve import (
    _binary_precision_recall_curve_update,
)

from mtrank.calibration.calibrators import FIT_BINS, BinnedLabels
from mtrank.calibration.run_calibration import Calibration
from mtrank.metrics.binned import (
    BinnedAUROC,
    BinnedAveragePrecision,
    StreamingCalibrationError,
    binned_confmat,
    binned_thresholds,
)
from mtrank.metrics.calibration import TrueCalibration, ece_true, mae_true
from mtrank.metrics.heads import MultiHeadMetrics
from mtrank.scoring.figures import evaluate_frame, ranking_figures
from mtrank.scoring.report import write_report

TASKS = ["save", "click"]


def _scores(n: int, rate: float, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    p_true = torch.sigmoid(torch.randn(n, generator=g) * 1.5 + math.log(rate / (1 - rate)))
    y = (torch.rand(n, generator=g) < p_true).long()
    p = torch.sigmoid(torch.logit(p_true) + 0.3 * torch.randn(n, generator=g))
    return p, y, p_true


def test_binned_confmat_equals_torchmetrics_update():
    p, y, _ = _scores(4000, 0.2)
    p[:5] = torch.tensor([0.0, 1.0, 0.5, 0.25, 0.75])  # scores on thresholds and at the ends
    for thr in (torch.linspace(0, 1, 5), torch.linspace(0, 1, 101), binned_thresholds(500)):
        assert torch.equal(binned_confmat(p, y, thr), _binary_precision_recall_curve_update(p, y, thr))


def test_binned_metrics_equal_torchmetrics_binned():
    p, y, _ = _scores(5000, 0.05)
    thr = binned_thresholds(2000)
    ours = [BinnedAUROC(thr), BinnedAveragePrecision(thr)]
    ref = [BinaryAUROC(thresholds=thr), BinaryAveragePrecision(thresholds=thr)]
    for i in range(0, 5000, 1024):
        for m in ours + ref:
            m.update(p[i : i + 1024], y[i : i + 1024])
    for o, r in zip(ours, ref):
        assert o.compute().item() == pytest.approx(r.compute().item(), abs=1e-7)
    assert ours[0].counts.shape == (thr.numel() + 1, 2) and int(ours[0].counts.sum()) == 5000
    ours[0].reset()
    assert int(ours[0].counts.sum()) == 0


@pytest.mark.parametrize("rate", [0.001, 0.03, 0.4])
def test_default_grid_is_close_to_exact_for_rare_and_common_heads(rate):
    p, y, _ = _scores(200_000, rate, seed=1)
    thr = binned_thresholds(40_000)
    a, ap = BinnedAUROC(thr), BinnedAveragePrecision(thr)
    a.update(p, y)
    ap.update(p, y)
    assert a.compute().item() == pytest.approx(binary_auroc(p, y).item(), abs=1e-4)
    assert ap.compute().item() == pytest.approx(binary_average_precision(p, y).item(), abs=2e-4)


def test_binned_thresholds_sorted_in_unit_interval_and_dense_near_zero():
    t = binned_thresholds(1000)
    assert torch.all(t[1:] > t[:-1]) and t[0] >= 0 and t[-1] <= 1
    assert (t < 1e-3).sum() > 100  # the logit half resolves rare heads
    assert (t > 0.5).sum() > 250  # the linear half the high scores
    with pytest.raises(ValueError, match="model.metrics.thresholds"):
        binned_thresholds(1)
    for bad in (True, "many", [0.5, 2.0]):
        with pytest.raises(ValueError, match="model.metrics.thresholds"):
            MultiHeadMetrics(TASKS, "val", has_p_true=False, thresholds=bad)
    listed = MultiHeadMetrics(TASKS, "val", has_p_true=False, thresholds=[0.9, 0.1, 0.5])
    assert listed.heads["save"].metrics["auroc"].thresholds.tolist() == pytest.approx([0.1, 0.5, 0.9])


def test_streaming_ece_equals_torchmetrics():
    p, y, _ = _scores(3000, 0.3, seed=2)
    p[:3] = torch.tensor([0.0, 1.0, 1.0])  # p = 1 has a bin of its own in torchmetrics
    ours, ref = StreamingCalibrationError(n_bins=15), BinaryCalibrationError(n_bins=15, norm="l1")
    for i in range(0, 3000, 700):
        ours.update(p[i : i + 700], y[i : i + 700])
        ref.update(p[i : i + 700], y[i : i + 700])
    assert ours.compute().item() == pytest.approx(ref.compute().item(), abs=1e-6)


def test_binned_head_metrics_hold_no_growing_state():
    m = MultiHeadMetrics(TASKS, "val", has_p_true=True, thresholds=1000)
    p, y, pt = _scores(2000, 0.1)
    for _ in range(3):
        m.update(torch.stack([p, p], 1), torch.stack([y, y], 1).float(), torch.stack([pt, pt], 1))
    lists = [
        name
        for name, metric in m.named_modules()
        if hasattr(metric, "_defaults")
        for state, default in metric._defaults.items()
        if isinstance(default, list)
    ]
    assert lists == []
    out = m.compute()
    assert out["val/save/auroc"].item() == pytest.approx(binary_auroc(p, y).item(), abs=2e-3)


def test_true_calibration_streams_to_the_same_figures():
    rng = np.random.default_rng(0)
    p, q = rng.random(1000), rng.random(1000)
    acc = TrueCalibration(10)
    for i in range(0, 1000, 300):
        acc.update(p[i : i + 300], q[i : i + 300])
    assert acc.ece() == pytest.approx(ece_true(p, q, 10)) and acc.mae() == pytest.approx(mae_true(p, q))
    assert math.isnan(TrueCalibration().ece())


# --------------------------------------------------------------------------------------------- calibrators


@pytest.mark.parametrize("method", ["platt", "temperature", "isotonic"])
def test_binned_fit_matches_fit_on_rows(method):
    p, y, _ = _scores(50_000, 0.05, seed=3)
    p = (p * 0.6).numpy()  # miscalibrated
    y = y.numpy()
    rows = Calibration(tasks=["a"], betas={"a": 1.0}).fit(p[:, None], y[:, None], method)
    binned = Calibration(tasks=["a"], betas={"a": 1.0}).fit_binned({"a": BinnedLabels().update(p, y)}, method)
    a, b = binned.calibrate(p[:, None])[:, 0], rows.calibrate(p[:, None])[:, 0]
    if method == "isotonic":  # rows pooled within a cell: the steps move a little where rows are sparse
        assert np.abs(a - b).mean() < 5e-4 and abs(a.mean() - b.mean()) < 1e-4
    else:
        np.testing.assert_allclose(a, b, rtol=1e-4)


def test_binned_labels_counts_and_single_class():
    b = BinnedLabels(64).update([0.1, 0.1, 0.9, 1.0, 0.0], [1, 0, 1, 1, 0])
    assert b.rows == 5 and b.positives == 3 and b.count.size == 64
    p, y, w = b.points()
    assert w.sum() == 5 and set(y) == {0.0, 1.0}
    cal = Calibration(tasks=["a"], betas={"a": 1.0}).fit_binned(
        {"a": BinnedLabels().update([0.1, 0.2], [0, 0])}, "platt"
    )
    assert cal.calibrators["a"].method == "none"  # a single class: left uncalibrated
    assert FIT_BINS == 65536


# --------------------------------------------------------------------------------------------- the report


def _predictions(n_requests=400, per=10, seed=0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_requests * per
    cols = {
        "request_id": np.repeat(np.arange(n_requests), per).astype(np.int64),
        "item_id": np.arange(n, dtype=np.int64),
    }
    for t in TASKS:
        pt = rng.beta(1, 12, n).astype(np.float32)
        cols[f"label_{t}"] = (rng.random(n) < pt).astype(np.uint8)
        cols[f"p_raw_{t}"] = np.clip(pt * 3, 0, 1).astype(np.float32)
        cols[f"p_{t}"] = (pt * np.exp(rng.normal(0, 0.3, n))).clip(0, 1).astype(np.float32)  # no ties
        cols[f"p_true_{t}"] = pt
    df = pl.DataFrame(cols)
    order = ["request_id", "item_id"] + [f"{k}_{t}" for k in ("label", "p_raw", "p", "p_true") for t in TASKS]
    return df.select(order).with_columns([pl.col(f"label_{t}").cast(pl.UInt8) for t in TASKS])


def test_ranking_in_buckets_equals_one_pass(tmp_path):
    df = _predictions()
    one = ranking_figures(df, TASKS, [3, 5], split="test")
    for source in (df, tmp_path / "p.parquet"):
        if not isinstance(source, pl.DataFrame):
            df.write_parquet(source)
        many = ranking_figures(source, TASKS, [3, 5], split="test", chunk_rows=700)
        assert set(many) == set(one)
        for k in one:
            assert many[k] == pytest.approx(one[k], rel=1e-12), k
    assert "test/mean/oracle_map" in one and "test/click/n_requests_pos" in one
    with pytest.raises(ValueError, match="ranking_chunk_rows"):
        ranking_figures(df, TASKS, [3], chunk_rows=0)


def test_report_from_batches_equals_report_from_frame(tmp_path):
    df = _predictions()
    cal = Calibration(tasks=TASKS, betas={t: 0.3 for t in TASKS})
    report = {"ks": [5], "n_bins": 6, "ranking_chunk_rows": 1000}
    whole = write_report(df, TASKS, cal, tmp_path / "a", report, thresholds=5000)
    batches = (df.slice(i, 512) for i in range(0, df.height, 512))
    streamed = write_report(batches, TASKS, cal, tmp_path / "b", report, thresholds=5000, context={"rows": None})
    assert set(whole) == set(streamed)
    for k in whole:
        assert streamed[k] == pytest.approx(whole[k], rel=1e-6, abs=1e-9), k
    assert pl.read_parquet(tmp_path / "b" / "predictions.parquet").equals(df)
    summary = json.loads((tmp_path / "b" / "evaluation.json").read_text())
    assert summary["context"]["rows"] == df.height
    assert summary["reliability"] == json.loads((tmp_path / "a" / "evaluation.json").read_text())["reliability"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "evaluation.json",
        "evaluation.md",
        "predictions.parquet",
        "reliability.png",
    ]
    # the frame's figures are evaluate_frame's
    direct = evaluate_frame(df, TASKS, calibration=cal, ks=[5], thresholds=5000)
    assert direct["test/click/auroc"] == pytest.approx(whole["test/click/auroc"])


def test_report_without_predictions_file_leaves_nothing_behind(tmp_path):
    df = _predictions(50)
    cal = Calibration(tasks=TASKS, betas={t: 1.0 for t in TASKS})
    out = write_report(
        iter([df.head(200), df.slice(200)]), TASKS, cal, tmp_path, {"ks": [5], "write_predictions": False}
    )
    assert out["test/rows"] == df.height
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evaluation.json", "evaluation.md", "reliability.png"]
    unlabelled = df.select(["request_id", "item_id"] + [f"p_{t}" for t in TASKS] + [f"p_raw_{t}" for t in TASKS])
    assert write_report(iter([unlabelled]), TASKS, cal, tmp_path / "u", {"ks": [5]}) == {}
    assert [p.name for p in (tmp_path / "u").iterdir()] == ["predictions.parquet"]
