"""Issue 13's network options: wide part, numeric embeddings, per-part optimiser settings."""

from functools import partial

import pytest
import torch

import helpers
from helpers import make_batch
from mtrank.data.spec import CategoricalFeature, FeatureSpec
from mtrank.models.layers import FeatureLayer
from mtrank.models.linear import LogisticNet
from mtrank.models.mmoe import MMoENet
from mtrank.models.networks import SharedBottomNet
from mtrank.models.numeric import NumericEmbedding, build_numeric_embedding, fit_numeric_encoders
from mtrank.models.param_groups import build_param_groups

TASKS = ("click", "save")


make_spec = partial(helpers.make_spec, tasks=TASKS)


# ----------------------------------------------------------------------------------------------- wide part


def test_wide_part_adds_a_logistic_regression_to_the_deep_logits():
    spec = make_spec()
    net = SharedBottomNet(spec, TASKS, embedding_dim=4, trunk=(8,), tower=(4,), wide=True)
    assert isinstance(net.wide, LogisticNet)
    b = make_batch(spec)
    net.eval()
    deep = net.forward_heads(net.head_inputs(net.forward_features(b)))
    # zero-initialised: the same logits as the deep part alone at the start
    torch.testing.assert_close(net(b), deep)
    with torch.no_grad():
        net.wide.weights[1].weight.fill_(0.5)  # every value of feature c1 adds 0.5 to every head
        net.wide.bias.copy_(torch.tensor([1.0, -2.0]))
    torch.testing.assert_close(net(b), deep + torch.tensor([1.5, -1.5]))
    assert SharedBottomNet(spec, TASKS, embedding_dim=4, trunk=(8,), tower=(4,)).wide is None


def test_wide_part_learns_what_a_deep_net_without_it_must_approximate():
    """A per-id effect (one weight per value of a 40-value id) is fitted exactly by the wide part alone."""
    spec = FeatureSpec(categorical=(CategoricalFeature("id", 40),), numeric=(), tasks=("y",))
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 40, (4000,), generator=g)
    effect = torch.randn(40, generator=g) * 2
    y = (torch.rand(4000, generator=g) < torch.sigmoid(effect[ids])).float()
    net = SharedBottomNet(spec, ("y",), embedding_dim=2, trunk=(2,), tower=(), wide=True)
    opt = torch.optim.Adam(net.wide.parameters(), lr=0.05)  # the wide part only
    batch = {"categorical": ids[:, None], "numeric": torch.zeros(4000, 0)}
    for _ in range(300):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(batch)[:, 0], y)
        loss.backward()
        opt.step()
    learned = net.wide.weights[0].weight[:, 0].detach() + net.wide.bias.detach()
    corr = torch.corrcoef(torch.stack([learned, effect]))[0, 1]
    assert corr > 0.9


def test_wide_on_mmoe_and_bad_values():
    spec = make_spec()
    net = MMoENet(spec, TASKS, embedding_dim=4, n_experts=2, expert=(8,), tower=(4,), wide=True, wide_dropout=0.3)
    assert net.wide is not None and net.wide.p == pytest.approx(0.3)
    assert net(make_batch(spec)).shape == (7, 2)
    with pytest.raises(ValueError, match="model.net.wide_dropout"):
        SharedBottomNet(spec, TASKS, wide=True, wide_dropout=1.0)
    with pytest.raises(ValueError, match="model.net.wide"):
        SharedBottomNet(spec, TASKS, wide="yes")


# ------------------------------------------------------------------------------------- numeric embeddings


