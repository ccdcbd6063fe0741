"""The contract between processed data and models.

A processed data set (see :mod:`mtrank.data.pipeline`) is described by ``metadata.json``; models are
built from the :class:`FeatureSpec` read from it, and every batch the streaming dataset yields is a
dict of tensors::

    {
        "categorical": LongTensor[B, n_categorical]   # vocabulary indices, 0 = out-of-vocabulary
        "numeric":     FloatTensor[B, n_numeric]      # normalised numerics (may be [B, 0])
        "labels":      FloatTensor[B, n_tasks]        # 0/1 per task, columns in ``spec.tasks`` order
        "p_true":      FloatTensor[B, n_tasks]        # only when the log carries p_true_<task>
        "request_id":  LongTensor[B]
        "item_id":     LongTensor[B]                  # raw candidate id when it is an integer, else its index
    }

The streamed matrices are laid out column by column (each a view of a window's ``[k, n]`` matrix, so
``batch["categorical"][:, j]`` is one contiguous run); code that needs rows in one piece calls ``.contiguous()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Column-name prefixes used inside processed shards.
CAT_PREFIX = "cat__"
NUM_PREFIX = "num__"
LABEL_PREFIX = "label__"
PTRUE_PREFIX = "p_true__"
REQUEST_COL = "request_id"
ROW_INDEX = "__row"
ITEM_COL = "item_id"

# Name of the column in raw logs that holds the simulator's true probability for a task.
RAW_PTRUE_PREFIX = "p_true_"


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    cardinality: int  # number of embedding rows, out-of-vocabulary index 0 included


@dataclass(frozen=True)
class FeatureSpec:
    """What a model needs to know about the features and tasks of a processed data set."""

    categorical: tuple[CategoricalFeature, ...]
    numeric: tuple[str, ...]
    tasks: tuple[str, ...]
    has_p_true: bool = False

    @property
    def n_categorical(self) -> int:
        return len(self.categorical)

    @property
    def n_numeric(self) -> int:
        return len(self.numeric)

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    def task_index(self, task: str) -> int:
        try:
            return self.tasks.index(task)
        except ValueError:
            raise KeyError(f"task '{task}' is not one of the data set's tasks {list(self.tasks)}") from None

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> FeatureSpec:
        feats = meta["features"]
        return cls(
            categorical=tuple(CategoricalFeature(f["name"], int(f["cardinality"])) for f in feats["categorical"]),
            numeric=tuple(f["name"] for f in feats["numeric"]),
            tasks=tuple(meta["tasks"]),
            has_p_true=bool(meta.get("has_p_true", False)),
        )


def batch_size(batch: Mapping[str, Any]) -> int:
    """Number of rows of a batch (for Lightning's ThroughputMonitor)."""
    return int(batch["labels"].shape[0])
