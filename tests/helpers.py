"""Hydra compose helpers for tests (configs are composed the way src/*.py entry points compose them)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def compose_config(config_name: str, overrides: list[str], tmp_path: Path | None = None) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=CONF):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    if tmp_path is not None:
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / "run")
            cfg.paths.log_dir = str(tmp_path / "logs")
            cfg.paths.data_dir = str(tmp_path / "data")
    return cfg
