"""What a run folder records about itself: resolved config, package versions, data fingerprint."""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtrank.utils.io import write_json_atomic, write_text_atomic

PACKAGES = (
    "mtrank",
    "torch",
    "pytorch-lightning",
    "torchmetrics",
    "hydra-core",
    "omegaconf",
    "polars",
    "numpy",
    "ax-platform",
    "wandb",
    "scikit-learn",
    "lightgbm",
)


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = None
    return out


def resolved_config(cfg: DictConfig) -> dict:
    """The run's config as plain data, interpolations resolved (Hydra's own node left out)."""
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def write_run_info(output_dir: Path | str, cfg: DictConfig, data_metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``config.yaml`` (resolved) and ``run_info.json``: package versions and the data fingerprint (sha256
    of the content of every input file, and the processed data's key, which hashes that and the data config)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.yaml", OmegaConf.to_yaml(resolved_config(cfg)))
    info: dict[str, Any] = {"versions": package_versions()}
    if data_metadata is not None:
        info["data"] = {
            "processed_key": data_metadata.get("key"),
            "fingerprint": {
                "inputs": (data_metadata.get("source") or {}).get("content_sha256"),
                "processed_key": data_metadata.get("key"),
            },
            "source": data_metadata.get("source"),
            "beta": data_metadata.get("beta"),
            "splits": {s: v["rows"] for s, v in data_metadata.get("splits", {}).items()},
        }
    write_json_atomic(out / "run_info.json", info, default=str)


def write_hydra_record(output_dir: Path | str, cfg: DictConfig) -> Path | None:
    """``<output_dir>/.hydra/{config,hydra,overrides}.yaml``, as Hydra writes them (the job's config unresolved,
    Hydra's own config, the command-line overrides); written by the training job itself (``hydra.output_subdir``
    is null in ``conf/hydra/train.yaml``) so that a refused resume writes nothing. None outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.instance().cfg
    out = Path(output_dir) / ".hydra"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.yaml", OmegaConf.to_yaml(cfg))
    write_text_atomic(out / "hydra.yaml", OmegaConf.to_yaml(hydra_cfg))
    write_text_atomic(out / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task))
    return out
