"""Shared pieces of the benchmarks in scripts/."""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[3]


def peak_rss_mb() -> float:
    """Peak resident set size of this process (MB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def cpu_count() -> int:
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_seconds(pids: Iterable[int] = ()) -> float:
    """User + system CPU seconds used so far by this process (all its threads) and by the live processes ``pids``
    (e.g. DataLoader workers), read from ``/proc/<pid>/stat`` in clock ticks; where there is no ``/proc``, those
    processes count as 0."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime: fields 14 and 15 of stat
    return total


def default_pipeline(inputs: list[str], beta: float | None = None, tasks: list[str] | None = None) -> dict:
    """The pipeline mapping of ``conf/data/simulated.yaml`` with concrete inputs (no Hydra needed)."""
    cfg = OmegaConf.load(ROOT / "conf" / "data" / "simulated.yaml")
    pipe = OmegaConf.to_container(cfg.pipeline, resolve=False)
    pipe["inputs"] = inputs
    pipe["tasks"] = tasks or list(OmegaConf.load(ROOT / "conf" / "tasks" / "related_products.yaml").names)
    if beta is not None:
        pipe["downsample"]["beta"] = beta
    return pipe
