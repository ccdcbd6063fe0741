"""mtrank.training.checkpoints: which checkpoint a run resumes from and which folder it writes to; the SLURM launcher config."""

from __future__ import annotations

import os
import time

import pytest

from helpers import compose_config
from mtrank.training.checkpoints import resolve_ckpt_path, resume_run_dir


def _last(runs, name, age):
    ckpt = runs / name / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    t = time.time() - age
    os.utime(ckpt, (t, t))
    return ckpt


def test_last_is_the_newest_last_checkpoint_of_the_task_and_its_folder(tmp_path):
    runs = tmp_path / "logs" / "mt" / "runs"
    _last(runs, "2026-01-02_00-00-00", age=100)
    newest = _last(runs, "2026-01-01_00-00-00", age=10)  # by time written, not by name
    assert resolve_ckpt_path("last", tmp_path / "logs", "mt") == str(newest)
    assert resume_run_dir(str(runs), "last", "new") == str(newest.parent.parent)
    assert resume_run_dir(str(runs), None, "new") == str(runs / "new")
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=last: no .*other/runs/\*/checkpoints/last.ckpt"):
        resolve_ckpt_path("last", tmp_path / "logs", "other")
    assert resume_run_dir(str(tmp_path / "logs" / "other" / "runs"), "last", "new").endswith("new")


def test_auto_resumes_only_from_the_run_folders_own_checkpoint(tmp_path):
    run = tmp_path / "multirun" / "3"
    assert resolve_ckpt_path("auto", tmp_path, "mt", run) is None  # first launch: from scratch
    own = _last(tmp_path / "multirun", "3", age=0)
    assert resolve_ckpt_path("auto", tmp_path, "mt", run) == str(own)  # requeued: continue


def test_explicit_path_must_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt_path=.*nope.ckpt does not exist"):
        resolve_ckpt_path(str(tmp_path / "nope.ckpt"), tmp_path, "mt")
    assert resolve_ckpt_path(None, tmp_path, "mt") is None


def test_slurm_launcher_takes_its_layout_from_the_trainer():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="optional extra: pip install -e .[slurm]")
    cfg = compose_config("train", ["hydra/launcher=slurm", "experiment=multitask", "trainer=ddp",
                                   "trainer.num_nodes=2", "trainer.devices=8", "ckpt_path=auto"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 8, 8)
    assert launcher.max_num_timeout > 0


def test_a_checkpoint_write_that_dies_leaves_the_previous_file(tmp_path, monkeypatch):
    import torch

    from mtrank.training.checkpoints import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def dies_midway(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpoint")
        raise KeyboardInterrupt  # the process is stopped during the write

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left either
