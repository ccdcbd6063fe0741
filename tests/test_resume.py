"""Crash-safe training: a run killed with SIGKILL mid-epoch and resumed with ``ckpt_path=last`` ends with the same
metrics as the uninterrupted run; the same seed and config give the same metrics (CPU)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch

from helpers import FAST_RUN
from killing import kill_at_step, train_cmd, train_env

# ~1.8k train rows after downsampling → 14 batches of 128 per epoch, 3 epochs
RUN = [
    *FAST_RUN,
    "data.batch_size=128",
    "trainer.max_epochs=3",
    "callbacks.early_stopping=null",
    "report.enabled=false",
    # dropout, so that the test also checks the random generators are restored
    "model.net.dropout=0.2",
]


def _cmd(tmp: Path, task: str, *extra: str) -> list[str]:
    return train_cmd(RUN, task, tmp / "data", tmp / "logs", *extra)


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, env=train_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _metrics(tmp: Path, task: str) -> tuple[Path, dict[str, float]]:
    runs = list((tmp / "logs" / task / "runs").glob("*/metrics.json"))
    assert len(runs) == 1, runs
    return runs[0].parent, json.loads(runs[0].read_text())["metrics"]


def _comparable(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if not k.startswith("time/")}


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """The uninterrupted run, and the folder whose data cache the other runs share."""
    tmp = tmp_path_factory.mktemp("resume")
    _run(_cmd(tmp, "whole"))
    return tmp, _metrics(tmp, "whole")[1]


@pytest.mark.parametrize(
    "kill_step, every, saved_step, stream_state",
    [
        # killed at step 19 (epoch 2 = steps 15-28); last.ckpt of step 16: 2 of its batches done, 17-19 redone
        (19, 4, 16, {"epoch": 1, "batches_done": 2}),
        # checkpoints at epoch ends only: killed at step 20, resumed from the end of the first epoch (step 14)
        (20, 0, 14, {"epoch": 0, "batches_done": 14}),
    ],
    ids=["mid_epoch", "epoch_end"],
)
def test_sigkill_then_resume_matches_uninterrupted_run(whole, kill_step, every, saved_step, stream_state):
    tmp, expected = whole
    task = f"killed_{kill_step}"
    every_n = f"callbacks.resume_checkpoint.every_n_train_steps={every}"
    marker = tmp / f"paused_{kill_step}"
    kill_at_step(_cmd(tmp, task, every_n), kill_step, marker)
    run_dir = next((tmp / "logs" / task / "runs").iterdir())
    assert not (run_dir / "metrics.json").exists()
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == saved_step
    assert last["RankingDataModule"] == stream_state

    _run(_cmd(tmp, task, every_n, "ckpt_path=last"))
    resumed_dir, resumed = _metrics(tmp, task)
    assert resumed_dir == run_dir  # resumed in the killed run's folder
    assert set(resumed) == set(expected)
    assert _comparable(resumed) == _comparable(expected)
    # the resumed part logs to its own CSV beside the killed part's
    assert (run_dir / "csv" / "version_0" / "metrics.csv").exists()
    assert (run_dir / "csv" / "version_1" / "metrics.csv").exists()


@pytest.mark.parametrize("num_workers", [0])
def test_same_seed_same_metrics_and_run_records(tmp_path, num_workers):
    extra = (f"data.num_workers={num_workers}", "trainer.max_epochs=1")
    _run(_cmd(tmp_path, "first", *extra))
    _run(_cmd(tmp_path, "second", *extra))
    first_dir, first = _metrics(tmp_path, "first")
    _, second = _metrics(tmp_path, "second")
    assert _comparable(first) == _comparable(second)
    _run(_cmd(tmp_path, "other_seed", *extra, "seed=7"))
    _, other = _metrics(tmp_path, "other_seed")
    assert other["val/mean/auroc"] != first["val/mean/auroc"]
    # the run folder records the resolved config, the versions and the data fingerprint
    info = json.loads((first_dir / "run_info.json").read_text())
    assert info["versions"]["torch"] and info["versions"]["mtrank"]
    assert info["data"]["fingerprint"]["inputs"]
    assert (first_dir / "config.yaml").read_text().count("n_impressions: 12000") == 1
