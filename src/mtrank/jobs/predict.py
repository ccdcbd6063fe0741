"""The job behind ``src/predict.py``: score a split of a run's data or raw logs, write ``predictions.parquet``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl
from omegaconf import DictConfig

from mtrank.data.pipeline import ProcessedData
from mtrank.scoring.predict import write_parquet_atomic
from mtrank.scoring.raw_logs import WARN_OUT_OF_RANGE_FRACTION, WARN_UNSEEN_FRACTION, score_logs
from mtrank.scoring.run import load_run, resolve_device
from mtrank.scoring.score import PREDICTIONS_FILE, ScoreInfo, check_finite_predictions, score_split

log = logging.getLogger(__name__)


def predict(cfg: DictConfig) -> pl.DataFrame:
    """The predict job: score ``inputs`` (or a split of processed data) and write the predictions Parquet and
    ``predict_info.json`` (rows, OOV counts, checkpoint, calibration)."""
    from mtrank.utils.io import write_text_atomic
    from mtrank.validation import validate_predict_config

    validate_predict_config(cfg)  # ConfigError naming the key (ckpt_path, split, max_unseen_fraction, ...)
    target = cfg.get("ckpt_path") or cfg.get("run_dir")
    device = resolve_device(cfg.get("device"))
    batch_size = int(cfg.get("batch_size", 65_536))
    run = load_run(target, calibration=cfg.get("calibration_file"), device=device)
    info: ScoreInfo | None = None
    if cfg.get("inputs"):
        inputs = [cfg.inputs] if isinstance(cfg.inputs, str) else list(cfg.inputs)
        warn = cfg.get("warn_unseen_fraction")
        warn_range = cfg.get("warn_out_of_range_fraction")
        frame, info = score_logs(
            run,
            inputs,
            batch_size=batch_size,
            device=device,
            warn_unseen_fraction=WARN_UNSEEN_FRACTION if warn is None else float(warn),
            max_unseen_fraction=cfg.get("max_unseen_fraction"),
            warn_out_of_range_fraction=WARN_OUT_OF_RANGE_FRACTION if warn_range is None else float(warn_range),
        )
    else:
        data = ProcessedData.load(cfg.processed_dir) if cfg.get("processed_dir") else run.processed_data()
        frame = score_split(run, data, split=str(cfg.get("split", "test")), batch_size=batch_size, device=device)
        info = ScoreInfo(
            rows=frame.height,
            has_labels=any(c.startswith("label_") for c in frame.columns),
            has_p_true=any(c.startswith("p_true_") for c in frame.columns),
            source=f"{data.directory} [{cfg.get('split', 'test')}]",
        )
    check_finite_predictions(frame, run.tasks, info.source)  # never write a NaN probability
    out_dir = Path(cfg.paths.output_dir)
    output = Path(cfg.output) if cfg.get("output") else out_dir / PREDICTIONS_FILE
    write_parquet_atomic(frame, output)
    summary = {
        "predictions": str(output),
        "checkpoint": str(run.ckpt_path),
        "calibration": {"method": run.calibration.method, "betas": run.calibration.betas},
        **info.to_dict(),
        "mean_p": {t: float(frame[f"p_{t}"].mean()) for t in run.tasks} if frame.height else {},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "predict_info.json", json.dumps(summary, indent=2))
    unseen = sum(info.unseen.values())
    log.info(
        "Wrote %d predictions to %s (%s); %d categorical value(s) mapped to the OOV bucket",
        frame.height,
        output,
        ", ".join(f"p_{t}" for t in run.tasks),
        unseen,
    )
    return frame
