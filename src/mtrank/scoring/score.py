"""Score batches with a loaded run: the predictions frame, split by split or batch by batch.

The predictions frame (also the ``predictions.parquet`` that eval and predict write)::

    request_id      Int64
    item_id         Int64
    label_<task>    UInt8     when the data has labels
    p_raw_<task>    Float32   the model's score, on the downsampled scale of the train split
    p_<task>        Float32   corrected (Eq. 3) and calibrated: what utility, tuning and A/B use
    p_true_<task>   Float32   when the data has the simulator's true probabilities

Rows keep the order of the data (processed shards in order; raw logs in file order).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch

from mtrank.calibration.calibrators import FIT_BINS, BinnedLabels
from mtrank.calibration.run_calibration import Calibration
from mtrank.data.dataset import ShardStream
from mtrank.data.errors import DataValidationError
from mtrank.data.pipeline import ProcessedData
from mtrank.data.spec import CAT_PREFIX, ITEM_COL, NUM_PREFIX, REQUEST_COL
from mtrank.scoring.run import LoadedRun, check_compatible
from mtrank.training.module import RankingModule

PREDICTIONS_FILE = "predictions.parquet"


@dataclass
class ScoreInfo:
    """What scoring found: rows, per categorical column the values mapped to the OOV bucket (count and share of
    the rows), duplicated impressions (scored, not dropped) and the columns ignored as extra."""

    rows: int = 0
    unseen: dict[str, int] = field(default_factory=dict)  # non-null values absent from the train vocabulary
    nulls: dict[str, int] = field(default_factory=dict)  # null values (also OOV)
    has_labels: bool = False
    has_p_true: bool = False
    source: str = ""
    unseen_fraction: dict[str, float] = field(default_factory=dict)  # unseen / rows per categorical column
    duplicates: dict[str, int] = field(default_factory=dict)  # file -> rows that are exact copies of an earlier row
    extra_columns: list[str] = field(default_factory=list)  # columns the training files did not have (ignored)
    numeric_missing_filled: dict[str, int] = field(default_factory=dict)  # null/NaN numerics filled (train mean)
    out_of_range: dict[str, int] = field(default_factory=dict)  # numeric values outside the training [min, max]
    out_of_range_fraction: dict[str, float] = field(default_factory=dict)  # out_of_range / rows
    training_range: dict[str, list[float]] = field(default_factory=dict)  # [min, max] of the train values

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "oov_unseen": self.unseen,
            "oov_unseen_fraction": self.unseen_fraction,
            "oov_null": self.nulls,
            "duplicate_rows": sum(self.duplicates.values()),
            "duplicate_rows_per_file": self.duplicates,
            "extra_columns": self.extra_columns,
            "has_labels": self.has_labels,
            "has_p_true": self.has_p_true,
            "source": self.source,
            "numeric_missing_filled": self.numeric_missing_filled,
            "out_of_range": self.out_of_range,
            "out_of_range_fraction": self.out_of_range_fraction,
        }


@torch.inference_mode()
def _logits(model: RankingModule, batches: Iterable[Mapping[str, torch.Tensor]], device) -> Iterable:
    for batch in batches:
        x = {k: batch[k].to(device) for k in ("categorical", "numeric")}
        yield batch, model(x).float()


def _frame(
    tasks: Sequence[str],
    request_id: np.ndarray,
    item_id: np.ndarray,
    p_raw: np.ndarray,
    p: np.ndarray,
    labels: np.ndarray | None,
    p_true: np.ndarray | None,
) -> pl.DataFrame:
    cols: dict[str, pl.Series] = {
        REQUEST_COL: pl.Series(REQUEST_COL, request_id, dtype=pl.Int64),
        ITEM_COL: pl.Series(ITEM_COL, item_id, dtype=pl.Int64),
    }
    for j, t in enumerate(tasks):
        if labels is not None:
            cols[f"label_{t}"] = pl.Series(f"label_{t}", labels[:, j], dtype=pl.UInt8)
    for j, t in enumerate(tasks):
        cols[f"p_raw_{t}"] = pl.Series(f"p_raw_{t}", p_raw[:, j], dtype=pl.Float32)
    for j, t in enumerate(tasks):
        cols[f"p_{t}"] = pl.Series(f"p_{t}", p[:, j], dtype=pl.Float32)
    if p_true is not None:
        for j, t in enumerate(tasks):
            cols[f"p_true_{t}"] = pl.Series(f"p_true_{t}", p_true[:, j], dtype=pl.Float32)
    return pl.DataFrame(list(cols.values()))


def _scored_frames(
    run: LoadedRun, batches: Iterable[Mapping[str, torch.Tensor]], device: str
) -> Iterator[pl.DataFrame]:
    """One predictions frame per batch (at least one frame: an empty one when there are no batches)."""
    model = run.model.to(device)
    T = len(run.tasks)
    empty = True
    for batch, logits in _logits(model, batches, device):
        empty = False
        yield _frame(
            run.tasks,
            batch["request_id"].numpy().astype(np.int64),
            batch["item_id"].numpy().astype(np.int64),
            model.task_probabilities(logits).cpu().numpy(),
            model.calibrated_probabilities(logits).cpu().numpy(),
            batch["labels"].numpy() if "labels" in batch else None,
            batch["p_true"].numpy() if "p_true" in batch else None,
        )
    if empty:
        z = np.zeros((0, T))
        yield _frame(run.tasks, np.zeros(0, np.int64), np.zeros(0, np.int64), z, z, None, None)


def check_finite_predictions(frame: pl.DataFrame, tasks: Sequence[str], source: str) -> None:
    """No NaN or infinite probability is ever written: raise naming the columns and the rows."""
    cols = [c for t in tasks for c in (f"p_raw_{t}", f"p_{t}") if c in frame.columns]
    bad = {c: int(n) for c in cols if (n := (~frame[c].is_finite() | frame[c].is_null()).sum())}
    if bad:
        first = next(iter(bad))
        rows = frame.with_row_index("__r").filter(~pl.col(first).is_finite() | pl.col(first).is_null())["__r"].head(5)
        raise DataValidationError(
            f"scoring {source} gave non-finite probabilities: {bad} (of {frame.height} rows; e.g. rows "
            f"{rows.to_list()} of {first}); nothing is written. Check the input values of those rows"
        )


def score_batches(run: LoadedRun, batches: Iterable[Mapping[str, torch.Tensor]], device: str) -> pl.DataFrame:
    return pl.concat(list(_scored_frames(run, batches, device)), how="vertical", rechunk=True)


def iter_score_split(
    run: LoadedRun, data: ProcessedData, split: str = "test", batch_size: int = 65_536, device: str = "cpu"
) -> Iterator[pl.DataFrame]:
    """The predictions frame of one split, ``batch_size`` rows at a time, in the order of the data (checked
    against the run first, before the first frame is asked for)."""
    if split not in data.metadata["splits"]:
        raise KeyError(
            f"split='{split}': the processed data {data.directory} has splits {list(data.metadata['splits'])}"
        )
    check_compatible(run, data)
    stream = ShardStream(
        data.files(split),
        data.spec,
        batch_size,
        shuffle=False,
        chunk_rows=int(data.metadata["config"]["row_group_size"]),
    )
    return _scored_frames(run, iter(stream), device)


def score_split(
    run: LoadedRun, data: ProcessedData, split: str = "test", batch_size: int = 65_536, device: str = "cpu"
) -> pl.DataFrame:
    """The predictions frame of one split of a processed data set (checked against the run first)."""
    return pl.concat(list(iter_score_split(run, data, split, batch_size, device)), how="vertical", rechunk=True)


def frame_batches(run: LoadedRun, df: pl.DataFrame, info: ScoreInfo, batch_size: int) -> Iterable[dict]:
    spec = run.spec
    cat_cols = [CAT_PREFIX + c.name for c in spec.categorical]
    num_cols = [NUM_PREFIX + n for n in spec.numeric]
    missing = [c for c in cat_cols + num_cols if c not in df.columns]
    if missing:
        raise DataValidationError(f"the run's preprocessing does not produce the model's features {missing}")
    tasks = run.tasks
    for start in range(0, df.height, batch_size):
        part = df.slice(start, batch_size)
        n = part.height
        b = {
            "categorical": torch.from_numpy(part.select(cat_cols).to_numpy().astype(np.int64))
            if cat_cols
            else torch.zeros((n, 0), dtype=torch.int64),
            "numeric": torch.from_numpy(part.select(num_cols).to_numpy().astype(np.float32))
            if num_cols
            else torch.zeros((n, 0), dtype=torch.float32),
            "request_id": torch.from_numpy(part[REQUEST_COL].to_numpy().astype(np.int64)),
            "item_id": torch.from_numpy(part[ITEM_COL].to_numpy().astype(np.int64)),
        }
        if info.has_labels:
            b["labels"] = torch.from_numpy(part.select([f"__label_{t}" for t in tasks]).to_numpy().astype(np.float32))
        if info.has_p_true:
            b["p_true"] = torch.from_numpy(part.select([f"__ptrue_{t}" for t in tasks]).to_numpy().astype(np.float32))
        yield b


def fit_calibration(
    run: LoadedRun, data: ProcessedData, method: str, split: str = "val", batch_size: int = 65_536, device: str = "cpu"
) -> Calibration:
    """Fit one post-hoc calibrator per task on the corrected probabilities of ``split`` and attach it.

    The split is scored batch by batch and summed on the fitting grid (:class:`mtrank.calibration.calibrators.BinnedLabels`):
    every row counts and the memory does not grow with the split.
    """
    run.model.set_calibration(None)
    tasks = run.tasks
    binned = {t: BinnedLabels() for t in tasks}
    rows = 0
    for frame in iter_score_split(run, data, split=split, batch_size=batch_size, device=device):
        missing = [f"label_{t}" for t in tasks if f"label_{t}" not in frame.columns]
        if missing:
            raise DataValidationError(
                f"split '{split}' of {data.directory} has no labels {missing} to fit calibrators on"
            )
        for t in tasks:
            binned[t].update(frame[f"p_{t}"].to_numpy(), frame[f"label_{t}"].to_numpy())
        rows += frame.height
    cal = Calibration(tasks=tasks, betas=dict(run.model.calibration.betas), info=dict(run.model.calibration.info))
    cal.fit_binned(binned, method)
    cal.info.update({"fitted_on": {"data": str(data.directory), "split": split, "rows": rows, "bins": FIT_BINS}})
    run.model.set_calibration(cal)
    run.calibration = cal
    return cal
