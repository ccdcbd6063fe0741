"""The predictions frame of a split or of raw logs with a run, written atomically."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from mtrank.calibration.run_calibration import Calibration
from mtrank.data.pipeline import ProcessedData
from mtrank.scoring.raw_logs import WARN_UNSEEN_FRACTION, score_logs
from mtrank.scoring.run import LoadedRun, load_run
from mtrank.scoring.score import score_split
from mtrank.utils.io import atomic_write

log = logging.getLogger(__name__)


def predict_frame(
    run: str | Path | LoadedRun,
    *,
    split: str = "test",
    processed_dir: str | Path | None = None,
    inputs: str | Path | Sequence[str | Path] | None = None,
    calibration: Calibration | str | Path | None = None,
    batch_size: int = 65_536,
    device: str = "cpu",
    warn_unseen_fraction: float = WARN_UNSEEN_FRACTION,
    max_unseen_fraction: float | None = None,
) -> pl.DataFrame:
    """The predictions frame of a trained run (see the module docstring for its columns).

    Args:
        run: a training run folder, a checkpoint file in one, or a :class:`LoadedRun`.
        split: which split to score (train | val | test) when scoring processed data.
        processed_dir: a processed data folder (with ``metadata.json``) to score instead of the run's own data;
            it must share the run's preprocessing, else :class:`DataValidationError`.
        inputs: raw log files / folders / globs to score instead (encoded with the run's preprocessing; labels
            optional; unseen ids → OOV, counted and logged; ``warn_unseen_fraction`` and ``max_unseen_fraction``
            as in :func:`score_logs`).
        calibration: override of the run's ``calibration.json`` (a :class:`Calibration` or a path).
    """
    if not isinstance(run, LoadedRun):
        run = load_run(run, calibration=calibration, device=device)
    elif calibration is not None:
        run.model.set_calibration(
            Calibration.load(calibration) if isinstance(calibration, (str, Path)) else calibration
        )
        run.calibration = run.model.calibration
    if inputs is not None and processed_dir is not None:
        raise ValueError("give either inputs= (raw logs) or processed_dir= (processed data), not both")
    if inputs is not None:
        return score_logs(
            run,
            inputs,
            batch_size=batch_size,
            device=device,
            warn_unseen_fraction=warn_unseen_fraction,
            max_unseen_fraction=max_unseen_fraction,
        )[0]
    data = ProcessedData.load(processed_dir) if processed_dir is not None else run.processed_data()
    return score_split(run, data, split=split, batch_size=batch_size, device=device)


def write_parquet_atomic(df: pl.DataFrame, path: Path | str) -> Path:
    """Write a Parquet file via a temporary file in the same folder and a rename."""
    return atomic_write(path, df.write_parquet)
