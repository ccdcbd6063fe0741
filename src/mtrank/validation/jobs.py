"""Checks of the scoring jobs' configs: ``conf/predict.yaml`` (src/predict.py) and ``conf/eval.yaml`` (src/eval.py)."""

from __future__ import annotations

import re

from omegaconf import DictConfig

from mtrank.validation.errors import Problems
from mtrank.validation.lookup import SPLITS, UNRESOLVED, check_one_of, config_value, is_number
from mtrank.validation.train import check_calibration, check_report

__all__ = ["validate_predict_config", "validate_eval_config"]

_DEVICE = re.compile(r"^(cpu|auto|mps|cuda(:\d+)?)$")


def _check_scoring(cfg: DictConfig, p: Problems) -> None:
    """What predict and eval share: the run, the data to score, split, batch size, device."""
    ckpt, run_dir = config_value(cfg, "ckpt_path", p), config_value(cfg, "run_dir", p)
    if not ckpt and not run_dir:
        p.add(
            "ckpt_path",
            "ckpt_path is not set: give ckpt_path=<checkpoint file or training run folder> (or run_dir=<run folder>)",
        )
    elif ckpt and run_dir:
        p.add("ckpt_path", f"ckpt_path = {ckpt} and run_dir = {run_dir} are both set: give one of them")
    if config_value(cfg, "inputs", p) and config_value(cfg, "processed_dir", p):
        p.add("inputs", "inputs (raw logs) and processed_dir (processed data) are both set: give one of them")
    check_one_of(p, "split", config_value(cfg, "split", p, default="test"), SPLITS)
    bs = config_value(cfg, "batch_size", p, default=1)
    if bs is not UNRESOLVED and (not is_number(bs) or not float(bs).is_integer() or bs < 1):
        p.add("batch_size", f"batch_size = {bs!r}: expected an integer ≥ 1")
    dev = config_value(cfg, "device", p, default="cpu")
    if dev is not UNRESOLVED and dev is not None and not _DEVICE.match(str(dev)):
        p.add("device", f"device = {dev!r}: expected one of [cpu, cuda, cuda:<index>, mps, auto]")


def _fraction(p: Problems, cfg: DictConfig, key: str) -> None:
    v = config_value(cfg, key, p)
    if v is None or v is UNRESOLVED:
        return
    if not is_number(v) or not 0.0 <= float(v) <= 1.0:
        p.add(key, f"{key} = {v!r}: expected a fraction in [0, 1] of the scored rows (or null)")


def validate_predict_config(cfg: DictConfig) -> None:
    """Check a ``conf/predict.yaml`` config; raise :class:`ConfigError` listing every problem."""
    p = Problems()
    _check_scoring(cfg, p)
    _fraction(p, cfg, "warn_unseen_fraction")
    _fraction(p, cfg, "max_unseen_fraction")
    _fraction(p, cfg, "warn_out_of_range_fraction")
    p.raise_if_any("predict")


def in_sample_message(fit_split: str, split: str) -> str:
    return (
        f"calibration.fit_split = {fit_split} and split = {split}: the calibrators would be fitted on the split "
        "they are evaluated on, an in-sample evaluation (ECE near 0, AUROC inflated by isotonic ties); fit on "
        f"another split (e.g. calibration.fit_split=val split=test), or set allow_in_sample=true to evaluate "
        "anyway with the report labelled IN-SAMPLE"
    )


def _check_in_sample(cfg: DictConfig, p: Problems) -> None:
    """An evaluation whose calibrators are fitted on the evaluated split is refused unless ``allow_in_sample``."""
    method = config_value(cfg, "calibration.method", p)
    if method in (None, UNRESOLVED, "none") or config_value(cfg, "inputs", p):
        return
    fit_split = config_value(cfg, "calibration.fit_split", p, default="val")
    split = config_value(cfg, "split", p, default="test")
    allow = config_value(cfg, "allow_in_sample", p, default=False)
    if allow not in (True, False, UNRESOLVED):
        p.add("allow_in_sample", f"allow_in_sample = {allow!r}: expected true or false")
    elif fit_split == split and allow is False:
        p.add("calibration.fit_split", in_sample_message(str(fit_split), str(split)))


def validate_eval_config(cfg: DictConfig) -> None:
    """Check a ``conf/eval.yaml`` config; raise :class:`ConfigError` listing every problem."""
    p = Problems()
    _check_scoring(cfg, p)
    check_calibration(cfg, p, None)
    _check_in_sample(cfg, p)
    check_report(cfg, p)
    p.raise_if_any("eval")
