"""The job behind ``src/eval.py``: score a split or raw logs with a run and write the evaluation report."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import polars as pl
import torch
from omegaconf import DictConfig, OmegaConf

from mtrank.scoring.raw_logs import score_logs
from mtrank.scoring.report import write_report
from mtrank.scoring.run import LoadedRun, load_run
from mtrank.scoring.score import (
    ScoreInfo,
    fit_calibration,
    iter_score_split,
)
from mtrank.utils.io import write_text_atomic

log = logging.getLogger(__name__)


def resolve_device(name: str | None) -> str:
    if not name or name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(name)


def _in_sample(cfg: DictConfig, run: LoadedRun, data, split: str) -> str | None:
    """Why the evaluation is in-sample (calibrators fitted on the rows it scores), or None. Refused unless
    ``allow_in_sample=true`` (the explicit ``calibration.fit_split = split`` case is refused by the config check
    already); allowed, it is logged as a warning and the report is labelled."""
    from mtrank.scoring.config import in_sample_message

    if cfg.get("inputs") or data is None or run.calibration.method in (None, "none"):
        return None
    fitted = (run.calibration.info or {}).get("fitted_on") or {}
    if fitted.get("split") != split or Path(str(fitted.get("data", ""))).resolve() != Path(data.directory).resolve():
        return None
    why = (
        f"the {run.calibration.method} calibrators were fitted on the {split} split of {data.directory}, the "
        "rows this evaluation scores"
    )
    if not bool(cfg.get("allow_in_sample", False)):
        own = (cfg.get("calibration") or {}).get("method") in (None, "")
        raise ValueError(
            (
                f"{why} (the run's calibration.json): an in-sample evaluation; evaluate another split (e.g. split=test), "
                "fit calibrators on another split with calibration=<method> calibration.fit_split=<other split>, or set "
                "allow_in_sample=true to evaluate anyway with the report labelled IN-SAMPLE"
            )
            if own
            else in_sample_message(str(fitted.get("split")), split)
        )
    log.warning("IN-SAMPLE evaluation (allow_in_sample=true): %s; the report is labelled so", why)
    return why


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """The eval job: load the run, (optionally) fit calibrators, score, write the report; returns the figures."""
    from mtrank.data.pipeline import ProcessedData
    from mtrank.scoring.config import ScoringConfig
    from mtrank.utils import instantiate as inst
    from mtrank.utils.run_info import resolved_config

    # the run and the data to score: a ConfigError naming the key when they are missing or given twice
    ScoringConfig(**{k: cfg.get(k) for k in ("ckpt_path", "run_dir", "inputs", "processed_dir")})
    target = cfg.get("ckpt_path") or cfg.get("run_dir")
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.get("device"))
    run: LoadedRun = load_run(target, device=device)
    batch_size = int(cfg.get("batch_size", 65_536))
    split = str(cfg.get("split", "test"))
    data = None
    if not cfg.get("inputs"):
        data = ProcessedData.load(cfg.processed_dir) if cfg.get("processed_dir") else run.processed_data()
    cal_cfg = cfg.get("calibration")
    cal_file = run.run_dir / "calibration.json" if (run.run_dir / "calibration.json").exists() else None
    if cal_cfg is not None and cal_cfg.get("method"):
        if cal_cfg.get("downsampling", "correct") != run.calibration.info.get("mode", "correct"):
            log.warning(
                "calibration.downsampling is set at training time; this run used '%s'",
                run.calibration.info.get("mode", "correct"),
            )
        if str(cal_cfg.method) == "none":  # the correction alone
            run.model.set_calibration(None)
            run.calibration = run.model.calibration
            cal = run.calibration
        else:
            fit_data = data if data is not None else run.processed_data()
            cal = fit_calibration(
                run,
                fit_data,
                str(cal_cfg.method),
                split=str(cal_cfg.get("fit_split", "val")),
                batch_size=batch_size,
                device=device,
            )
            log.info("Fitted %s calibrators on the %s split", cal.method, cal_cfg.get("fit_split", "val"))
        cal_file = cal.save(out_dir)
    in_sample = _in_sample(cfg, run, data, split)
    info: ScoreInfo | None = None
    predictions: pl.DataFrame | Iterable[pl.DataFrame]
    if cfg.get("inputs"):
        inputs = cfg.inputs if isinstance(cfg.inputs, str) else list(cfg.inputs)
        predictions, info = score_logs(run, inputs, batch_size=batch_size, device=device)
        source = info.source
    else:  # batch by batch: the report's memory does not grow with the split
        predictions = iter_score_split(run, data, split=split, batch_size=batch_size, device=device)
        source = str(data.directory)
    write_text_atomic(out_dir / "config.yaml", OmegaConf.to_yaml(resolved_config(cfg)))
    loggers = inst.instantiate_loggers(cfg.get("logger"))
    context = {
        "title": f"{run.run_dir.name}, {split if not cfg.get('inputs') else 'raw logs'}"
        + (" (IN-SAMPLE calibration)" if in_sample else ""),
        "in_sample": in_sample,
        "checkpoint": str(run.ckpt_path),
        "data": source,
        "split": split if not cfg.get("inputs") else None,
        "rows": predictions.height if isinstance(predictions, pl.DataFrame) else None,  # else counted by the report
        "calibration_file": str(cal_file) if cal_file else None,
        "oov": info.to_dict() if info is not None else None,
    }
    metrics_cfg = run.model.hparams.get("metrics") or {}
    metrics = write_report(
        predictions,
        run.tasks,
        run.calibration,
        out_dir,
        cfg.get("report"),
        split=split if not cfg.get("inputs") else "logs",
        ece_bins=int(metrics_cfg.get("ece_bins", 15)),
        thresholds=metrics_cfg.get("thresholds"),
        context=context,
        loggers=loggers,
    )
    log.info("Evaluation written to %s", out_dir)
    for t in run.tasks:
        pre = split if not cfg.get("inputs") else "logs"
        if f"{pre}/{t}/ece" in metrics:
            log.info(
                "%s: ece %.4f (raw %.4f)  brier %.5f (raw %.5f)  auroc %.4f",
                t,
                metrics[f"{pre}/{t}/ece"],
                metrics[f"{pre}/{t}/ece_raw"],
                metrics[f"{pre}/{t}/brier"],
                metrics[f"{pre}/{t}/brier_raw"],
                metrics[f"{pre}/{t}/auroc"],
            )
    return metrics
