"""mtrank.training.checkpoints: which checkpoint a run resumes from and which folder it writes to; the SLURM launcher config."""

from __future__ import annotations

import os
import time

import pytest
from omegaconf import OmegaConf

from helpers import compose_config
from mtrank.training.checkpoints import resolve_ckpt_path, resume_run_dir
from mtrank.training.resume import (
    ResumeError,
    comparable,
    config_differences,
    select_run,
)
from mtrank.utils.run_info import resolved_config


def _last(runs, name, age):
    ckpt = runs / name / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    t = time.time() - age
    os.utime(ckpt, (t, t))
    return ckpt


def _run(runs, name, age, cfg, finished=False):
    ckpt = _last(runs, name, age)
    (ckpt.parent.parent / "config.yaml").write_text(OmegaConf.to_yaml(resolved_config(cfg)))
    if finished:
        (ckpt.parent.parent / "metrics.json").write_text("{}")
    return ckpt.parent.parent


def test_last_is_the_unfinished_run_with_the_same_config_not_the_newest(tmp_path):
    cfg = compose_config("train", ["ckpt_path=last"], tmp_path)
    other = compose_config("train", ["ckpt_path=last", "trainer.max_epochs=1"], tmp_path)
    runs = tmp_path / "logs" / "mt" / "runs"
    a = _run(runs, "2026-01-01_00-00-00", age=100, cfg=cfg)  # killed
    _run(runs, "2026-01-02_00-00-00", age=10, cfg=other, finished=True)  # newer, finished, other config
    assert select_run(runs, cfg) == a
    assert resume_run_dir(str(runs), "last", "new", cfg) == str(a)
    assert resolve_ckpt_path("last", tmp_path / "logs", "mt", tmp_path / "elsewhere", cfg=cfg) == str(
        a / "checkpoints" / "last.ckpt"
    )
    assert resume_run_dir(str(runs), None, "new", cfg) == str(runs / "new")
    # the same config on other data: that run (its data fingerprint is checked when it resumes)
    assert select_run(runs, compose_config("train", ["ckpt_path=last", "data.simulator.seed=5"], tmp_path)) == a
    # b's config: b has finished, nothing to resume
    with pytest.raises(ResumeError, match=r"(?s)have finished.*2026-01-02_00-00-00  last.ckpt .*finished \(metrics"):
        select_run(runs, other)
    # two unfinished runs with the same config: which one is meant is not known
    _run(runs, "2026-01-03_00-00-00", age=5, cfg=cfg)
    with pytest.raises(ResumeError, match=r"2 unfinished runs have this config"):
        select_run(runs, cfg)
    with pytest.raises(FileNotFoundError, match=r"ckpt_path=last: no .*other/runs/\*/checkpoints/last.ckpt"):
        resolve_ckpt_path("last", tmp_path / "logs", "other", cfg=cfg)
    assert resume_run_dir(str(tmp_path / "logs" / "other" / "runs"), "last", "new", cfg).endswith("new")


def test_the_comparison_leaves_out_paths_and_what_may_change(tmp_path):
    cfg = compose_config("train", [], tmp_path)
    moved = compose_config(
        "train",
        ["trainer.enable_progress_bar=false", "callbacks.early_stopping.patience=9", "data.num_workers=2", "tags=[x]"],
        tmp_path / "elsewhere",
    )
    saved = {k: v for k, v in comparable(cfg).items()}
    assert "paths.log_dir" not in saved and "data.raw_dir" in saved  # the key stays, its path value does not count
    assert config_differences(comparable(moved), saved) == []
    changed = compose_config("train", ["model.optimizer.lr=0.5"], tmp_path)
    assert config_differences(comparable(changed), saved) == [("model.optimizer.lr", 0.002, 0.5)]


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
    cfg = compose_config(
        "train",
        [
            "hydra/launcher=slurm",
            "experiment=multitask",
            "trainer=ddp",
            "trainer.num_nodes=2",
            "trainer.devices=8",
            "ckpt_path=auto",
        ],
    )
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