def test_piecewise_linear_encoding_values():
    m = NumericEmbedding(1, 3, type="piecewise_linear", n_bins=4)
    m.fit(torch.arange(0.0, 9.0)[:, None])  # quantile edges 0, 2, 4, 6, 8
    torch.testing.assert_close(m.edges[0], torch.tensor([0.0, 2.0, 4.0, 6.0, 8.0]))
    enc = m.encode(torch.tensor([[0.0], [3.0], [8.0], [-2.0], [10.0]]))[:, 0]
    expected = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],
            [1.0, 0.5, 0.0, 0.0],
            [1.0, 1.0, 1.0, 1.0],
            [-1.0, 0.0, 0.0, 0.0],  # below the train range: the first bin extrapolates
            [1.0, 1.0, 1.0, 2.0],  # above it: the last bin extrapolates
        ]
    )
    torch.testing.assert_close(enc, expected)
    assert m(torch.tensor([[3.0]])).shape == (1, 1, 3)


def test_piecewise_linear_with_repeated_quantiles_stays_finite():
    m = NumericEmbedding(2, 4, type="piecewise_linear", n_bins=8)
    x = torch.cat([torch.zeros(90), torch.ones(10)])  # a mostly-zero count
    m.fit(torch.stack([x, torch.randn(100)], dim=1))
    out = m(torch.tensor([[0.0, 0.1], [1.0, -5.0], [0.5, 5.0]]))
    assert torch.isfinite(out).all()
    enc = m.encode(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))[:, 0]
    assert not torch.equal(enc[0], enc[1])  # 0 and 1 are told apart


def test_feature_layer_with_numeric_embedding():
    spec = make_spec(3, 2)
    fl = FeatureLayer(spec, embedding_dim=4, interaction="dot", numeric_embedding={"type": "piecewise_linear"})
    assert fl.numeric_proj is None
    k = 3 + 2
    assert fl.out_dim == k * 4 + k * (k - 1) // 2  # numerics as vectors, no scalars
    assert fl(make_batch(spec)).shape == (7, fl.out_dim)
    fl = FeatureLayer(
        spec,
        embedding_dim=4,
        interaction="none",
        numeric_embedding={"type": "periodic", "n_frequencies": 3, "sigma": 0.5},
    )
    assert fl.out_dim == 5 * 4
    out = fl(make_batch(spec))
    out.sum().backward()
    assert fl.numeric_embedding.frequencies.grad.abs().sum() > 0


def test_numeric_embedding_bad_options_name_the_key():
    with pytest.raises(ValueError, match=r"model.net.numeric_embedding.type"):
        build_numeric_embedding({"type": "splines"}, 2, 4)
    with pytest.raises(ValueError, match=r"model.net.numeric_embedding has unknown key"):
        build_numeric_embedding({"type": "periodic", "bins": 3}, 2, 4)
    with pytest.raises(ValueError, match=r"model.net.numeric_embedding needs 'type'"):
        build_numeric_embedding({"n_bins": 3}, 2, 4)
    with pytest.raises(ValueError, match=r"model.net.numeric_embedding.n_bins"):
        build_numeric_embedding({"type": "piecewise_linear", "n_bins": 1}, 2, 4)
    with pytest.raises(ValueError, match="has none"):
        NumericEmbedding(0, 4, type="periodic")
    assert build_numeric_embedding({"type": "periodic"}, 0, 4) is None  # a preset on data without numerics
    assert build_numeric_embedding(None, 2, 4) is None


def test_fit_numeric_encoders_sets_the_bins_from_train_batches_and_they_persist():
    spec = make_spec(2, 2)
    net = SharedBottomNet(
        spec, TASKS, embedding_dim=4, trunk=(8,), tower=(), numeric_embedding={"type": "piecewise_linear", "n_bins": 4}
    )
    before = net.feature_layer.numeric_embedding.edges.clone()
    batches = [{"numeric": torch.stack([torch.arange(10.0) + 10 * i, -torch.arange(10.0)], 1)} for i in range(3)]
    assert fit_numeric_encoders(net, batches) == 30
    edges = net.feature_layer.numeric_embedding.edges
    assert not torch.equal(edges, before)
    torch.testing.assert_close(edges[0, [0, -1]], torch.tensor([0.0, 29.0]))
    # a checkpoint carries them
    other = SharedBottomNet(
        spec, TASKS, embedding_dim=4, trunk=(8,), tower=(), numeric_embedding={"type": "piecewise_linear", "n_bins": 4}
    )
    other.load_state_dict(net.state_dict())
    torch.testing.assert_close(other.feature_layer.numeric_embedding.edges, edges)
    plain = SharedBottomNet(spec, TASKS, embedding_dim=4, trunk=(8,), tower=())
    assert fit_numeric_encoders(plain, iter(())) == 0  # nothing to fit, nothing read


