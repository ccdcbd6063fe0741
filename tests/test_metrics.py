import logging
import math
import warnings

import pytest
import torch

from mtrank.metrics.heads import (
    HEAD_METRIC_NAMES,
    HeadMetrics,
    MultiHeadMetrics,
    compute_head_metrics,
)

TASKS = ("save", "click")


def small_case():
    # task 0 ("save"): hand-computable AUROC 0.75; task 1 ("click"): perfectly separated
    probs = torch.tensor([[0.1, 0.2], [0.4, 0.1], [0.35, 0.7], [0.8, 0.9]])
    labels = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    return probs, labels


def test_known_values():
    probs, labels = small_case()
    m = MultiHeadMetrics(TASKS, "val", has_p_true=False)
    m.update(probs, labels)
    out = m.compute()
    # save: positive pairs (0.35,0.1) ok, (0.35,0.4) wrong, (0.8,*) ok -> 3/4
    assert out["val/save/auroc"].item() == pytest.approx(0.75)
    # ranking 0.8(+) 0.4(-) 0.35(+) -> AP = 0.5*1 + 0.5*(2/3)
    assert out["val/save/pr_auc"].item() == pytest.approx(0.5 + 1 / 3)
    assert out["val/click/auroc"].item() == pytest.approx(1.0)
    assert out["val/click/pr_auc"].item() == pytest.approx(1.0)
    p = [0.1, 0.4, 0.35, 0.8]
    y = [0, 0, 1, 1]
    brier = sum((a - b) ** 2 for a, b in zip(p, y)) / 4
    logloss = -sum(b * math.log(a) + (1 - b) * math.log(1 - a) for a, b in zip(p, y)) / 4
    assert out["val/save/brier"].item() == pytest.approx(brier, rel=1e-5)
    assert out["val/save/logloss"].item() == pytest.approx(logloss, rel=1e-5)
    assert out["val/mean/auroc"].item() == pytest.approx((0.75 + 1.0) / 2)
    assert out["val/mean/pr_auc"].item() == pytest.approx((0.5 + 1 / 3 + 1.0) / 2)
    assert out["val/save/n_pos"].item() == 2
    assert out["val/click/n_pos"].item() == 2


def test_ece_simple_cases():
    h = HeadMetrics()
    h.update(torch.full((10,), 0.9), torch.zeros(10))
    h.update(torch.full((10,), 0.9), torch.zeros(10))
    assert h.compute()["ece"].item() == pytest.approx(0.9, rel=1e-5)
    h.reset()
    # predicted 0.3 and 30% positives in that bin -> calibrated
    h.update(torch.full((10,), 0.3), torch.tensor([1.0] * 3 + [0.0] * 7))
    assert h.compute()["ece"].item() == pytest.approx(0.0, abs=1e-6)


def test_keys_and_oracle_only_with_p_true():
    probs, labels = small_case()
    m = MultiHeadMetrics(TASKS, "test", has_p_true=False)
    m.update(probs, labels)
    keys = set(m.compute())
    expected = {f"test/{t}/{n}" for t in TASKS for n in HEAD_METRIC_NAMES} | {"test/mean/auroc", "test/mean/pr_auc"}
    assert keys == expected
    assert not any("oracle" in k for k in keys)

    mp = MultiHeadMetrics(TASKS, "test", has_p_true=True)
    p_true = torch.tensor([[0.2, 0.5], [0.1, 0.1], [0.9, 0.8], [0.7, 0.05]])  # click: oracle misranks row 3
    mp.update(probs, labels, p_true)
    out = mp.compute()
    assert set(out) == expected | {f"test/{t}/oracle_auroc" for t in TASKS}
    assert out["test/save/oracle_auroc"].item() == pytest.approx(1.0)
    # click: positives 0.8, 0.05; negatives 0.5, 0.1 -> pairs won: (0.8,0.5),(0.8,0.1) -> 2/4
    assert out["test/click/oracle_auroc"].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="p_true"):
        mp.update(probs, labels)


def test_accumulates_and_reset():
    probs, labels = small_case()
    m = MultiHeadMetrics(TASKS, "val", has_p_true=False)
    m.update(probs[:2], labels[:2])
    m.update(probs[2:], labels[2:])
    assert m.compute()["val/save/auroc"].item() == pytest.approx(0.75)
    assert m.compute()["val/save/n_pos"].item() == 2
    m.update(probs, labels)
    assert m.compute()["val/save/n_pos"].item() == 4
    m.reset()
    # after reset only the new batch counts: flip labels of save -> AUROC 0.25
    flipped = labels.clone()
    flipped[:, 0] = 1 - flipped[:, 0]
    m.update(probs, flipped)
    out = m.compute()
    assert out["val/save/auroc"].item() == pytest.approx(0.25)
    assert out["val/save/n_pos"].item() == 2


def test_single_class_head_is_nan_and_mean_skips_it():
    probs, labels = small_case()
    labels = labels.clone()
    labels[:, 1] = 0.0
    out = compute_head_metrics(probs, labels, TASKS, prefix="val")
    assert math.isnan(out["val/click/auroc"]) and math.isnan(out["val/click/pr_auc"])
    assert out["val/click/n_pos"] == 0
    assert out["val/mean/auroc"] == pytest.approx(0.75)
    assert not math.isnan(out["val/click/brier"])


