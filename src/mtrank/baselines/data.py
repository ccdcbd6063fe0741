"""The processed splits (:mod:`mtrank.data.pipeline`) as NumPy arrays: the very columns the nets' batches carry
(``cat__*`` vocabulary indices, ``num__*`` normalised numerics, ``label__*`` 0/1 labels), in
:class:`~mtrank.data.spec.FeatureSpec` order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from mtrank.data.errors import DataValidationError
from mtrank.data.pipeline import ProcessedData
from mtrank.data.spec import CAT_PREFIX, LABEL_PREFIX, NUM_PREFIX, PTRUE_PREFIX

__all__ = ["SplitArrays", "load_split"]


@dataclass(frozen=True)
class SplitArrays:
    """One split: ``categorical`` int64 [N, C] (0 = out of vocabulary), ``numeric`` float32 [N, K],
    ``labels`` float32 [N, T] with columns in ``tasks`` order; ``p_true`` float32 [N, T], the simulator's true
    probabilities (for the nets' ``oracle_auroc``), when the data has them, else None."""

    split: str
    categorical: np.ndarray
    numeric: np.ndarray
    labels: np.ndarray
    categorical_names: tuple[str, ...]
    cardinalities: tuple[int, ...]
    numeric_names: tuple[str, ...]
    tasks: tuple[str, ...]
    p_true: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return int(self.labels.shape[0])

    def label(self, task: str) -> np.ndarray:
        return self.labels[:, self.tasks.index(task)]


def load_split(processed: ProcessedData, split: str, tasks: Sequence[str] | None = None) -> SplitArrays:
    """Every shard of ``split`` as arrays. ``tasks``: the label columns to take (default: the data set's tasks);
    a task the processed data has no label for is an error naming it."""
    spec = processed.spec
    tasks = tuple(tasks) if tasks is not None else spec.tasks
    unknown = [t for t in tasks if t not in spec.tasks]
    if unknown:
        raise DataValidationError(
            f"task(s) {unknown} have no label column in the processed data {processed.directory} "
            f"(its tasks: {list(spec.tasks)}); tasks.names must be tasks of data.pipeline.tasks"
        )
    files = processed.files(split)
    if not files:
        raise DataValidationError(f"the {split} split of {processed.directory} has no shard")
    cat_cols = [CAT_PREFIX + f.name for f in spec.categorical]
    num_cols = [NUM_PREFIX + n for n in spec.numeric]
    lab_cols = [LABEL_PREFIX + t for t in tasks]
    pt_cols = [PTRUE_PREFIX + t for t in tasks] if spec.has_p_true else []
    frames = []
    for path, _ in files:
        df = pl.read_parquet(path)
        missing = [c for c in cat_cols + num_cols + lab_cols + pt_cols if c not in df.columns]
        if missing:
            raise DataValidationError(f"processed shard {path} is missing column(s) {missing}")
        frames.append(df.select(cat_cols + num_cols + lab_cols + pt_cols))
    df = pl.concat(frames, how="vertical")
    cards = tuple(int(f.cardinality) for f in spec.categorical)
    cat = df.select(cat_cols).to_numpy().astype(np.int64) if cat_cols else np.zeros((df.height, 0), np.int64)
    for j, (col, card) in enumerate(zip(cat_cols, cards)):
        bad = (cat[:, j] < 0) | (cat[:, j] >= card)
        if bad.any():
            raise DataValidationError(
                f"column '{col}' of the {split} split of {processed.directory} holds indices "
                f"outside [0, {card}) (e.g. {int(cat[bad, j][0])}): the shards do not match "
                "metadata.json"
            )
    num = df.select(num_cols).to_numpy().astype(np.float32) if num_cols else np.zeros((df.height, 0), np.float32)
    labels = df.select(lab_cols).to_numpy().astype(np.float32)
    p_true = df.select(pt_cols).to_numpy().astype(np.float32) if pt_cols else None
    return SplitArrays(
        split, cat, num, labels, tuple(f.name for f in spec.categorical), cards, tuple(spec.numeric), tasks, p_true
    )
