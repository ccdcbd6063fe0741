"""Per-head model selection (issue 13): each head scored with the weights of its own best val epoch."""

from types import SimpleNamespace

import pytest
import torch

from mtrank.data.spec import CategoricalFeature, FeatureSpec
from mtrank.models.selection import PerHeadNet
from mtrank.training.module import RankingModule
from mtrank.training.selection import PerHeadSelection

TASKS = ("click", "share")
NET = {
    "_target_": "mtrank.models.networks.SharedBottomNet",
    "embedding_dim": 4,
    "trunk": [8],
    "tower": [],
    "interaction": "none",
    "wide": True,
}


def make_spec():
    return FeatureSpec(
        categorical=(CategoricalFeature("c0", 6), CategoricalFeature("c1", 9)), numeric=("n0",), tasks=TASKS
    )


def make_batch(B=5):
    g = torch.Generator().manual_seed(0)
    return {
        "categorical": torch.stack([torch.randint(0, 6, (B,), generator=g), torch.randint(0, 9, (B,), generator=g)], 1),
        "numeric": torch.randn(B, 1, generator=g),
    }


def module():
    return RankingModule(make_spec(), NET, {"objective": "multitask"}, {"_target_": "torch.optim.Adam"})


def fake_trainer(epoch, metrics, saved):
    return SimpleNamespace(
        sanity_checking=False,
        state=SimpleNamespace(fn="fit"),
        current_epoch=epoch,
        callback_metrics={k: torch.tensor(v) for k, v in metrics.items()},
        save_checkpoint=lambda path, weights_only=False: saved.append(path),
    )


def test_per_head_net_scores_each_head_with_its_copy():
    spec = make_spec()
    net = PerHeadNet(spec, TASKS, NET, head_copy=[1, 0], n_copies=2)
    b = make_batch()
    net.eval()
    out = net(b)
    torch.testing.assert_close(out[:, 0], net.copies[1](b)[:, 0])
    torch.testing.assert_close(out[:, 1], net.copies[0](b)[:, 1])
    with pytest.raises(ValueError, match="head_copy"):
        PerHeadNet(spec, TASKS, NET, head_copy=[0, 2], n_copies=2)


def test_callback_keeps_each_heads_best_epoch_and_finalize_builds_the_composite(tmp_path):
    model = module()
    cb = PerHeadSelection()
    saved = []
    states = []
    # epoch 0: share at its best; epoch 1: click at its best, share worse; epoch 2: both worse
    for epoch, (click, share) in enumerate([(0.60, 0.020), (0.55, 0.030), (0.58, 0.040)]):
        with torch.no_grad():
            for p in model.net.parameters():
                p.add_(0.1)  # the weights move every epoch
        states.append({k: v.clone() for k, v in model.net.state_dict().items()})
        cb.on_validation_end(
            fake_trainer(epoch, {"val/click/logloss": click, "val/share/logloss": share}, saved), model
        )
    assert cb.epochs() == {"click": 1, "share": 0}
    assert sorted(cb.states) == [0, 1]  # epoch 2 is nobody's best: not kept
    b = make_batch()
    model.eval()
    path = cb.finalize(model, fake_trainer(2, {}, saved), tmp_path)
    assert path == str(tmp_path / "per_head.ckpt") and saved == [path]
    assert isinstance(model.net, PerHeadNet) and model.net.head_copy.tolist() == [1, 0]
    assert model.hparams["net"]["_target_"].endswith("PerHeadNet")
    # head click scores with epoch 1's weights, share with epoch 0's
    ref = module().net
    ref.eval()
    ref.load_state_dict(states[1])
    click = ref(b)[:, 0]
    ref.load_state_dict(states[0])
    share = ref(b)[:, 1]
    torch.testing.assert_close(model(b), torch.stack([click, share], 1))
    # the module rebuilds from its hyper-parameters (what a checkpoint holds)
    again = RankingModule(**{k: model.hparams[k] for k in ("spec", "net", "loss", "optimizer")})
    again.load_state_dict(model.state_dict())
    again.eval()
    torch.testing.assert_close(again(b), model(b))


