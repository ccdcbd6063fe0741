"""Every experiment composes, and its objects can be built from the config."""

from pathlib import Path

import hydra
import pytest
from omegaconf import OmegaConf

from helpers import CONF, compose_config

EXPERIMENTS = sorted(p.stem for p in (Path(CONF) / "experiment").glob("*.yaml"))


def test_there_are_experiments():
    assert {"multitask", "binary"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_resolves(experiment, tmp_path):
    cfg = compose_config("train", [f"experiment={experiment}"], tmp_path)
    OmegaConf.resolve(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))  # interpolations resolve
    assert cfg.task_name and cfg.task_name != "train", "an experiment names its runs"
    for group in ("data", "model", "trainer"):
        assert "_target_" in cfg[group], f"{experiment}: {group} has no _target_"
    assert cfg.tasks.names, f"{experiment}: no tasks"
    # the trainer and callbacks can be built as configured
    hydra.utils.instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    for cb in (cfg.get("callbacks") or {}).values():
        hydra.utils.instantiate(cb)


def test_multitask_and_binary_differ_only_where_they_should(tmp_path):
    mt = compose_config("train", ["experiment=multitask"], tmp_path)
    bi = compose_config("train", ["experiment=binary"], tmp_path)
    assert mt.loss.objective == "multitask" and bi.loss.objective == "binary"
    assert mt.tasks.names == bi.tasks.names == ["save", "click", "long_click", "closeup"]
    assert set(bi.loss.importance_weights) == set(bi.tasks.names)
    assert OmegaConf.to_container(mt.data) == OmegaConf.to_container(bi.data)


def test_wandb_logger_is_offline_by_default(tmp_path):
    cfg = compose_config("train", ["logger=wandb"], tmp_path)
    assert cfg.logger.wandb.offline is True
