"""Fast end-to-end training through Hydra compose: the same code path as `python src/train.py`."""

import json
import math

import pytest

from helpers import FAST_RUN, compose_config
from mtrank.jobs.train import train

FAST = [*FAST_RUN, "trainer.max_epochs=2", "logger=csv"]


@pytest.mark.parametrize("experiment", ["multitask", "binary"])
def test_train_end_to_end(experiment, tmp_path):
    cfg = compose_config("train", [f"experiment={experiment}", *FAST], tmp_path)
    metrics = train(cfg)
    tasks = list(cfg.tasks.names)
    for stage in ("val", "test"):
        for t in tasks:
            for m in ("auroc", "pr_auc", "ece", "brier", "logloss", "oracle_auroc", "n_pos"):
                key = f"{stage}/{t}/{m}"
                assert key in metrics and math.isfinite(metrics[key]), key
    run = tmp_path / "run"
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["metrics"]["val/mean/auroc"] == pytest.approx(metrics["val/mean/auroc"])
    assert summary["best_checkpoint"] and (run / "checkpoints" / "last.ckpt").exists()
    assert (run / "config.yaml").exists() and (run / "csv" / "version_0" / "metrics.csv").exists()
    info = json.loads((run / "run_info.json").read_text())
    assert info["versions"]["torch"] and info["data"]["processed_key"]
    # the model learns something: better than chance on the most frequent type
    assert metrics["test/click/auroc"] > 0.55


def test_uncertainty_weighting_trains_and_logs_task_weights(tmp_path):
    cfg = compose_config(
        "train",
        ["experiment=multitask", "loss.task_weighting=uncertainty", *FAST, "trainer.log_every_n_steps=1"],
        tmp_path,
    )
    train(cfg)
    import polars as pl

    csv = pl.read_csv(tmp_path / "run" / "csv" / "version_0" / "metrics.csv")
    weights = csv.select([c for c in csv.columns if c.endswith("/task_weight")]).drop_nulls()
    assert weights.width == 4 and weights.height >= 2
    # the learned weights move away from their initial value of 1
    assert (weights.tail(1).to_numpy() != 1.0).all()


def test_resume_from_last_checkpoint(tmp_path):
    cfg = compose_config("train", ["experiment=multitask", *FAST, "trainer.max_epochs=1", "test=false"], tmp_path)
    train(cfg)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last.exists()
    cfg2 = compose_config(
        "train", ["experiment=multitask", *FAST, "trainer.max_epochs=2", "test=false", f"ckpt_path={last}"], tmp_path
    )
    cfg2.paths.output_dir = str(tmp_path / "run2")
    metrics = train(cfg2)
    assert "val/mean/auroc" in metrics


def test_compiled_network_trains_and_keeps_checkpoint_names(tmp_path):
    """model.compile compiles the network in place (here with the eager backend: the plumbing, not inductor),
    so the checkpoint's parameter names are those of an uncompiled model."""
    import torch

    cfg = compose_config(
        "train",
        ["experiment=multitask", *FAST, "trainer.max_epochs=1", "test=false", "model.compile={backend: eager}"],
        tmp_path,
    )
    train(cfg)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["hyper_parameters"]["compile"] == {"backend": "eager"}
    assert not any("_orig_mod" in k for k in state["state_dict"])
