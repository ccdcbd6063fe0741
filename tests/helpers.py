"""Test helpers: Hydra compose (configs are composed the way src/*.py entry points compose them) and small
feature specs and batches for network tests."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from mtrank.data.spec import CategoricalFeature, FeatureSpec

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


def make_spec(n_cat: int = 3, n_num: int = 2, tasks: tuple[str, ...] = ("click", "save")) -> FeatureSpec:
    """``n_cat`` categoricals (cardinalities 5, 8, 11, ...), ``n_num`` numerics, ``tasks``."""
    cats = tuple(CategoricalFeature(f"c{i}", 5 + 3 * i) for i in range(n_cat))
    return FeatureSpec(categorical=cats, numeric=tuple(f"n{i}" for i in range(n_num)), tasks=tuple(tasks))


def make_batch(spec: FeatureSpec, B: int = 7, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random batch of ``B`` rows for ``spec`` (about 30 % positive labels)."""
    g = torch.Generator().manual_seed(seed)
    cat = (
        torch.stack([torch.randint(0, f.cardinality, (B,), generator=g) for f in spec.categorical], dim=1)
        if spec.n_categorical
        else torch.zeros(B, 0, dtype=torch.long)
    )
    return {
        "categorical": cat,
        "numeric": torch.randn(B, spec.n_numeric, generator=g),
        "labels": (torch.rand(B, spec.n_tasks, generator=g) < 0.3).float(),
    }
