"""Checks of the scoring jobs' configs: ``conf/predict.yaml`` (src/predict.py) and ``conf/eval.yaml`` (src/eval.py).

Each builds :class:`mtrank.scoring.config.ScoringConfig` (and for eval :class:`mtrank.calibration.config.CalibrationConfig`
and :class:`mtrank.scoring.config.ReportConfig`), gathering their problems, then runs the one check across them:
calibrators fitted on the evaluated split (:func:`mtrank.scoring.config.check_in_sample`).
"""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig

from mtrank.calibration.config import CalibrationConfig
from mtrank.errors import Problems
from mtrank.scoring.config import FRACTIONS, ReportConfig, ScoringConfig, check_in_sample
from mtrank.validation.compose import build, config_value, resolved

__all__ = ["validate_predict_config", "validate_eval_config"]

_SCORING = {
    "ckpt_path": None,
    "run_dir": None,
    "inputs": None,
    "processed_dir": None,
    "split": "test",
    "batch_size": 1,
    "device": "cpu",
}


def validate_predict_config(cfg: DictConfig) -> None:
    """Check a ``conf/predict.yaml`` config; raise :class:`ConfigError` listing every problem."""
    p = Problems()
    build(p, ScoringConfig.from_mapping, resolved(cfg, _SCORING | dict.fromkeys(FRACTIONS), p), "predict")
    p.raise_if_any("predict")


def validate_eval_config(cfg: DictConfig) -> None:
    """Check a ``conf/eval.yaml`` config; raise :class:`ConfigError` listing every problem."""
    p = Problems()
    scoring = build(p, ScoringConfig.from_mapping, resolved(cfg, _SCORING | {"allow_in_sample": False}, p), "eval")
    calibration = config_value(cfg, "calibration", p)
    if isinstance(calibration, Mapping):
        cal = build(p, CalibrationConfig.from_mapping, calibration)
        if cal is not None and scoring is not None:
            check_in_sample(scoring, calibration.get("method"), cal.fit_split, p)
    report = config_value(cfg, "report", p)
    if isinstance(report, Mapping):
        build(p, ReportConfig.from_mapping, report)
    p.raise_if_any("eval")