# -------------------------------------------------------------------------------------------- param groups


def test_param_groups_split_the_parameters_by_prefix():
    spec = make_spec()
    net = SharedBottomNet(spec, TASKS, embedding_dim=4, trunk=(8,), tower=(4,), wide=True)
    groups = build_param_groups(net, {"wide": {"lr": 0.01}, "feature_layer.embeddings": {"weight_decay": 1e-3}})
    assert [set(g) - {"params"} for g in groups] == [{"weight_decay"}, {"lr"}, set()]  # longest prefix first
    n_all = sum(1 for _ in net.parameters())
    assert sum(len(g["params"]) for g in groups) == n_all
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in net.wide.parameters()}
    opt = torch.optim.Adam(groups, lr=0.002)
    assert [g["lr"] for g in opt.param_groups] == [0.002, 0.01, 0.002]
    assert build_param_groups(net, None)[0]["params"] == list(net.parameters())


def test_param_groups_take_a_nested_prefix_as_a_dotted_one():
    """``{towers: {hide: {...}}}`` is ``towers.hide`` (what a command-line override can write)."""
    net = SharedBottomNet(make_spec(), TASKS, embedding_dim=4, trunk=(8,), tower=(4,))
    nested = build_param_groups(net, {"towers": {TASKS[0]: {"weight_decay": 0.1}}, "trunk": {"lr": 0.01}})
    dotted = build_param_groups(net, {f"towers.{TASKS[0]}": {"weight_decay": 0.1}, "trunk": {"lr": 0.01}})
    assert [[id(p) for p in g["params"]] for g in nested] == [[id(p) for p in g["params"]] for g in dotted]
    assert {id(p) for p in nested[0]["params"]} == {id(p) for p in net.towers[TASKS[0]].parameters()}
    with pytest.raises(ValueError, match=r"model.param_groups.towers mixes optimiser settings and nested prefixes"):
        build_param_groups(net, {"towers": {"lr": 0.1, TASKS[0]: {"lr": 0.01}}})


def test_param_groups_bad_prefix_names_the_key():
    net = SharedBottomNet(make_spec(), TASKS, embedding_dim=4, trunk=(8,), tower=(4,))
    with pytest.raises(ValueError, match=r"model.param_groups: prefix\(es\) \['wide'\] name no parameter"):
        build_param_groups(net, {"wide": {"lr": 0.01}})
    with pytest.raises(ValueError, match=r"model.param_groups.trunk"):
        build_param_groups(net, {"trunk": 0.01})


# ------------------------------------------------------------------------------------ module and configs


