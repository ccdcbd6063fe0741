"""``src/train.py`` in a subprocess, so that its Hydra application is its own: the runs an A/B simulation compares
(:mod:`mtrank.online.runs`) and the response model of a fitted world (:mod:`mtrank.worlds.response`)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["ROOT", "train_subprocess"]

ROOT = Path(__file__).resolve().parents[3]


def train_subprocess(
    experiment: str, overrides: Sequence[str], data_dir: str | Path, run_dir: Path, log_file: Path
) -> None:
    """``python src/train.py experiment=<experiment> paths.data_dir=<data_dir> hydra.run.dir=<run_dir> …``."""
    cmd = [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        f"experiment={experiment}",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={run_dir.parent}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    log.info("Training %s: %s (log: %s)", experiment, " ".join(cmd[1:]), log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PROJECT_ROOT": str(ROOT)}
    with open(log_file, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env)
    if proc.returncode != 0:
        tail = log_file.read_text()[-3000:]
        raise RuntimeError(f"training experiment={experiment} failed (exit {proc.returncode}); log {log_file}:\n{tail}")
