"""Seed ensembling (``model.ensemble_size``, :mod:`mtrank.models.ensemble`): independent members, served output the
logit of the mean of their probabilities, the loss the sum of their own losses, the plain net for 1."""

import json

import pytest
import torch

from helpers import make_batch, make_spec
from mtrank.models.ensemble import EnsembleNet, ensemble_config, mean_probability_logit
from mtrank.models.networks import SharedBottomNet
from mtrank.models.param_groups import build_param_groups
from mtrank.training.module import RankingModule

NET = {
    "_target_": "mtrank.models.networks.SharedBottomNet",
    "embedding_dim": 4,
    "trunk": [8],
    "tower": [4],
    "wide": True,
    "interaction": "none",
    "dropout": 0.0,
}
OPT = {"_target_": "torch.optim.Adam", "lr": 0.002, "weight_decay": 1e-5}
LOSS = {"objective": "multitask"}


def module(size, seed=0, **kw):
    torch.manual_seed(seed)
    return RankingModule(make_spec(), NET, LOSS, OPT, ensemble_size=size, **kw)


def test_mean_probability_logit_is_the_logit_of_the_mean_probability_and_stays_finite():
    z = torch.randn(3, 5, 2) * 4
    p = torch.sigmoid(z).mean(0)
    torch.testing.assert_close(mean_probability_logit(z), torch.log(p) - torch.log1p(-p))
    # one member: its own logit; extreme logits: finite, and the mean of 1 and ~0 is 1/2
    torch.testing.assert_close(mean_probability_logit(z[:1]), z[0])
    far = mean_probability_logit(torch.tensor([[200.0, -200.0], [200.0, -200.0]]).T)
    assert torch.isfinite(far).all() and abs(float(far[0])) < 1e-5
    assert torch.isfinite(mean_probability_logit(torch.tensor([[300.0], [290.0]]))).all()


def test_members_differ_at_init_and_the_output_is_the_logit_of_their_mean_probability():
    model = module(3)
    assert isinstance(model.net, EnsembleNet) and model.net.size == 3
    members = model.net.members
    assert all(isinstance(m, SharedBottomNet) for m in members)
    w = [m.feature_layer.embeddings[0].weight for m in members]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])  # independent draws
    model.eval()
    b = make_batch(model.spec)
    each = torch.stack([m(b) for m in members])
    torch.testing.assert_close(model.net.member_logits(b), each)
    p = torch.sigmoid(each).mean(0)
    torch.testing.assert_close(model(b), torch.logit(p), rtol=1e-5, atol=1e-5)
    probs = model.calibrated_probabilities(model(b))  # β = 1, no calibrators: the members' mean probability
    torch.testing.assert_close(probs, p, rtol=1e-5, atol=1e-6)


def test_size_one_is_the_plain_net_drawn_as_before():
    plain = module(1)
    torch.manual_seed(0)
    before = RankingModule(make_spec(), NET, LOSS, OPT)  # as the module was built before the option existed
    assert type(plain.net) is SharedBottomNet and plain.hparams["net"] == before.hparams["net"]
    assert plain.state_dict().keys() == before.state_dict().keys()
    for k, v in before.state_dict().items():
        assert torch.equal(plain.state_dict()[k], v), k
    assert ensemble_config(NET, 1) == NET


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True])
def test_bad_sizes_name_the_key(bad):
    with pytest.raises(ValueError, match="model.ensemble_size"):
        module(bad)


def test_training_loss_is_the_sum_of_the_members_own_losses_and_their_gradients_are_their_own():
    model = module(2)
    model.train()
    b = make_batch(model.spec, B=16)
    torch.manual_seed(1)
    loss = model.training_step(b, 0)
    member = [model.compute_loss(z, b["labels"])[0] for z in model.net.member_logits(b)]
    torch.testing.assert_close(loss, member[0] + member[1])
    # not the loss of the mean prediction (a mixture)
    assert not torch.allclose(loss / 2, model.compute_loss(model(b), b["labels"])[0])
    # member 0's gradient is that of member 0's loss alone
    model.zero_grad()
    loss.backward()
    p0 = model.net.members[0].feature_layer.embeddings[0].weight
    alone = torch.autograd.grad(model.compute_loss(model.net.members[0](b), b["labels"])[0], p0)[0]
    torch.testing.assert_close(p0.grad, alone)


