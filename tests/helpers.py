"""Hydra compose helpers for tests (configs are composed the way src/*.py entry points compose them)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

CONF = str(Path(__file__).resolve().parents[1] / "conf")

# a few-second training run on a small simulated log, quiet (the test files add their own epochs and extras)
FAST_RUN = [
    "debug=fast",
    "data.simulator.n_impressions=12000",
    "data.simulator.n_files=2",
    "data.batch_size=512",
    "data.eval_batch_size=4096",
    "trainer.enable_progress_bar=false",
    "callbacks.throughput=null",
    "callbacks.progress_bar=null",
]


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
