"""Shared pieces of the benchmarks in scripts/."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[3]


def peak_rss_mb() -> float:
    """Peak resident set size of this process (MB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def default_pipeline(inputs: list[str], beta: float | None = None, tasks: list[str] | None = None) -> dict:
    """The pipeline mapping of ``conf/data/simulated.yaml`` with concrete inputs (no Hydra needed)."""
    cfg = OmegaConf.load(ROOT / "conf" / "data" / "simulated.yaml")
    pipe = OmegaConf.to_container(cfg.pipeline, resolve=False)
    pipe["inputs"] = inputs
    pipe["tasks"] = tasks or list(OmegaConf.load(ROOT / "conf" / "tasks" / "related_products.yaml").names)
    if beta is not None:
        pipe["downsample"]["beta"] = beta
    return pipe