def test_param_groups_match_inside_every_member():
    model = module(2, param_groups={"wide": {"lr": 0.01}, "feature_layer": {"weight_decay": 1e-4}})
    opt = model.configure_optimizers()
    wide = {id(p) for m in model.net.members for p in m.wide.parameters()}
    group = next(g for g in opt.param_groups if g["lr"] == 0.01)
    assert {id(p) for p in group["params"]} == wide and len(wide) > 1
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(1 for _ in model.parameters())
    with pytest.raises(ValueError, match="model.param_groups"):
        build_param_groups(model.net, {"members": {"lr": 0.1}})  # names inside a member, not the ensemble's


def test_checkpoint_config_rebuilds_the_ensemble_with_the_default_size():
    model = module(2)
    assert model.hparams["net"]["_target_"] == "mtrank.models.ensemble.EnsembleNet"
    assert "ensemble_size" not in model.hparams  # baked into the net's config
    again = RankingModule(**{k: model.hparams[k] for k in ("spec", "net", "loss", "optimizer")})
    assert isinstance(again.net, EnsembleNet) and again.net.size == 2
    again.load_state_dict(model.state_dict())
    b = make_batch(model.spec)
    model.eval(), again.eval()
    torch.testing.assert_close(again(b), model(b))


def test_presets_ensemble_only_where_it_won(tmp_path):
    from helpers import compose_config

    for experiment, size in (("multitask", 1), ("census_mmoe", 3), ("census", 1), ("kuairand", 3)):
        cfg = compose_config("train", [f"experiment={experiment}"], tmp_path)
        assert cfg.model.ensemble_size == size, experiment
    kuairand = compose_config("train", ["experiment=kuairand"], tmp_path)
    assert kuairand.model.net.wide_weight_decay == {"hide": 1.0e-3}
    assert kuairand.callbacks.per_head_selection.min_delta == 0.005
    # the baselines and the single net of the same experiment compose without the ensemble or the hide L2
    for model in ("logistic", "shared_bottom", "shared_bottom_wide", "mmoe_wide"):
        cfg = compose_config("train", ["experiment=kuairand", f"model={model}"], tmp_path)
        assert cfg.model.ensemble_size == 1 and not cfg.model.net.get("wide_weight_decay"), model


def test_an_ensemble_trains_selects_per_head_evaluates_and_exports_from_its_run(tmp_path):
    from helpers import FAST_RUN, compose_config
    from mtrank.jobs.evaluate import evaluate
    from mtrank.jobs.train import train
    from mtrank.scoring.run import load_run
    from mtrank.serving.export import export_run

    cfg = compose_config(
        "train",
        [
            *FAST_RUN,
            "trainer.max_epochs=2",
            "logger=[]",
            "model.ensemble_size=2",
            "model.net.wide=true",
            "model.param_groups={wide:{lr:0.01}}",
            "+callbacks.per_head_selection._target_=mtrank.training.selection.PerHeadSelection",
        ],
        tmp_path / "train",
    )
    metrics = train(cfg)
    run_dir = tmp_path / "train" / "run"
    best = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]
    run = load_run(run_dir, device="cpu")
    net = run.model.net
    inner = net.copies if hasattr(net, "copies") else [net]  # per-head selection may have composed copies
    assert all(isinstance(n, EnsembleNet) and n.size == 2 for n in inner), best
    figures = evaluate(
        compose_config("eval", [f"ckpt_path={best}", "report.ks=[5]", "report.n_bins=8"], tmp_path / "e")
    )
    for t in cfg.tasks.names:
        assert 0.5 < metrics[f"test/{t}/auroc"] <= 1.0
        assert figures[f"test/{t}/auroc"] == pytest.approx(metrics[f"test/{t}/auroc"], abs=2e-3), t
    # the served network: exported and checked against the checkpoint's logits by export_run itself
    art = export_run(run_dir, weights={t: 1.0 for t in cfg.tasks.names}, utility_name="test")
    assert (art / "network.pt2").is_file()
