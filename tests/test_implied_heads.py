"""Conditional heads for implied engagement types (model.net.implied, mtrank.models.conditional)."""

import logging

import pytest
import torch
from torch.nn import functional as F

from helpers import make_batch, make_spec
from mtrank.models.conditional import implied_links, own_prior_logits, tie_logits
from mtrank.models.mmoe import MMoENet
from mtrank.models.networks import SharedBottomNet

HEADS = ("click", "long_click", "save")


def test_links_put_parents_before_children_whatever_the_map_order():
    assert implied_links(HEADS, {"save": "long_click", "long_click": "click"}) == [(1, 0), (2, 1)]
    assert implied_links(HEADS, {"long_click": "click", "save": "click"}) == [(1, 0), (2, 0)]
    assert implied_links(HEADS, None) == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"click": "long_click", "long_click": "click"}, r"model.net.implied: the implied heads form a cycle"),
        ({"click": "click"}, r"model.net.implied.click = 'click': a head cannot imply itself"),
        (["click"], r"model.net.implied = \['click'\]: expected a map"),
    ],
)
def test_bad_maps_name_the_key(bad, message):
    with pytest.raises(ValueError, match=message):
        implied_links(HEADS, bad)


def test_entries_naming_other_tasks_are_skipped_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        assert implied_links(("long_click",), {"long_click": "click"}) == []
    assert "model.net.implied" in caplog.text and "long_click: click" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the config check, which runs before the net is built, says nothing
        assert implied_links(("long_click",), {"long_click": "click"}, warn=False) == []
    assert caplog.text == ""


def test_conditional_form_multiplies_the_probabilities_down_a_chain():
    z = torch.randn(500, 3, dtype=torch.float64) * 4
    out = tie_logits(z, implied_links(HEADS, {"long_click": "click", "save": "long_click"}), "conditional")
    p = torch.sigmoid(z)
    torch.testing.assert_close(torch.sigmoid(out[:, 0]), p[:, 0])  # the root is untouched
    torch.testing.assert_close(torch.sigmoid(out[:, 1]), p[:, 0] * p[:, 1])
    torch.testing.assert_close(torch.sigmoid(out[:, 2]), p[:, 0] * p[:, 1] * p[:, 2])


def test_union_form_makes_the_parent_the_union_of_its_children_and_its_own_part():
    z = torch.randn(500, 3, dtype=torch.float64) * 4
    out = tie_logits(z, implied_links(HEADS, {"long_click": "click", "save": "click"}), "union")
    p = torch.sigmoid(z)
    torch.testing.assert_close(torch.sigmoid(out[:, 0]), 1 - (1 - p[:, 0]) * (1 - p[:, 1]) * (1 - p[:, 2]))
    torch.testing.assert_close(out[:, 1:], z[:, 1:])  # the children are untouched


@pytest.mark.parametrize("form", ["conditional", "union"])
def test_extreme_logits_stay_finite_with_finite_gradients(form):
    z = torch.tensor([[80.0, 80.0, 0.0], [-80.0, -80.0, 0.0], [80.0, -80.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    out = tie_logits(z, [(1, 0)], form)
    assert torch.isfinite(out).all()
    F.binary_cross_entropy_with_logits(out, torch.ones_like(out)).backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize("form", ["conditional", "union"])
def test_tied_heads_start_at_their_priors(form):
    prior = {"click": -0.2, "long_click": -0.8, "save": -3.0}
    spec = make_spec(tasks=HEADS)
    net = SharedBottomNet(
        spec,
        HEADS,
        embedding_dim=4,
        trunk=(8,),
        tower=(),
        implied={"long_click": "click"},
        implied_form=form,
        head_bias_init=prior,
    )
    with torch.no_grad():
        for tower in net.towers.values():
            tower.out.weight.zero_()  # logits = the towers' biases
    out = net.eval()(make_batch(spec))
    torch.testing.assert_close(out, torch.tensor([list(prior.values())]).expand_as(out), atol=1e-5, rtol=0)
    own = own_prior_logits(prior, HEADS, [(1, 0)], form)
    assert own["save"] == prior["save"] and (own["long_click"] != prior["long_click"]) == (form == "conditional")


@pytest.mark.parametrize(("form", "loss_head", "reached"), [("conditional", 1, "click"), ("union", 0, "long_click")])
def test_the_composite_heads_loss_trains_the_tower_it_is_tied_to(form, loss_head, reached):
    spec = make_spec(tasks=HEADS)
    b = make_batch(spec)
    grads = {}
    for implied in (None, {"long_click": "click"}):
        torch.manual_seed(0)
        net = MMoENet(
            spec, HEADS, embedding_dim=4, n_experts=2, expert=(8,), tower=(4,), implied=implied, implied_form=form
        )
        F.binary_cross_entropy_with_logits(net(b)[:, loss_head], b["labels"][:, loss_head]).backward()
        grads[implied is None] = net.towers[reached].out.weight.grad
    assert grads[True] is None or not grads[True].any()  # untied: one head's loss never reaches another's tower
    assert grads[False].abs().sum() > 0


def test_tied_outputs_respect_the_implication_on_every_row():
    spec = make_spec(tasks=HEADS)
    for form in ("conditional", "union"):
        torch.manual_seed(1)
        net = SharedBottomNet(
            spec, HEADS, embedding_dim=4, trunk=(8,), tower=(4,), implied={"long_click": "click"}, implied_form=form
        )
        p = torch.sigmoid(net.eval()(make_batch(spec, B=300)))
        assert (p[:, 1] <= p[:, 0] + 1e-6).all()