def test_mean_over_heads_names_the_undefined_heads(caplog):
    """val/mean/auroc skips a head whose labels are all 1 (AUROC undefined) and says so, naming it, once."""
    probs, labels = small_case()
    labels = labels.clone()
    labels[:, 1] = 1.0
    m = MultiHeadMetrics(TASKS, "val", has_p_true=False)
    with caplog.at_level(logging.WARNING, logger="mtrank.metrics.heads"):
        m.update(probs, labels)
        out = m.compute()
        m.compute()
    assert math.isnan(float(out["val/click/auroc"]))
    assert float(out["val/mean/auroc"]) == pytest.approx(0.75)
    msgs = [r.getMessage() for r in caplog.records]
    assert (
        "val/mean/auroc averages 1 of 2 heads: auroc is undefined (NaN) for ['click'] (no positive or no "
        "negative label, or no row), so the mean is over ['save'] only"
    ) in msgs
    assert len([x for x in msgs if x.startswith("val/mean/auroc")]) == 1  # once, not every epoch


def test_metrics_json_holds_no_bare_nan(tmp_path, caplog):
    """metrics.json is valid JSON: an undefined figure is null, listed and named in a warning."""
    import json

    from mtrank.jobs.train import write_metrics_json

    def refuse(constant):
        raise ValueError(f"bare {constant} in metrics.json")

    with caplog.at_level(logging.WARNING, logger="mtrank.jobs.train"):
        path = write_metrics_json(
            tmp_path, "", {"val/save/auroc": 0.7, "val/click/auroc": float("nan"), "test/click/logloss": float("inf")}
        )
    data = json.loads(path.read_text(), parse_constant=refuse)
    assert data["metrics"] == {"val/save/auroc": 0.7, "val/click/auroc": None, "test/click/logloss": None}
    assert data["undefined_metrics"] == ["val/click/auroc", "test/click/logloss"]
    assert any("val/click/auroc" in r.getMessage() and "written as null" in r.getMessage() for r in caplog.records)


def test_child_metrics_registered():
    m = MultiHeadMetrics(TASKS, "val", has_p_true=True)
    names = {n for n, _ in m.named_modules()}
    assert "heads.save.metrics.auroc" in names
    assert "heads.click.metrics.oracle_auroc" in names


def test_functional_twin_equals_class():
    g = torch.Generator().manual_seed(1)
    N, T = 200, 2
    labels = (torch.rand(N, T, generator=g) < 0.3).float()
    probs = (0.3 * labels + 0.7 * torch.rand(N, T, generator=g)).clamp(0, 1)
    p_true = (0.5 * labels + 0.5 * torch.rand(N, T, generator=g)).clamp(0, 1)
    m = MultiHeadMetrics(TASKS, "val", has_p_true=True)
    for i in range(0, N, 64):
        m.update(probs[i : i + 64], labels[i : i + 64], p_true[i : i + 64])
    cls = {k: v.item() for k, v in m.compute().items()}
    fn = compute_head_metrics(probs, labels, TASKS, p_true=p_true, prefix="val")
    assert set(fn) == set(cls)
    for k in cls:
        assert fn[k] == pytest.approx(cls[k], rel=1e-5, abs=1e-7), k
    assert 0.5 < fn["val/save/auroc"] < 1.0
    no_prefix = compute_head_metrics(probs, labels, TASKS)
    assert no_prefix["save/auroc"] == pytest.approx(fn["val/save/auroc"])
    assert "save/oracle_auroc" not in no_prefix


# ------------------------------------------------------------------ our restatement of torchmetrics' binned figures


@pytest.mark.parametrize("rate", [0.0, 0.02, 0.3, 1.0])  # 0: no positive at all
def test_figures_from_binned_confmat_equal_torchmetrics_public_functions(rate):
    from torchmetrics.functional.classification import binary_auroc, binary_average_precision

    from mtrank.metrics.binned import (
        auroc_from_confmat,
        average_precision_from_confmat,
        binned_confmat,
        binned_thresholds,
    )

    g = torch.Generator().manual_seed(3)
    p = torch.rand(3000, generator=g)
    y = (torch.rand(3000, generator=g) < rate * (0.5 + p)).long()
    p[:4] = torch.tensor([0.0, 1.0, 0.5, 0.25])  # on thresholds and at the ends
    for thr in (torch.linspace(0, 1, 11), binned_thresholds(500)):
        cm = binned_confmat(p, y, thr)
        with warnings.catch_warnings():  # torchmetrics warns about a single class
            warnings.simplefilter("ignore")
            ref_auc = binary_auroc(p, y, thresholds=thr)
            ref_ap = binary_average_precision(p, y, thresholds=thr)
        assert auroc_from_confmat(cm).item() == pytest.approx(ref_auc.item(), abs=1e-6)
        assert average_precision_from_confmat(cm).item() == pytest.approx(ref_ap.item(), abs=1e-6)


def test_binary_input_checks_and_logits():
    from mtrank.metrics.binned import as_probabilities, check_binary_inputs

    check_binary_inputs(torch.tensor([0.1, 0.9]), torch.tensor([0, 1]))
    check_binary_inputs(torch.tensor([0.1, 0.9]), torch.tensor([0.0, 1.0]), float_target=True)
    with pytest.raises(RuntimeError, match="same shape"):
        check_binary_inputs(torch.tensor([0.1, 0.9]), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="`target`"):
        check_binary_inputs(torch.tensor([0.1, 0.9]), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="`preds`"):
        check_binary_inputs(torch.tensor([0, 1]), torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="values in `target`"):
        check_binary_inputs(torch.tensor([0.1, 0.9]), torch.tensor([0, 2]))
    probs = torch.tensor([[0.0, 0.5], [1.0, 0.25]])
    assert torch.equal(as_probabilities(probs), probs.flatten())  # probabilities as they are
    logits = torch.tensor([-2.0, 0.5, 3.0])
    assert torch.equal(as_probabilities(logits), logits.sigmoid())  # one score outside [0, 1]: all are logits
