"""Shared fixtures: small logs written to tmp dirs, and Hydra configs composed for fast runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
os.environ.setdefault("PROJECT_ROOT", str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")

TASKS = ["save", "click", "long_click", "closeup"]


def make_log(n_requests: int = 50, k: int = 4, seed: int = 0) -> pl.DataFrame:
    """A small hand-made impression log: ids, a category, a price, a count, labels, time."""
    rng = np.random.default_rng(seed)
    n = n_requests * k
    click = (rng.random(n) < 0.2).astype(np.int8)
    return pl.DataFrame(
        {
            "request_id": np.repeat(np.arange(n_requests), k).astype(np.int64),
            "timestamp": np.repeat(np.arange(n_requests) * 10, k).astype(np.int64),
            "user_id": np.repeat(rng.integers(0, 10, n_requests), k).astype(np.int64),
            "item_id": rng.integers(0, 30, n).astype(np.int64),
            "category": rng.choice(["a", "b", "c"], n),
            "price": rng.lognormal(2, 0.5, n),
            "popularity": rng.integers(0, 1000, n).astype(np.int64),
            "save": (rng.random(n) < 0.1).astype(np.int8),
            "click": click,
            "long_click": (click * (rng.random(n) < 0.5)).astype(np.int8),
            "closeup": (rng.random(n) < 0.15).astype(np.int8),
        }
    )


def pipeline_mapping(inputs, **overrides) -> dict:
    m = {
        "name": "handmade",
        "inputs": [str(p) for p in (inputs if isinstance(inputs, (list, tuple)) else [inputs])],
        "tasks": list(TASKS),
        "columns": {
            "request_id": "request_id",
            "item_id": "item_id",
            "time": "timestamp",
            "categorical": ["user_id", "item_id", "category"],
            "numeric": ["price"],
            "log_numeric": ["popularity"],
            "labels": {t: t for t in TASKS},
        },
        "split": {"by": "time", "val_fraction": 0.2, "test_fraction": 0.2, "seed": 0},
        "downsample": {"beta": 1.0, "seed": 0},
        "rows_per_shard": 64,
        "row_group_size": 16,
    }
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(m.get(k), dict):
            m[k] = {**m[k], **v}
        else:
            m[k] = v
    return m


@pytest.fixture
def log_file(tmp_path) -> Path:
    path = tmp_path / "raw" / "log.parquet"
    path.parent.mkdir()
    make_log().write_parquet(path)
    return path
