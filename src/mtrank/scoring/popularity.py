"""The popularity baseline: score an impression by its item's positive rate per task in the train split.

For item i and task t the score is the smoothed rate ``(pos_it + m · r_t) / (n_i + m)`` where ``n_i`` is the
number of train impressions of i, ``pos_it`` its positives, ``r_t`` the train rate over all items and ``m``
(``prior_strength``) the pseudo-count that pulls rarely seen items towards ``r_t``; items never seen in train
score ``r_t``. No feature besides the item is used, so it tells how much of a head's AUROC is item popularity.

The rates come from the processed train split, which may be downsampled (β < 1): every item's rate is then
inflated by about the same factor, which leaves the ranking, and so AUROC and PR-AUC, nearly unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from mtrank.data.pipeline import ProcessedData
from mtrank.data.spec import CAT_PREFIX, ITEM_COL, LABEL_PREFIX
from mtrank.metrics.heads import compute_head_metrics

__all__ = ["PopularityModel", "fit_popularity", "evaluate_popularity", "read_split"]


@dataclass(frozen=True)
class PopularityModel:
    key: str  # the column of the processed shards that names the item
    tasks: tuple[str, ...]
    rates: pl.DataFrame  # key, one ``rate__<task>`` column per task
    global_rates: dict[str, float]

    def score(self, df: pl.DataFrame) -> np.ndarray:
        """Scores ``[len(df), len(tasks)]`` for the rows of a processed split."""
        if self.key not in df.columns:
            raise KeyError(f"column '{self.key}' is not in the frame; its columns are {df.columns}")
        joined = df.select(pl.col(self.key)).join(self.rates, on=self.key, how="left", maintain_order="left")
        cols = [pl.col(f"rate__{t}").fill_null(self.global_rates[t]) for t in self.tasks]
        return joined.select(cols).to_numpy().astype(np.float32)


def _key_column(key: str) -> str:
    return ITEM_COL if key == ITEM_COL else CAT_PREFIX + key


def fit_popularity(
    train: pl.DataFrame, tasks: Sequence[str], key: str = ITEM_COL, prior_strength: float = 10.0
) -> PopularityModel:
    """Per-item smoothed positive rates from a processed train split (see the module docstring).

    ``key``: ``item_id`` (the processed item id) or the name of a categorical feature (its encoded column).
    """
    if prior_strength < 0:
        raise ValueError(f"prior_strength must be ≥ 0, got {prior_strength}")
    col = _key_column(key)
    if col not in train.columns:
        raise KeyError(
            f"popularity key '{key}' (column '{col}') is not in the processed data; columns: {train.columns}"
        )
    tasks = tuple(tasks)
    labels = [LABEL_PREFIX + t for t in tasks]
    glob = {t: float(train[LABEL_PREFIX + t].cast(pl.Float64).mean()) for t in tasks}
    counts = train.group_by(col).agg(
        pl.len().alias("__n"), *[pl.col(c).cast(pl.Float64).sum().alias(c) for c in labels]
    )
    rates = counts.select(
        pl.col(col),
        *[
            ((pl.col(LABEL_PREFIX + t) + prior_strength * glob[t]) / (pl.col("__n") + prior_strength)).alias(
                f"rate__{t}"
            )
            for t in tasks
        ],
    )
    return PopularityModel(col, tasks, rates, glob)


def read_split(processed: ProcessedData, split: str) -> pl.DataFrame:
    """All shards of one split of a processed data set, as one frame."""
    return pl.concat([pl.read_parquet(p) for p, _ in processed.files(split)], how="vertical")


def evaluate_popularity(
    processed: ProcessedData,
    key: str = ITEM_COL,
    split: str = "test",
    prior_strength: float = 10.0,
    tasks: Sequence[str] | None = None,
) -> dict[str, float]:
    """Fit on the train split, score ``split``; the metrics of :func:`mtrank.metrics.heads.compute_head_metrics`
    under ``"<split>/<task>/<metric>"``."""
    tasks = tuple(tasks or processed.spec.tasks)
    model = fit_popularity(read_split(processed, "train"), tasks, key, prior_strength)
    df = read_split(processed, split)
    labels = df.select([LABEL_PREFIX + t for t in tasks]).to_numpy().astype(np.float32)
    return compute_head_metrics(model.score(df), labels, tasks, prefix=split)