def test_ranking_module_builds_the_optimiser_groups_and_keeps_one_group_without_them():
    from mtrank.training.module import RankingModule

    spec = make_spec()
    net = {
        "_target_": "mtrank.models.networks.SharedBottomNet",
        "embedding_dim": 4,
        "trunk": [8],
        "tower": [],
        "wide": True,
        "interaction": "none",
    }
    opt = {"_target_": "torch.optim.Adam", "lr": 0.002, "weight_decay": 1e-5}
    loss = {"objective": "multitask", "task_weighting": "uncertainty"}
    model = RankingModule(
        spec, net, loss, opt, param_groups={"wide": {"lr": 0.01}, "feature_layer": {"weight_decay": 1e-4}}
    )
    optimiser = model.configure_optimizers()
    lrs = [g["lr"] for g in optimiser.param_groups]
    wds = [g["weight_decay"] for g in optimiser.param_groups]
    assert lrs == [0.002, 0.01, 0.002, 0.002] and wds == [1e-4, 1e-5, 1e-5, 1e-5]  # last: the task weights
    assert sum(len(g["params"]) for g in optimiser.param_groups) == sum(1 for _ in model.parameters())
    plain = RankingModule(spec, net, loss, opt).configure_optimizers()
    assert len(plain.param_groups) == 1  # as before the option: old checkpoints' optimiser states still load
    with pytest.raises(ValueError, match="model.param_groups"):
        RankingModule(spec, net, loss, opt, param_groups={"experts": {"lr": 0.1}}).configure_optimizers()


@pytest.mark.parametrize(
    "experiment,target",
    [("kuairand", "PLENet"), ("census", "SharedBottomNet"), ("census_mmoe", "MMoENet")],
)
def test_real_data_experiments_use_the_options_and_the_baselines_still_compose(experiment, target, tmp_path):
    from helpers import compose_config

    cfg = compose_config("train", [f"experiment={experiment}"], tmp_path)
    assert cfg.model.net._target_.endswith(target), cfg.model.net._target_
    assert cfg.model.net.wide is True and cfg.model.net.interaction == "none"
    assert cfg.model.param_groups.wide.lr == 0.01
    assert (cfg.callbacks.per_head_selection is not None) == (experiment == "kuairand")
    # long_click tied to click where both are heads; a learning-rate schedule where it won (docs/model_quality.md)
    assert cfg.model.net.implied == ({"long_click": "click"} if experiment == "kuairand" else None)
    schedule = {"kuairand": "ExponentialLR", "census_mmoe": "ReduceLROnPlateau", "census": None}[experiment]
    assert (cfg.model.scheduler and cfg.model.scheduler._target_.rsplit(".", 1)[1]) == schedule
    # the logistic baseline and the plain deep net compose without the wide-part keys, the tie and the schedule
    lr = compose_config("train", [f"experiment={experiment}", "model=logistic"], tmp_path)
    assert lr.model.net._target_.endswith("LogisticNet") and "wide" not in lr.model.net and not lr.model.param_groups
    assert "implied" not in lr.model.net and lr.model.scheduler is None
    deep = compose_config("train", [f"experiment={experiment}", "model=shared_bottom"], tmp_path)
    assert deep.model.net.wide is False and deep.model.net.interaction == "dot" and deep.model.param_groups is None
    assert deep.model.net.implied is None and deep.model.scheduler is None


def test_the_simulated_default_is_unchanged(tmp_path):
    from helpers import compose_config

    cfg = compose_config("train", ["experiment=multitask"], tmp_path)
    assert cfg.model.net.wide is False and cfg.model.net.numeric_embedding is None and cfg.model.param_groups is None
    assert cfg.model.net.interaction == "dot" and cfg.model.net.implied is None and cfg.model.scheduler is None


def test_training_fits_the_quantile_bins_on_train_and_the_checkpoint_keeps_them(tmp_path):
    import json

    from helpers import FAST_RUN, compose_config
    from mtrank.jobs.train import train
    from mtrank.training.module import RankingModule

    cfg = compose_config(
        "train",
        [
            *FAST_RUN,
            "trainer.max_epochs=1",
            "logger=[]",
            "model.net.wide=true",
            "model.net.numeric_embedding={type:piecewise_linear,n_bins:4}",
            "model.param_groups={wide:{lr:0.01}}",
        ],
        tmp_path,
    )
    metrics = train(cfg)
    assert all(0.5 < metrics[f"test/{t}/auroc"] <= 1.0 for t in cfg.tasks.names)
    best = json.loads((tmp_path / "run" / "metrics.json").read_text())["best_checkpoint"]
    model = RankingModule.load_from_checkpoint(best, map_location="cpu", weights_only=False)
    edges = model.net.feature_layer.numeric_embedding.edges
    default = torch.linspace(-2.0, 2.0, 5).repeat(edges.shape[0], 1)
    assert not torch.allclose(edges, default)  # fitted, not the placeholder
    assert (edges[:, 1:] >= edges[:, :-1]).all()
    assert model.net.wide is not None


