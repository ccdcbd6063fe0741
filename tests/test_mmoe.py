"""MMoE / PLE networks and the gate-statistics callback."""

import math
from functools import partial

import pytest
import pytorch_lightning as pl
import torch

import helpers
from helpers import make_batch
from mtrank.models.layers import SoftmaxGate
from mtrank.models.mmoe import ExpertMixtureNet, MMoENet, PLENet
from mtrank.models.networks import SharedBottomNet
from mtrank.training.callbacks import GateStatistics, summarise_gates
from mtrank.training.module import RankingModule, spec_to_dict

TASKS = ("save", "click", "long_click", "closeup", "hide", "checkout")


make_spec = partial(helpers.make_spec, tasks=TASKS)


def _no_grad(p):
    return p.grad is None or p.grad.abs().sum() == 0


def test_softmax_gate_rows_sum_to_one_and_validates():
    gate = SoftmaxGate(5, 3, temperature=0.5)
    w = gate(torch.randn(11, 5) * 10)
    assert w.shape == (11, 3)
    assert (w >= 0).all()
    torch.testing.assert_close(w.sum(dim=1), torch.ones(11))
    with pytest.raises(ValueError, match="expert"):
        SoftmaxGate(5, 0)
    with pytest.raises(ValueError, match="temperature"):
        SoftmaxGate(5, 2, temperature=0.0)


@pytest.mark.parametrize("n_experts,expert,tower", [(4, (16, 8), (6,)), (1, (12,), ()), (3, (10,), (5, 4))])
def test_mmoe_output_and_gate_shapes(n_experts, expert, tower):
    spec = make_spec()
    net = MMoENet(spec, TASKS, embedding_dim=4, n_experts=n_experts, expert=expert, tower=tower)
    b = make_batch(spec, B=9)
    out = net(b)
    assert out.shape == (9, len(TASKS))
    assert torch.isfinite(out).all()
    assert len(net.experts) == n_experts
    assert list(net.gates.keys()) == list(TASKS)
    gates = net.gate_weights(b)
    assert list(gates) == list(TASKS)
    for t, w in gates.items():
        assert w.shape == (9, n_experts), t
        assert (w >= 0).all()
        torch.testing.assert_close(w.sum(dim=1), torch.ones(9))
        assert net.gate_expert_names(t) == [f"expert_{i}" for i in range(n_experts)]
    inputs = net.head_inputs(net.forward_features(b))
    assert [x.shape for x in inputs] == [(9, expert[-1])] * len(TASKS)


def test_mmoe_mixture_is_the_gate_weighted_sum_of_experts():
    spec = make_spec()
    net = MMoENet(spec, TASKS, embedding_dim=4, n_experts=3, expert=(8,), tower=(4,)).eval()
    b = make_batch(spec, B=5)
    feats = net.forward_features(b)
    outs = torch.stack([e(feats) for e in net.experts], dim=1)  # [B, E, D]
    inputs = net.head_inputs(feats)
    for k, t in enumerate(TASKS):
        w = net.gates[t](feats)
        expected = sum(w[:, i : i + 1] * outs[:, i] for i in range(3))
        torch.testing.assert_close(inputs[k], expected)
    torch.testing.assert_close(net.forward_heads(inputs), net(b))


def test_gates_differ_per_task_and_route_per_row():
    spec = make_spec()
    net = MMoENet(spec, TASKS, embedding_dim=4, n_experts=4, expert=(8,))
    g = net.gate_weights(make_batch(spec, B=16))
    assert not torch.allclose(g["save"], g["hide"])  # one gate per task, not one shared gate
    assert not torch.allclose(g["save"][0], g["save"][1])  # the gate depends on the input row


def test_every_task_gradient_reaches_every_shared_expert():
    spec = make_spec()
    # tanh: no dead units, so a zero gradient can only mean a missing path
    net = MMoENet(spec, TASKS, embedding_dim=4, n_experts=3, expert=(8, 6), tower=(4,), activation="tanh")
    b = make_batch(spec, B=32)
    for k, t in enumerate(TASKS):
        net.zero_grad(set_to_none=True)
        net(b)[:, k].sum().backward()
        for i, expert in enumerate(net.experts):
            first = expert.net[0]
            assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0, (t, i)
        assert net.gates[t].proj.weight.grad.abs().sum() > 0, t
        # the other heads' gates and towers get nothing from task t's output
        for other in TASKS:
            if other != t:
                assert _no_grad(net.gates[other].proj.weight), (t, other)
                assert _no_grad(net.towers[other].out.weight), (t, other)


