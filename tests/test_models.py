import math
from functools import partial

import pytest
import torch

import helpers
from helpers import make_batch
from mtrank.models.layers import MLP, FeatureLayer
from mtrank.models.networks import SharedBottomNet

TASKS = ("save", "click", "long_click", "closeup")


make_spec = partial(helpers.make_spec, tasks=TASKS)


def test_mlp_shapes_and_identity():
    m = MLP(10, [8, 4], dropout=0.1, norm="layernorm")
    assert m.out_dim == 4
    assert m(torch.randn(3, 10)).shape == (3, 4)
    assert any(isinstance(x, torch.nn.LayerNorm) for x in m.modules())
    mb = MLP(10, [6], norm="batchnorm", activation="gelu")
    assert any(isinstance(x, torch.nn.BatchNorm1d) for x in mb.modules())
    ident = MLP(10, [])
    assert ident.out_dim == 10
    x = torch.randn(2, 10)
    assert torch.equal(ident(x), x)
    with pytest.raises(ValueError, match="activation"):
        MLP(3, [2], activation="nope")


@pytest.mark.parametrize(
    "n_cat,n_num,proj,interaction",
    [
        (3, 2, True, "dot"),
        (3, 2, False, "dot"),
        (3, 0, True, "dot"),
        (0, 4, True, "dot"),
        (0, 4, False, "dot"),
        (4, 2, True, "none"),
        (1, 0, True, "dot"),
    ],
)
def test_feature_layer_out_dim(n_cat, n_num, proj, interaction):
    d = 8
    spec = make_spec(n_cat, n_num)
    fl = FeatureLayer(spec, embedding_dim=d, interaction=interaction, numeric_projection=proj)
    k = n_cat + (1 if (proj and n_num > 0) else 0)
    n_dots = k * (k - 1) // 2 if interaction == "dot" else 0
    expected = k * d + n_num + n_dots
    assert fl.out_dim == expected
    out = fl(make_batch(spec))
    assert out.shape == (7, expected)
    assert torch.isfinite(out).all()


def test_feature_layer_dot_values():
    """The interaction part is the upper triangle (no diagonal) of the Gram matrix of the vectors."""
    spec = make_spec(3, 0)
    fl = FeatureLayer(spec, embedding_dim=4, interaction="dot")
    batch = make_batch(spec, B=2)
    out = fl(batch)
    e = [fl.embeddings[j](batch["categorical"][:, j]) for j in range(3)]
    expected_dots = torch.stack([(e[0] * e[1]).sum(1), (e[0] * e[2]).sum(1), (e[1] * e[2]).sum(1)], dim=1)
    torch.testing.assert_close(out[:, -3:], expected_dots)
    torch.testing.assert_close(out[:, :12], torch.cat(e, dim=1))


def test_feature_layer_needs_features():
    with pytest.raises(ValueError):
        FeatureLayer(make_spec(0, 0))


@pytest.mark.parametrize(
    "n_cat,n_num,heads",
    [(3, 2, TASKS), (3, 0, TASKS), (0, 3, TASKS), (2, 2, ("engagement",))],
)
def test_shared_bottom_shapes(n_cat, n_num, heads):
    spec = make_spec(n_cat, n_num)
    net = SharedBottomNet(spec, heads, embedding_dim=4, trunk=(16, 8), tower=(4,), dropout=0.1, norm="layernorm")
    assert net.heads == tuple(heads)
    assert list(net.towers.keys()) == list(heads)
    out = net(make_batch(spec, B=5))
    assert out.shape == (5, len(heads))
    # the separable steps compose to forward
    net.eval()
    b = make_batch(spec, B=5)
    feats = net.forward_features(b)
    torch.testing.assert_close(net.forward_heads(net.head_inputs(feats)), net(b))


def test_gradients_reach_every_embedding():
    spec = make_spec(4, 2)
    net = SharedBottomNet(spec, TASKS, embedding_dim=4, trunk=(16,), tower=(8,))
    b = make_batch(spec, B=32)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(net(b), b["labels"])
    loss.backward()
    for j, emb in enumerate(net.feature_layer.embeddings):
        assert emb.weight.grad is not None, j
        used = b["categorical"][:, j].unique()
        assert emb.weight.grad[used].abs().sum(dim=1).gt(0).all(), j
    assert net.feature_layer.numeric_proj.weight.grad.abs().sum() > 0
    for h in TASKS:
        assert net.towers[h].out.weight.grad.abs().sum() > 0, h


def test_head_bias_init():
    spec = make_spec(2, 1)
    net = SharedBottomNet(spec, TASKS, trunk=(8,), tower=(4,), head_bias_init=-3.0)
    for h in TASKS:
        assert net.towers[h].out.bias.item() == pytest.approx(-3.0)
    prior = {"save": math.log(0.05 / 0.95), "click": -1.0}
    net = SharedBottomNet(spec, TASKS, trunk=(8,), tower=(4,), head_bias_init=prior)
    assert net.towers["save"].out.bias.item() == pytest.approx(prior["save"])
    assert net.towers["click"].out.bias.item() == pytest.approx(-1.0)
    # with zero tower weights the logit is exactly the bias
    with torch.no_grad():
        for h in TASKS:
            net.towers[h].out.weight.zero_()
    out = net(make_batch(spec, B=3))
    torch.testing.assert_close(out[:, 0], torch.full((3,), prior["save"]))
    with pytest.raises(ValueError, match="unknown heads"):
        SharedBottomNet(spec, TASKS, head_bias_init={"nope": -1.0})
