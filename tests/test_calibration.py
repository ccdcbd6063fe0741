"""The downsampling correction (Eq. 3), effective β_t from counts, and the post-hoc calibrators."""

import json

import numpy as np
import polars as pl
import pytest
import torch

from mtrank.calibration.calibrators import (
    IsotonicCalibrator,
    PlattCalibrator,
    TemperatureCalibrator,
    build_calibrator,
)
from mtrank.calibration.downsampling import (
    correct,
    correct_logits,
    downsampling_from_metadata,
    effective_beta,
    effective_betas,
)
from mtrank.calibration.run_calibration import Calibration
from mtrank.data.downsample import downsample
from mtrank.data.spec import LABEL_PREFIX
from mtrank.metrics.calibration import ece_true, mae_true

# --------------------------------------------------------------------------------------------- Eq. 3


def test_correction_beta_one_is_identity():
    p = np.linspace(0, 1, 101)
    np.testing.assert_allclose(correct(p, 1.0), p)
    t = torch.rand(50, 3)
    torch.testing.assert_close(correct(t, torch.ones(3)), t)


def test_correction_matches_closed_form_and_inverts_sampling():
    # p_s = 0.5 with β = 0.1: p = 0.05 / (0.05 − 0.5 + 1) = 1/11
    assert correct(0.5, 0.1) == pytest.approx(1 / 11)
    # the Bayes step it inverts: downsampling negatives at β turns p into p_s = p / (p + β (1 − p))
    p = np.array([1e-4, 0.01, 0.2, 0.5, 0.93])
    for beta in (0.05, 0.1, 0.5):
        p_s = p / (p + beta * (1 - p))
        np.testing.assert_allclose(correct(p_s, beta), p, rtol=1e-12)
    # per column β broadcasts, and the logit form agrees
    ps = torch.tensor([[0.2, 0.2], [0.7, 0.7]], dtype=torch.float64)
    betas = torch.tensor([0.1, 0.4], dtype=torch.float64)
    want = correct(ps, betas)
    np.testing.assert_allclose(want[:, 0].numpy(), correct(ps[:, 0].numpy(), 0.1))
    got = torch.sigmoid(correct_logits(torch.logit(ps), betas))
    torch.testing.assert_close(got, want)


def test_correction_is_monotone_and_lowers_scores():
    p = np.sort(np.random.default_rng(0).random(1000))
    for beta in (0.01, 0.1, 0.7):
        c = correct(p, beta)
        assert np.all(np.diff(c) >= 0)
        assert np.all(c <= p + 1e-15)


def test_correction_recovers_the_rate_of_a_downsampled_sample():
    """Monte Carlo: keep all positives and β of the negatives; the kept positive rate, corrected, is p again."""
    rng = np.random.default_rng(1)
    p, beta, n = 0.03, 0.1, 400_000
    y = rng.random(n) < p
    keep = y | (rng.random(n) < beta)
    p_s = y[keep].mean()
    assert p_s == pytest.approx(p / (p + beta * (1 - p)), rel=0.03)
    assert correct(p_s, beta) == pytest.approx(p, rel=0.03)


def test_correction_rejects_bad_beta():
    with pytest.raises(ValueError, match="keep rate"):
        correct(0.5, 0.0)
    with pytest.raises(ValueError, match="keep rate"):
        correct(0.5, 1.5)


# --------------------------------------------------------------------------------------------- effective β_t


def _labels_frame(rows):
    """rows: list of (save, click) label pairs."""
    arr = np.array(rows, dtype=np.uint8)
    return pl.DataFrame({LABEL_PREFIX + "save": arr[:, 0], LABEL_PREFIX + "click": arr[:, 1]})


def test_effective_beta_from_counts_hand_made():
    # 10 rows: 2 save only, 3 click only, 1 both, 4 unengaged.  With β→ the 4 unengaged all dropped or kept:
    rows = [(1, 0)] * 2 + [(0, 1)] * 3 + [(1, 1)] + [(0, 0)] * 4
    df = _labels_frame(rows)
    kept, counts = downsample(df, ["save", "click"], beta=1e-12, seed=0)  # drop every unengaged row
    assert kept.height == 6
    # save: negatives = 3 click-only + 4 unengaged = 7; kept negatives = the 3 click-only → β_save = 3/7
    # click: negatives = 2 save-only + 4 unengaged = 6; kept = 2 → β_click = 2/6
    betas = effective_betas(counts, ["save", "click"])
    assert betas == pytest.approx({"save": 3 / 7, "click": 2 / 6})
    assert counts["per_task"]["save"]["effective_beta"] == pytest.approx(3 / 7)
    # the formula on the counts: β_t = (|O_t| + β|U|) / (|O_t| + |U|)
    assert effective_beta(7, 3) == pytest.approx(3 / 7)
    assert effective_beta(0, 0) == 1.0
    _, all_kept = downsample(df, ["save", "click"], beta=1.0, seed=0)
    assert effective_betas(all_kept, ["save", "click"]) == {"save": 1.0, "click": 1.0}


