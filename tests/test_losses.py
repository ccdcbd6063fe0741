import math

import pytest
import torch

from mtrank.training.losses import (
    EqualWeighting,
    FixedWeighting,
    UncertaintyWeighting,
    bce_per_task,
    binary_importance_loss,
    binary_target,
    build_task_weighting,
    importance_weights,
    multitask_loss,
)

TASKS = ("save", "click", "long_click")


def py_bce(y, z):
    """BCE(y, sigmoid(z)) in plain Python."""
    p = 1.0 / (1.0 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


# A 4-row example: row 0 saved + long-clicked, row 1 nothing, row 2 clicked, row 3 all three.
LABELS = [[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1]]
IMP_W = [2.0, 1.5, 3.0]  # save, click, long_click
BIN_LOGITS = [0.5, -1.0, 2.0, 0.0]


def test_binary_target_and_importance_weights():
    labels = torch.tensor(LABELS, dtype=torch.float32)
    assert binary_target(labels).tolist() == [1.0, 0.0, 1.0, 1.0]
    w = torch.tensor(IMP_W)
    assert importance_weights(labels, w, "max").tolist() == [3.0, 1.0, 1.5, 3.0]
    assert importance_weights(labels, w, "sum").tolist() == [5.0, 1.0, 1.5, 6.5]
    # "max" must pick the highest weight even when it is not the last column
    assert importance_weights(torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([4.0, 0.5, 9.0]), "max").item() == 4.0
    with pytest.raises(ValueError, match="rule"):
        importance_weights(labels, w, "first")


def test_eq1_binary_loss_matches_hand_values():
    labels = torch.tensor(LABELS, dtype=torch.float32)
    w = torch.tensor(IMP_W)
    z = torch.tensor(BIN_LOGITS)
    b = [py_bce(1, 0.5), py_bce(0, -1.0), py_bce(1, 2.0), py_bce(1, 0.0)]
    hand_max = (3.0 * b[0] + 1.0 * b[1] + 1.5 * b[2] + 3.0 * b[3]) / 4
    hand_sum = (5.0 * b[0] + 1.0 * b[1] + 1.5 * b[2] + 6.5 * b[3]) / (2 + 1 + 1 + 3)
    assert binary_importance_loss(z, labels, w, "max").item() == pytest.approx(hand_max, rel=1e-6)
    assert binary_importance_loss(z[:, None], labels, w, "max").item() == pytest.approx(hand_max, rel=1e-6)
    assert binary_importance_loss(z, labels, w, "sum").item() == pytest.approx(hand_sum, rel=1e-6)
    assert hand_max != pytest.approx(hand_sum)


def test_sum_rule_equals_explicit_duplication():
    g = torch.Generator().manual_seed(0)
    B, T = 40, 4
    labels = (torch.rand(B, T, generator=g) < 0.35).float()
    logits = torch.randn(B, generator=g)
    w = torch.tensor([2.0, 1.0, 5.0, 0.5])
    # duplicate each engaged row once per engagement type, each copy carrying that single type
    dup_labels, dup_logits = [], []
    for i in range(B):
        types = [t for t in range(T) if labels[i, t] > 0.5]
        if not types:
            dup_labels.append([0.0] * T)
            dup_logits.append(logits[i].item())
        for t in types:
            row = [0.0] * T
            row[t] = 1.0
            dup_labels.append(row)
            dup_logits.append(logits[i].item())
    assert len(dup_labels) > B  # the example really has multi-engagement rows
    dup = binary_importance_loss(torch.tensor(dup_logits), torch.tensor(dup_labels), w, "max")
    direct = binary_importance_loss(logits, labels, w, "sum")
    torch.testing.assert_close(direct, dup)
    assert not torch.isclose(direct, binary_importance_loss(logits, labels, w, "max"))


def test_eq2_multitask_loss_matches_hand_values():
    logits = [[0.2, -1.0, 1.5], [-0.3, 0.8, -2.0], [1.1, 0.0, 0.4]]
    labels = [[1, 0, 1], [0, 1, 0], [0, 0, 1]]
    tw = [1.0, 0.5, 2.0]
    hand = sum(tw[t] * py_bce(labels[i][t], logits[i][t]) for i in range(3) for t in range(3)) / 3
    got = multitask_loss(torch.tensor(logits), torch.tensor(labels, dtype=torch.float32), torch.tensor(tw))
    assert got.item() == pytest.approx(hand, rel=1e-6)
    # Fixed weighting of the per-task means is the same quantity
    per_task = bce_per_task(torch.tensor(logits), torch.tensor(labels, dtype=torch.float32)).mean(0)
    assert FixedWeighting(tw)(per_task).item() == pytest.approx(hand, rel=1e-6)
    # equal weighting = plain sum of the per-task means
    hand_eq = sum(py_bce(labels[i][t], logits[i][t]) for i in range(3) for t in range(3)) / 3
    assert EqualWeighting(3)(per_task).item() == pytest.approx(hand_eq, rel=1e-6)


def test_bce_pos_weight():
    z = torch.tensor([[0.3, -0.7]])
    y = torch.tensor([[1.0, 1.0]])
    got = bce_per_task(z, y, pos_weight=torch.tensor([2.0, 1.0]))
    assert got[0, 0].item() == pytest.approx(2 * py_bce(1, 0.3), rel=1e-6)
    assert got[0, 1].item() == pytest.approx(py_bce(1, -0.7), rel=1e-6)


def test_uncertainty_forward_formulas():
    L = torch.tensor([0.5, 2.0])
    k = UncertaintyWeighting(2, "kendall", init=0.0)
    with torch.no_grad():
        k.log_var.copy_(torch.tensor([0.3, -0.2]))
    hand_k = math.exp(-0.3) * 0.5 + 0.3 + math.exp(0.2) * 2.0 - 0.2
    assert k(L).item() == pytest.approx(hand_k, rel=1e-6)
    li = UncertaintyWeighting(2, "liebel")
    with torch.no_grad():
        li.log_var.copy_(torch.tensor([0.3, -0.2]))
    v = [math.exp(0.3), math.exp(-0.2)]
    hand_l = 0.5 / (2 * v[0]) + math.log(1 + v[0]) + 2.0 / (2 * v[1]) + math.log(1 + v[1])
    assert li(L).item() == pytest.approx(hand_l, rel=1e-6)
    assert li.weights().tolist() == pytest.approx([1 / (2 * v[0]), 1 / (2 * v[1])], rel=1e-6)


# analytic optimum of sigma for the noisy task's loss L = 9 (noise std 3):
# kendall sigma^2 = L; liebel sigma^2 = (L + sqrt(L^2 + 8L)) / 4
@pytest.mark.parametrize("variant,sigma_noisy", [("kendall", 3.0), ("liebel", math.sqrt((9 + math.sqrt(153)) / 4))])
def test_uncertainty_weights_learn_noisier_task_gets_larger_sigma(variant, sigma_noisy):
    torch.manual_seed(0)
    theta = torch.nn.Parameter(torch.zeros(2))
    uw = UncertaintyWeighting(2, variant=variant)
    opt = torch.optim.Adam([theta, *uw.parameters()], lr=0.05)
    for _ in range(400):
        x = torch.randn(256)
        y1 = 2.0 * x + 0.1 * torch.randn(256)  # clean task
        y2 = -1.0 * x + 3.0 * torch.randn(256)  # very noisy task
        per_task = torch.stack([((theta[0] * x - y1) ** 2).mean(), ((theta[1] * x - y2) ** 2).mean()])
        opt.zero_grad()
        uw(per_task).backward()
        opt.step()
    sigma = uw.sigma()
    assert sigma[1] > 3 * sigma[0], sigma
    w = uw.weights()
    assert w[0] > 3 * w[1], w
    assert sigma[1].item() == pytest.approx(sigma_noisy, rel=0.15)
    assert theta[0].item() == pytest.approx(2.0, abs=0.1)


def test_build_task_weighting_kinds_and_errors():
    assert isinstance(build_task_weighting("equal", TASKS), EqualWeighting)
    u = build_task_weighting("uncertainty", TASKS, variant="liebel")
    assert isinstance(u, UncertaintyWeighting) and u.variant == "liebel"
    f = build_task_weighting("fixed", TASKS, {"click": 1.0, "long_click": 3.0, "save": 2.0})
    assert f.weights().tolist() == [2.0, 1.0, 3.0]  # follows task order, not mapping order
    with pytest.raises(ValueError, match=r"loss\.task_weighting.*equal.*fixed.*uncertainty"):
        build_task_weighting("learned", TASKS)
    with pytest.raises(ValueError, match=r"loss\.task_weights") as e:
        build_task_weighting("fixed", TASKS, {"save": 1.0, "click": 1.0, "hide": 1.0})
    assert "long_click" in str(e.value) and "hide" in str(e.value)
    with pytest.raises(ValueError, match=r"loss\.task_weights"):
        build_task_weighting("fixed", TASKS, None)
    with pytest.raises(ValueError, match="variant"):
        build_task_weighting("uncertainty", TASKS, variant="other")