def test_callback_changes_nothing_when_one_epoch_is_best_for_all(tmp_path):
    model = module()
    cb = PerHeadSelection()
    for epoch, v in enumerate([0.5, 0.4, 0.45]):
        cb.on_validation_end(fake_trainer(epoch, {"val/click/logloss": v, "val/share/logloss": v / 10}, []), model)
    assert cb.finalize(model, fake_trainer(2, {}, []), tmp_path) is None
    assert not isinstance(model.net, PerHeadNet)


def test_callback_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="callbacks.per_head_selection.mode"):
        PerHeadSelection(mode="lowest")
    model = module()
    with pytest.raises(KeyError, match="callbacks.per_head_selection: val/click/auroc is not logged"):
        PerHeadSelection(metric="auroc").on_validation_end(fake_trainer(0, {"val/loss": 1.0}, []), model)


def test_min_delta_keeps_a_head_at_the_checkpoints_epoch_unless_its_own_best_is_clearly_better(tmp_path):
    model = module()
    cb = PerHeadSelection(min_delta=0.01)
    saved = []
    states = []
    # val/loss (the checkpoint's monitor) is best at epoch 2; click's own best (epoch 1) is 0.2% better than its
    # figure at epoch 2 (noise: stays at 2), share's own best (epoch 0) 25% better (moves)
    rows = [(0.5, 0.510, 0.030), (0.45, 0.500, 0.035), (0.40, 0.501, 0.040), (0.42, 0.505, 0.045)]
    for epoch, (loss, click, share) in enumerate(rows):
        with torch.no_grad():
            for p in model.net.parameters():
                p.add_(0.1)
        states.append({k: v.clone() for k, v in model.net.state_dict().items()})
        trainer = fake_trainer(epoch, {"val/loss": loss, "val/click/logloss": click, "val/share/logloss": share}, saved)
        trainer.checkpoint_callback = SimpleNamespace(monitor="val/loss", mode="min")
        cb.on_validation_end(trainer, model)
    assert cb.kept[1] == 2 and cb.kept[0] == pytest.approx(0.40)
    assert cb.epochs() == {"click": 2, "share": 0}
    assert sorted(cb.states) == [0, 1, 2]  # epoch 1: click's own best, kept in case the kept epoch moves
    model.eval()
    assert cb.finalize(model, fake_trainer(3, {}, saved), tmp_path) == str(tmp_path / "per_head.ckpt")
    assert model.net.head_copy.tolist() == [1, 0]  # copies in epoch order: 0 (share), 2 (click)
    ref = module().net
    ref.eval()
    ref.load_state_dict(states[2])
    torch.testing.assert_close(model(make_batch())[:, 0], ref(make_batch())[:, 0])
    # a larger margin: share stays too, nothing to compose
    strict = PerHeadSelection(min_delta=0.5)
    for epoch, (loss, click, share) in enumerate(rows):
        trainer = fake_trainer(epoch, {"val/loss": loss, "val/click/logloss": click, "val/share/logloss": share}, [])
        trainer.checkpoint_callback = SimpleNamespace(monitor="val/loss", mode="min")
        strict.on_validation_end(trainer, model)
    assert strict.epochs() == {"click": 2, "share": 2}


def test_min_delta_bad_values_and_a_missing_monitor_name_the_key():
    for bad in (-0.1, "x", True):
        with pytest.raises(ValueError, match="callbacks.per_head_selection.min_delta"):
            PerHeadSelection(min_delta=bad)
    trainer = fake_trainer(0, {"val/click/logloss": 0.5, "val/share/logloss": 0.05}, [])
    trainer.checkpoint_callback = SimpleNamespace(monitor="val/loss", mode="min")
    with pytest.raises(KeyError, match="callbacks.per_head_selection.min_delta"):
        PerHeadSelection(min_delta=0.01).on_validation_end(trainer, module())
