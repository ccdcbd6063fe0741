"""Hydra composition of experiment=mmoe and experiment=multitask_ext (and model=mmoe | ple)."""

from pathlib import Path

import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mtrank.data.spec import CategoricalFeature, FeatureSpec
from mtrank.models.mmoe import MMoENet, PLENet
from mtrank.models.networks import SharedBottomNet
from mtrank.training.callbacks import GateStatistics
from mtrank.training.module import RankingModule

CONF = Path(__file__).resolve().parents[1] / "conf"
FOUR = ["save", "click", "long_click", "closeup"]
SIX = FOUR + ["hide", "checkout"]


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def _spec(tasks):
    cats = (CategoricalFeature("user_segment", 13), CategoricalFeature("position", 21))
    return FeatureSpec(categorical=cats, numeric=("price", "retrieval_score"), tasks=tuple(tasks), has_p_true=True)


def _build(cfg, tasks) -> RankingModule:
    """Build the LightningModule exactly as the training job does, on a small made-up spec."""
    return hydra.utils.instantiate(cfg.model, spec=_spec(tasks), _recursive_=False)


def _batch(tasks, B=5):
    return {
        "categorical": torch.stack([torch.randint(0, 13, (B,)), torch.randint(0, 21, (B,))], 1),
        "numeric": torch.randn(B, 2),
        "labels": torch.zeros(B, len(tasks)),
    }


@pytest.mark.parametrize(
    "overrides,tasks,net_cls,task_name",
    [
        (["experiment=mmoe"], FOUR, MMoENet, "mmoe"),
        (["experiment=mmoe", "tasks=related_products_ext"], SIX, MMoENet, "mmoe"),
        (["experiment=multitask_ext"], SIX, SharedBottomNet, "multitask_ext"),
        (["experiment=multitask_ext", "model=mmoe"], SIX, MMoENet, "multitask_ext"),
        (["experiment=mmoe", "model=ple"], FOUR, PLENet, "mmoe"),
    ],
)
def test_experiments_compose_and_build(overrides, tasks, net_cls, task_name):
    cfg = _compose(*overrides, "paths.data_dir=/tmp/nowhere")
    assert cfg.task_name == task_name
    assert list(cfg.tasks.names) == tasks
    assert list(cfg.data.pipeline.tasks) == tasks  # the data pipeline reads the same task list
    assert cfg.model.loss.objective == "multitask"
    module = _build(cfg, tasks)
    assert isinstance(module.net, net_cls)
    assert module.tasks == tasks
    assert module(_batch(tasks)).shape == (5, len(tasks))


def test_mmoe_experiment_logs_gate_statistics():
    cfg = _compose("experiment=mmoe")
    assert "gate_statistics" in cfg.callbacks
    cb = hydra.utils.instantiate(cfg.callbacks.gate_statistics)
    assert isinstance(cb, GateStatistics)
    assert cb.stages == ("val", "test")
    # the default callbacks are still there (checkpoint on the optimized metric, early stopping)
    assert {"model_checkpoint", "early_stopping"} <= set(cfg.callbacks)
    assert cfg.callbacks.model_checkpoint.monitor == cfg.optimized_metric


def test_mmoe_model_settings_from_config():
    cfg = _compose("experiment=mmoe", "model.net.n_experts=3", "model.net.expert=[32,16]", "model.net.tower=[8]")
    net = _build(cfg, FOUR).net
    assert len(net.experts) == 3
    assert net.expert_dim == 16
    assert net.gates["save"].n_experts == 3


def test_extended_experiment_per_task_loss_options_resolve():
    cfg = _compose("experiment=multitask_ext")
    loss = OmegaConf.to_container(cfg.model.loss, resolve=True)
    pw = loss.get("pos_weight") or {}
    assert set(pw) <= set(SIX), f"loss.pos_weight names unknown tasks: {sorted(pw)}"
    module = _build(cfg, SIX)  # the ranker validates every per-task mapping against the tasks
    assert module.tasks == SIX


def test_default_model_is_still_shared_bottom():
    cfg = _compose()
    assert cfg.model.net._target_.endswith("SharedBottomNet")
    assert "gate_statistics" not in cfg.callbacks