def test_ple_task_experts_are_private():
    spec = make_spec()
    net = PLENet(
        spec, TASKS, embedding_dim=4, n_experts=2, n_task_experts=1, expert=(8,), tower=(4,), activation="tanh"
    )
    assert len(net.experts) == 2 + len(TASKS)
    b = make_batch(spec, B=8)
    gates = net.gate_weights(b)
    for t in TASKS:
        assert gates[t].shape == (8, 3)
        torch.testing.assert_close(gates[t].sum(dim=1), torch.ones(8))
        assert net.gate_expert_names(t) == ["expert_0", "expert_1", "own_0"]
    k = TASKS.index("hide")
    net(b)[:, k].sum().backward()
    grads = [e.net[0].weight.grad for e in net.experts]
    assert grads[0].abs().sum() > 0 and grads[1].abs().sum() > 0  # shared experts
    own = 2 + k
    for i in range(2, len(net.experts)):
        if i == own:
            assert grads[i].abs().sum() > 0
        else:
            assert grads[i] is None or grads[i].abs().sum() == 0, i  # other heads' own experts: untouched


def test_mixture_config_errors():
    spec = make_spec()
    with pytest.raises(ValueError, match="n_experts"):
        MMoENet(spec, TASKS, n_experts=0)
    with pytest.raises(ValueError, match="expert"):
        MMoENet(spec, TASKS, expert=())
    with pytest.raises(ValueError, match="n_task_experts"):
        PLENet(spec, TASKS, n_task_experts=0)
    with pytest.raises(ValueError, match="experts"):
        ExpertMixtureNet(spec, TASKS, n_experts=0, n_task_experts=0)
    with pytest.raises(KeyError, match="unknown head"):
        MMoENet(spec, TASKS).gate_expert_names("nope")


def test_mmoe_head_bias_init():
    spec = make_spec()
    net = MMoENet(spec, TASKS, n_experts=2, expert=(4,), head_bias_init={"hide": -5.0})
    assert net.towers["hide"].out.bias.item() == pytest.approx(-5.0)


# ---------------------------------------------------------------------------- the callback


def test_summarise_gates():
    mean_w, mean_h = summarise_gates(torch.tensor([3.0, 1.0]), torch.tensor(2.0), torch.tensor(4.0))
    torch.testing.assert_close(mean_w, torch.tensor([0.75, 0.25]))
    assert mean_h.item() == pytest.approx(0.5)
    nan_w, nan_h = summarise_gates(torch.zeros(2), torch.tensor(0.0), torch.tensor(0.0))
    assert torch.isnan(nan_w).all() and torch.isnan(nan_h)


class _Loader(torch.utils.data.IterableDataset):
    def __init__(self, spec, n_batches=3, B=16):
        self.spec, self.n, self.B = spec, n_batches, B

    def __iter__(self):
        for i in range(self.n):
            yield make_batch(self.spec, B=self.B, seed=i)


def _module(spec, net_cfg):
    return RankingModule(
        spec=spec_to_dict(spec),
        net=net_cfg,
        loss={"objective": "multitask"},
        optimizer={"_target_": "torch.optim.SGD", "lr": 0.01},
    )


def _trainer(callbacks):
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )


def test_gate_statistics_logs_mean_weight_per_expert_per_task():
    spec = make_spec(tasks=("save", "hide"))
    module = _module(
        spec,
        {"_target_": "mtrank.models.mmoe.MMoENet", "embedding_dim": 4, "n_experts": 3, "expert": [8], "tower": [4]},
    )
    cb = GateStatistics()
    loader = torch.utils.data.DataLoader(_Loader(spec), batch_size=None)
    trainer = _trainer([cb])
    trainer.validate(module, dataloaders=loader, verbose=False)
    m = trainer.callback_metrics
    # expected: the mean over all rows of the gate's output, per head
    module.eval()
    with torch.no_grad():
        rows = {t: torch.cat([module.net.gate_weights(b)[t] for b in _Loader(spec)]) for t in ("save", "hide")}
    for t in ("save", "hide"):
        got = torch.stack([m[f"val/gates/{t}/expert_{i}"] for i in range(3)])
        torch.testing.assert_close(got, rows[t].mean(dim=0), atol=1e-5, rtol=1e-5)
        assert got.sum().item() == pytest.approx(1.0, abs=1e-5)
        h = -(rows[t] * rows[t].log()).sum(1) / math.log(3)
        assert m[f"val/gates/{t}/entropy"].item() == pytest.approx(h.mean().item(), abs=1e-5)
    assert not cb._handles  # hooks removed after the epoch
    trainer.test(module, dataloaders=loader, verbose=False)
    assert "test/gates/hide/expert_2" in trainer.callback_metrics


def test_gate_statistics_skips_nets_without_gates():
    spec = make_spec(tasks=("save", "hide"))
    module = _module(
        spec, {"_target_": "mtrank.models.networks.SharedBottomNet", "embedding_dim": 4, "trunk": [8], "tower": [4]}
    )
    assert isinstance(module.net, SharedBottomNet)
    trainer = _trainer([GateStatistics()])
    trainer.validate(module, dataloaders=torch.utils.data.DataLoader(_Loader(spec), batch_size=None), verbose=False)
    assert not any("/gates/" in k for k in trainer.callback_metrics)
    with pytest.raises(ValueError, match="stages"):
        GateStatistics(stages=["train"])
