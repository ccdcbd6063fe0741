"""The crash tests' tools: a callback that, at a given optimizer step, writes a marker file and waits to be killed,
and the helpers that run ``src/train.py`` in a subprocess and SIGKILL it there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytorch_lightning as pl

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


class PauseAtStep(pl.Callback):
    def __init__(self, step: int, marker: str):
        self.step, self.marker = int(step), Path(marker)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.marker.write_text(str(self.step))
            time.sleep(3600)  # the test sends SIGKILL now


def train_cmd(run: list[str], task: str, data_dir: Path, log_dir: Path, *extra: str) -> list[str]:
    """``src/train.py`` with the overrides ``run``, the task name, the data and log folders, then ``extra``."""
    return [
        sys.executable,
        str(ROOT / "src" / "train.py"),
        *run,
        f"task_name={task}",
        f"paths.data_dir={data_dir}",
        f"paths.log_dir={log_dir}",
        *extra,
    ]


def train_env() -> dict[str, str]:
    """The environment of a training subprocess: this folder importable (for the callback), one thread, W&B
    offline."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
    }


def kill_at_step(cmd: list[str], step: int, marker: Path) -> None:
    """Run ``cmd`` until optimizer step ``step`` (``marker`` is written there), then SIGKILL it."""
    proc = subprocess.Popen(
        [
            *cmd,
            "+callbacks.pause._target_=killing.PauseAtStep",
            f"+callbacks.pause.step={step}",
            f"+callbacks.pause.marker={marker}",
        ],
        env=train_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 600
    while not marker.exists():
        assert proc.poll() is None, f"the run ended before step {step}: {proc.stderr.read()[-3000:]}"
        assert time.time() < deadline, f"the run never reached step {step}, where it was to be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
