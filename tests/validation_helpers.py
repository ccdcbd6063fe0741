"""One small trained run shared by the validation tests (tests/test_corpus_predict.py and any other module that
asks): trained once per pytest session in its base temp folder, reused when it is already there."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import FAST_RUN, compose_config

# MMoE with gate statistics, learned (uncertainty) task weights and Platt calibrators: every optional metric
# group RankingModule and the callbacks log, so the validator's metric names can be compared with a real run
RUN_OVERRIDES = [
    "experiment=mmoe",
    *FAST_RUN,
    "data.simulator.n_impressions=8000",
    "model.net.n_experts=2",
    "model.net.expert=[16]",
    "model.net.tower=[8]",
    "model.net.embedding_dim=4",
    "loss.task_weighting=uncertainty",
    "calibration=platt",
    "trainer.max_epochs=1",
    "logger=csv",
    "report.ks=[5]",
    "report.n_bins=8",
]


def trained_run(tmp_path_factory) -> tuple[Path, object, dict[str, float]]:
    """(run folder, its config, the metrics it returned)."""
    base = tmp_path_factory.getbasetemp() / "validation_run"
    cfg = compose_config("train", RUN_OVERRIDES, base)
    done = base / "run" / "metrics.json"
    if done.exists():
        metrics = json.loads(done.read_text())["metrics"]
    else:
        from mtrank.jobs.train import train

        metrics = train(cfg)
    return base / "run", cfg, metrics