def test_effective_betas_errors_name_the_task():
    with pytest.raises(KeyError, match="hide"):
        effective_betas({"per_task": {"save": {"negatives_before": 5, "negatives_after": 2}}}, ["save", "hide"])
    with pytest.raises(ValueError, match="save"):
        effective_betas(
            {"per_task": {"save": {"negatives_before": 5, "negatives_after": 2, "effective_beta": 0.9}}}, ["save"]
        )
    with pytest.raises(ValueError):
        effective_beta(3, 5)


def test_effective_beta_corrects_a_head_whose_negatives_hold_other_engagements():
    """Two independent tasks, unengaged rows kept at β: correcting head t with β_t gives back p_t, with β does not."""
    rng = np.random.default_rng(2)
    n, beta, p = 400_000, 0.1, {"save": 0.08, "click": 0.05}
    y = np.stack([rng.random(n) < p["save"], rng.random(n) < p["click"]], axis=1)
    df = _labels_frame(y.astype(np.uint8))
    kept, counts = downsample(df, ["save", "click"], beta=beta, seed=3)
    betas = effective_betas(counts, ["save", "click"])
    meta = {"tasks": ["save", "click"], "counts": counts}
    assert downsampling_from_metadata(meta)["effective_beta"] == betas
    for t in ("save", "click"):
        assert betas[t] > beta
        p_s = kept[LABEL_PREFIX + t].cast(pl.Float64).mean()
        assert correct(p_s, betas[t]) == pytest.approx(p[t], rel=0.04)
        assert abs(correct(p_s, beta) - p[t]) > 0.2 * p[t]  # the plain β is visibly wrong


# --------------------------------------------------------------------------------------------- calibrators


def _miscalibrated(n=60_000, seed=0, a=2.0, b=-0.7):
    """Scores p and labels drawn from σ(a·logit(p) + b): Platt with (a, b) is the truth."""
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-rng.normal(-2.5, 1.0, n)))
    z = a * np.log(p / (1 - p)) + b
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.float64)
    return p, y


def _ece(p, y, bins=15):
    return ece_true(p, y, bins)  # the binned |mean p − mean y| is the ECE when the truth is the label


def test_platt_and_temperature_recover_their_parameters():
    p, y = _miscalibrated()
    platt = PlattCalibrator().fit(p, y)
    assert platt.a == pytest.approx(2.0, abs=0.1) and platt.b == pytest.approx(-0.7, abs=0.2)
    p2, y2 = _miscalibrated(a=0.5, b=0.0, seed=1)
    temp = TemperatureCalibrator().fit(p2, y2)
    assert temp.temperature == pytest.approx(2.0, rel=0.1)


@pytest.mark.parametrize("method", ["temperature", "platt", "isotonic"])
def test_calibrators_lower_ece_and_are_monotone(method):
    p, y = _miscalibrated(seed=3)
    cal = build_calibrator(method).fit(p, y)
    q = cal.apply(p)
    assert _ece(q, y) < 0.5 * _ece(p, y)
    order = np.argsort(p)
    assert np.all(np.diff(q[order]) >= -1e-12)
    # tensors give the same as arrays
    torch.testing.assert_close(cal.apply(torch.as_tensor(p[:100])), torch.as_tensor(q[:100]))


def test_isotonic_interpolates_and_clips():
    iso = IsotonicCalibrator(x=[0.1, 0.3], y=[0.0, 0.5])
    np.testing.assert_allclose(iso.apply(np.array([0.0, 0.1, 0.2, 0.3, 0.9])), [0.0, 0.0, 0.25, 0.5, 0.5])


@pytest.mark.parametrize("method", ["none", "temperature", "platt", "isotonic"])
def test_calibration_save_load_round_trip(method, tmp_path):
    rng = np.random.default_rng(4)
    tasks = ["save", "click"]
    p_raw = rng.random((5_000, 2)) * 0.4
    cal = Calibration(tasks=tasks, betas={"save": 0.17, "click": 0.15})
    corrected = cal.correct(p_raw)
    labels = (rng.random((5_000, 2)) < corrected * 1.3).astype(np.float64)
    cal.fit(corrected, labels, method)
    path = cal.save(tmp_path)
    assert path.name == "calibration.json"
    text = path.read_text()
    json.loads(text)  # plain JSON
    loaded = Calibration.load(tmp_path)
    assert loaded.method == method and loaded.betas == cal.betas
    np.testing.assert_allclose(loaded.apply(p_raw), cal.apply(p_raw))
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temp file


def test_calibration_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "calibration.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="calibration.json"):
        Calibration.load(bad)
    bad.write_text(
        json.dumps(
            {"format_version": 1, "tasks": ["a"], "betas": {"a": 0.5}, "calibrators": {"a": {"method": "pickle"}}}
        )
    )
    with pytest.raises(ValueError, match="pickle"):
        Calibration.load(bad)
    with pytest.raises(FileNotFoundError):
        Calibration.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="calibration.method"):
        build_calibrator("spline")


