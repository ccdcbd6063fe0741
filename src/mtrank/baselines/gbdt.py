"""LightGBM, one binary model per task, on the processed features the nets use.

Features: the encoded categorical columns (vocabulary indices, 0 = out of vocabulary) declared categorical to
LightGBM, except those whose vocabulary exceeds ``categorical_max_cardinality``, which are given as numbers (the
index is the value's rank by train frequency, :mod:`mtrank.data.encoding`); the normalised numerics as they are.
Per task: boosting on train, the val split scored after every round, stopped after ``early_stopping_rounds``
rounds without improvement of ``early_stopping_metric``; the best round's model scores val and test. The run's
``seed`` seeds LightGBM (bagging, feature subsampling).

LightGBM is the optional extra ``baselines`` of mtrank: ``pip install -e ".[baselines]"``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mtrank.baselines.data import SplitArrays

__all__ = ["import_lightgbm", "LightGBMModels", "fit_lightgbm", "design_matrix"]

log = logging.getLogger(__name__)


def import_lightgbm():
    try:
        import lightgbm
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "baseline=lightgbm needs LightGBM, the optional extra 'baselines' of mtrank: "
            'pip install -e ".[baselines]" (or pip install lightgbm)'
        ) from exc
    return lightgbm


def design_matrix(data: SplitArrays) -> np.ndarray:
    """``[N, C + K]`` float64: categorical indices (exact as floats) then numerics."""
    if data.categorical.size and int(data.categorical.max()) >= 2**31 - 1:
        raise ValueError("LightGBM categorical values must be below 2^31 - 1")
    return np.hstack([data.categorical.astype(np.float64), data.numeric.astype(np.float64)])


def categorical_indices(data: SplitArrays, max_cardinality: int | None) -> list[int]:
    """Columns of :func:`design_matrix` declared categorical."""
    return [j for j, card in enumerate(data.cardinalities) if max_cardinality is None or card <= max_cardinality]


@dataclass
class LightGBMModels:
    tasks: tuple[str, ...]
    boosters: dict[str, Any]
    details: dict[str, dict[str, Any]] = field(default_factory=dict)

    def predict(self, data: SplitArrays) -> np.ndarray:
        """Probabilities ``[N, T]``, columns in ``tasks`` order, each from its task's best round."""
        x = design_matrix(data)
        cols = [self.boosters[t].predict(x, num_iteration=self.details[t]["best_iteration"]) for t in self.tasks]
        return np.stack(cols, axis=1).astype(np.float32)

    def save(self, directory: Path | str) -> list[Path]:
        out = Path(directory) / "models"
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for t in self.tasks:
            path = out / f"{t}.txt"
            self.boosters[t].save_model(str(path), num_iteration=self.details[t]["best_iteration"])
            paths.append(path)
        return paths


def fit_lightgbm(
    train: SplitArrays,
    val: SplitArrays,
    tasks: Sequence[str],
    *,
    params: Mapping[str, Any] | None = None,
    num_boost_round: int = 5000,
    early_stopping_rounds: int = 100,
    early_stopping_metric: str = "binary_logloss",
    categorical_max_cardinality: int | None = None,
    seed: int = 0,
    betas: Mapping[str, float] | None = None,
) -> LightGBMModels:
    """One booster per task, early-stopped on ``val`` (see the module docstring). ``betas``: each task's downsampling
    keep rate β_t of the train split; the val metric is then that of the Eq. 3-corrected probabilities (val scores
    start at log β_t), since val is not downsampled. :meth:`LightGBMModels.predict` gives uncorrected probabilities."""
    lgb = import_lightgbm()
    x_train, x_val = design_matrix(train), design_matrix(val)
    names = [f"cat__{n}" for n in train.categorical_names] + [f"num__{n}" for n in train.numeric_names]
    cats = categorical_indices(train, categorical_max_cardinality)
    full = {**dict(params or {}), "objective": "binary", "metric": early_stopping_metric, "seed": int(seed)}
    boosters, details = {}, {}
    for task in tasks:
        y_train, y_val = train.label(task), val.label(task)
        dtrain = lgb.Dataset(
            x_train,
            y_train,
            feature_name=names,
            categorical_feature=cats,
            free_raw_data=False,
            params={"verbosity": full.get("verbosity", -1)},
        )
        beta = float((betas or {}).get(task, 1.0))
        init = np.full(len(y_val), np.log(beta)) if beta < 1.0 else None
        dval = lgb.Dataset(x_val, y_val, reference=dtrain, free_raw_data=False, init_score=init)
        history: dict[str, Any] = {}
        booster = lgb.train(
            full,
            dtrain,
            num_boost_round=num_boost_round,
            valid_sets=[dval],
            valid_names=["val"],
            callbacks=[
                lgb.early_stopping(early_stopping_rounds, first_metric_only=True, verbose=False),
                lgb.record_evaluation(history),
            ],
        )
        curve = history["val"][early_stopping_metric]  # one value per round trained
        best = int(booster.best_iteration) or len(curve)
        details[task] = {
            "best_iteration": best,
            "rounds_trained": len(curve),
            "stopped_early": len(curve) < num_boost_round,
            f"val_{early_stopping_metric}": float(curve[best - 1]),
            "categorical_features": [names[j] for j in cats],
        }
        boosters[task] = booster
        log.info(
            "lightgbm %s: best round %d of %d (val %s %.5f)",
            task,
            best,
            len(curve),
            early_stopping_metric,
            curve[best - 1],
        )
    return LightGBMModels(tuple(tasks), boosters, details)
