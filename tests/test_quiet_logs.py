"""Run logs without warnings a user cannot act on (mtrank.utils.log_filters), and one switch for the progress bar."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

from pytorch_lightning.callbacks import ProgressBar

from helpers import FAST_RUN, compose_config
from mtrank.utils.instantiate import instantiate_callbacks
from mtrank.utils.log_filters import filter_known_noise

ROOT = Path(__file__).resolve().parents[1]
NOISE = ("LeafSpec", "flops_per_batch", "Tip: For seamless")


def test_known_noise_is_filtered_and_other_warnings_kept():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filter_known_noise()
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and "
            "treespec.is_leaf()` instead.",
            FutureWarning,
        )
        warnings.warn(
            "When using the `ThroughputMonitor`, you need to define a `flops_per_batch` attribute or "
            "property in RankingModule to compute the FLOPs.",
            UserWarning,
        )
        warnings.warn("FLOPs not found for 'NVIDIA H200'", UserWarning)
        warnings.warn("The dataloader does not have many workers which may be a bottleneck.", UserWarning)
        warnings.warn("`isinstance(x, Foo)` is deprecated", FutureWarning)
    assert [str(w.message) for w in caught] == [
        "The dataloader does not have many workers which may be a bottleneck.",
        "`isinstance(x, Foo)` is deprecated",
    ]


def test_lightning_tips_are_dropped_other_info_kept(caplog):
    filter_known_noise()
    lg = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    with caplog.at_level(logging.INFO):
        lg.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        lg.info("💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels]")
        lg.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]


def test_progress_bar_callback_follows_the_trainer_switch(tmp_path):
    cfg = compose_config("train", ["trainer.enable_progress_bar=false"], tmp_path)
    assert cfg.callbacks.progress_bar._target_.endswith("TQDMProgressBar")
    names = [type(cb).__name__ for cb in instantiate_callbacks(cfg.callbacks, progress_bar=False)]
    assert "TQDMProgressBar" not in names and "ModelCheckpoint" in names
    assert any(isinstance(cb, ProgressBar) for cb in instantiate_callbacks(cfg.callbacks))


def test_a_default_training_log_is_quiet_and_the_bar_switch_works_alone(tmp_path):
    """trainer.enable_progress_bar=false alone (callbacks.progress_bar and the ThroughputMonitor kept): the run
    trains (once: Lightning refused the TQDMProgressBar callback after preprocessing) and neither its console nor
    its log file carries the LeafSpec deprecation, the FLOPs warning or the litlogger tip."""
    overrides = [o for o in FAST_RUN if o not in ("callbacks.throughput=null", "callbacks.progress_bar=null")]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(PROJECT_ROOT=str(ROOT), WANDB_MODE="offline", OMP_NUM_THREADS="1")
    run = tmp_path / "run"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            *overrides,
            "report.enabled=false",
            f"paths.log_dir={tmp_path / 'logs'}",
            f"paths.data_dir={tmp_path / 'data'}",
            f"hydra.run.dir={run}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    log_file = next(run.glob("*.log")).read_text()
    assert "Leaving out callbacks.progress_bar <pytorch_lightning.callbacks.TQDMProgressBar>" in log_file
    assert "Instantiated throughput" in log_file  # the monitor runs; only its FLOPs warning is gone
    for text in NOISE:
        assert text not in r.stdout and text not in r.stderr and text not in log_file, text