@pytest.mark.parametrize(
    ("experiment", "search", "objective"),
    [
        ("census_mmoe", "ax_census", "val/income/auroc"),
        ("census", "ax_census", "val/income/auroc"),
        ("kuairand", "ax_kuairand", "val/click/auroc"),
    ],
)
def test_real_data_search_spaces_name_keys_of_the_experiment(experiment, search, objective, tmp_path):
    """Every parameter the real-data searches tune exists in their experiment (a renamed key would make every
    trial fail), and the checkpoint keeps monitoring the val loss while the sweeper optimises an AUROC."""
    from omegaconf import OmegaConf

    from helpers import compose_config

    cfg = compose_config("train", [f"experiment={experiment}", f"hparams_search={search}"], tmp_path)
    for key in cfg.hydra.sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, key
    assert cfg.hydra.sweeper.objective == objective
    assert cfg.callbacks.model_checkpoint.monitor == "val/loss" and cfg.callbacks.model_checkpoint.mode == "min"
    assert cfg.callbacks.early_stopping.monitor == "val/loss" and cfg.callbacks.early_stopping.mode == "min"


def test_wide_weight_decay_adds_each_heads_l2_to_its_wide_weights_gradient_only():
    spec = make_spec()
    b = make_batch(spec)
    nets = []
    for decay in (None, {"save": 0.5}):
        torch.manual_seed(0)
        net = SharedBottomNet(spec, TASKS, embedding_dim=4, trunk=(8,), tower=(), wide=True, wide_weight_decay=decay)
        with torch.no_grad():
            for p in net.wide.parameters():
                p.normal_()
        net(b).sum().backward()
        nets.append(net)
    plain, decayed = nets
    assert plain.state_dict().keys() == decayed.state_dict().keys()  # checkpoints unchanged by the option
    for a, d in zip(plain.wide.weights, decayed.wide.weights):  # [cardinality, heads]: click 0, save 0.5
        torch.testing.assert_close(d.weight.grad[:, 0], a.weight.grad[:, 0])
        torch.testing.assert_close(d.weight.grad[:, 1], a.weight.grad[:, 1] + 0.5 * d.weight[:, 1].detach())
    wn, an = decayed.wide.numeric.weight, plain.wide.numeric.weight  # [heads, n_numeric]
    torch.testing.assert_close(wn.grad, an.grad + torch.tensor([[0.0], [0.5]]) * wn.detach())
    torch.testing.assert_close(decayed.wide.bias.grad, plain.wide.bias.grad)  # no decay on the bias
    for a, d in zip(plain.feature_layer.parameters(), decayed.feature_layer.parameters()):
        torch.testing.assert_close(d.grad, a.grad)  # nor on the deep part


@pytest.mark.parametrize("bad", [-1.0, {"save": "x"}, {"save": -0.1}, "x", True])
def test_wide_weight_decay_bad_values_name_the_key(bad):
    with pytest.raises(ValueError, match="model.net.wide_weight_decay"):
        MMoENet(make_spec(), TASKS, embedding_dim=4, n_experts=2, expert=(8,), wide=True, wide_weight_decay=bad)


def test_wide_weight_decay_skips_tasks_that_are_not_heads_with_a_warning(caplog):
    net = SharedBottomNet(make_spec(), TASKS, wide=True, wide_weight_decay={"hide": 1e-3, "save": 0.5})
    assert net.wide.l2.tolist() == [0.0, 0.5]
    assert "model.net.wide_weight_decay names ['hide']" in caplog.text