def test_calibration_from_downsampling_binary_uses_beta_for_every_task():
    ds = {"beta": 0.1, "effective_beta": {"a": 0.2, "b": 0.3}}
    assert Calibration.from_downsampling(ds, ["a", "b"], "multitask").betas == {"a": 0.2, "b": 0.3}
    assert Calibration.from_downsampling(ds, ["a", "b"], "binary").betas == {"a": 0.1, "b": 0.1}


def test_ece_true_and_mae_true():
    p = np.array([0.1, 0.1, 0.9, 0.9])
    q = np.array([0.2, 0.0, 0.8, 0.8])
    assert mae_true(p, q) == pytest.approx(0.1)
    # bin of 0.1: mean p 0.1 vs mean p_true 0.1 → 0; bin of 0.9: 0.9 vs 0.8 → 0.1, weight 1/2
    assert ece_true(p, q, 10) == pytest.approx(0.05)


# --------------------------------------------------------------------------------------------- the model


def test_ranking_module_corrects_its_heads():
    from mtrank.data.spec import CategoricalFeature, FeatureSpec
    from mtrank.training.module import RankingModule

    spec = FeatureSpec(categorical=(CategoricalFeature("c", 5),), numeric=("n",), tasks=("save", "click"))
    net = {"_target_": "mtrank.models.networks.SharedBottomNet", "embedding_dim": 4, "trunk": [8], "tower": [4]}
    ds = {"beta": 0.1, "effective_beta": {"save": 0.2, "click": 0.25}}
    model = RankingModule(spec, net, {"objective": "multitask"}, {"_target_": "torch.optim.Adam"}, downsampling=ds)
    logits = torch.randn(6, 2)
    raw = model.task_probabilities(logits)
    torch.testing.assert_close(model.calibrated_probabilities(logits), correct(raw, torch.tensor([0.2, 0.25])))
    assert model.hparams.downsampling == ds
    with pytest.raises(ValueError, match="another run"):
        model.set_calibration(Calibration(tasks=["save", "click"], betas={"save": 0.5, "click": 0.25}))
    cal = Calibration(tasks=["save", "click"], betas={"save": 0.2, "click": 0.25})
    cal.calibrators["save"] = PlattCalibrator(a=1.0, b=1.0)
    model.set_calibration(cal)
    got = model.calibrated_probabilities(logits)
    assert torch.all(got[:, 0] > correct(raw[:, 0], 0.2)) and torch.allclose(got[:, 1], correct(raw[:, 1], 0.25))
    binary = RankingModule(
        spec,
        net,
        {"objective": "binary", "importance_weights": {"save": 1, "click": 2}},
        {"_target_": "torch.optim.Adam"},
        downsampling=ds,
    )
    one = torch.randn(6, 1)
    torch.testing.assert_close(binary.calibrated_probabilities(one), correct(torch.sigmoid(one), 0.1).expand(-1, 2))
    # no downsampling recorded: identity
    plain = RankingModule(spec, net, {"objective": "multitask"}, {"_target_": "torch.optim.Adam"})
    torch.testing.assert_close(plain.calibrated_probabilities(logits), plain.task_probabilities(logits))


def test_reweight_mode_weights_unengaged_rows_and_needs_no_correction():
    from mtrank.data.spec import CategoricalFeature, FeatureSpec
    from mtrank.training.losses import bce_per_task
    from mtrank.training.module import RankingModule

    spec = FeatureSpec(categorical=(CategoricalFeature("c", 5),), numeric=("n",), tasks=("save", "click"))
    net = {"_target_": "mtrank.models.networks.SharedBottomNet", "embedding_dim": 4, "trunk": [8], "tower": [4]}
    ds = {"beta": 0.25, "effective_beta": {"save": 0.4, "click": 0.3}, "mode": "reweight"}
    model = RankingModule(spec, net, {"objective": "multitask"}, {"_target_": "torch.optim.Adam"}, downsampling=ds)
    labels = torch.tensor([[0, 0], [1, 0], [0, 1], [0, 0]], dtype=torch.float32)
    w = model.training_row_weights(labels)
    torch.testing.assert_close(w, torch.tensor([4.0, 1.0, 1.0, 4.0]))
    logits = torch.randn(4, 2)
    _, per_task = model.compute_loss(logits, labels, w)
    want = (bce_per_task(logits, labels) * w[:, None]).sum(0) / w.sum()
    torch.testing.assert_close(per_task, want)
    torch.testing.assert_close(model.calibrated_probabilities(logits), model.task_probabilities(logits))
    assert model.calibration.betas == {"save": 1.0, "click": 1.0}
    with pytest.raises(ValueError, match="multitask"):
        RankingModule(
            spec,
            net,
            {"objective": "binary", "importance_weights": {"save": 1, "click": 2}},
            {"_target_": "torch.optim.Adam"},
            downsampling=ds,
        )
    with pytest.raises(ValueError, match="reweight"):
        downsampling_from_metadata({"tasks": ["save"], "counts": {}}, mode="resample")
