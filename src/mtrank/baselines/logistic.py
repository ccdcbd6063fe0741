"""Logistic regression per task (scikit-learn), on the processed features the nets use.

Features: a one-hot column for every value of every categorical column's vocabulary (the ids included; the
out-of-vocabulary index 0 is a column of its own, as in :class:`mtrank.models.linear.LogisticNet`), as a sparse
matrix, beside the numerics standardised with the train split's mean and standard deviation. L2 penalty, lbfgs
(the fits of a task run through ``c_grid`` in ascending order, each warm-started from the previous solution).
Per task a model is fitted on train for every C of ``c_grid`` and the one with the lowest val log-loss
(:func:`mtrank.metrics.heads.compute_head_metrics`, the nets' ``val/<task>/logloss``) is kept; ties go to the smaller C.
lbfgs is deterministic: the same data gives the same model whatever the run's seed.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from mtrank.baselines.data import SplitArrays

__all__ = ["OneHotDesign", "LogisticModels", "fit_logistic"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OneHotDesign:
    """The sparse design: one-hot categoricals (offsets from the vocabulary sizes) and standardised numerics."""

    cardinalities: tuple[int, ...]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, train: SplitArrays) -> OneHotDesign:
        mean = train.numeric.astype(np.float64).mean(axis=0) if train.numeric.shape[1] else np.zeros(0)
        std = train.numeric.astype(np.float64).std(axis=0) if train.numeric.shape[1] else np.ones(0)
        return cls(tuple(train.cardinalities), mean, np.where(std > 0, std, 1.0))

    @property
    def n_columns(self) -> int:
        return int(sum(self.cardinalities)) + len(self.mean)

    def transform(self, data: SplitArrays) -> sp.csr_matrix:
        if tuple(data.cardinalities) != self.cardinalities:
            raise ValueError(
                f"the {data.split} split's vocabulary sizes {data.cardinalities} differ from train's "
                f"{self.cardinalities}"
            )
        n, c = data.categorical.shape
        offsets = (
            np.concatenate([[0], np.cumsum(self.cardinalities)[:-1]]).astype(np.int64) if c else np.zeros(0, np.int64)
        )
        onehot = sp.csr_matrix(
            (np.ones(n * c), (np.repeat(np.arange(n), c), (data.categorical + offsets).reshape(-1))),
            shape=(n, int(sum(self.cardinalities))),
        )
        num = sp.csr_matrix((data.numeric.astype(np.float64) - self.mean) / self.std)
        return sp.hstack([onehot, num], format="csr")


@dataclass
class LogisticModels:
    tasks: tuple[str, ...]
    design: OneHotDesign
    models: dict[str, Any]
    details: dict[str, dict[str, Any]] = field(default_factory=dict)

    def predict(self, data: SplitArrays) -> np.ndarray:
        """Probabilities ``[N, T]``, columns in ``tasks`` order."""
        x = self.design.transform(data)
        return np.stack([self.models[t].predict_proba(x)[:, 1] for t in self.tasks], axis=1).astype(np.float32)


def fit_logistic(
    train: SplitArrays,
    val: SplitArrays,
    tasks: Sequence[str],
    *,
    c_grid: Sequence[float],
    val_logloss: Callable[[np.ndarray, np.ndarray, str], float],
    max_iter: int = 1000,
    tol: float = 1e-6,
    betas: Mapping[str, float] | None = None,
) -> LogisticModels:
    """Per task, the C of ``c_grid`` with the lowest ``val_logloss(probs, labels, task)`` (see the module docstring).
    ``betas``: each task's downsampling keep rate β_t of the train split; val probabilities are then corrected by
    Eq. 3 before their log-loss is taken (val is not downsampled). :meth:`LogisticModels.predict` gives uncorrected
    probabilities."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from mtrank.calibration.downsampling import correct

    grid = sorted(float(c) for c in c_grid)
    if not grid:
        raise ValueError("baseline.c_grid is empty: list at least one C")
    design = OneHotDesign.fit(train)
    x_train, x_val = design.transform(train), design.transform(val)
    models, details = {}, {}
    for task in tasks:
        y_train, y_val = train.label(task), val.label(task)
        scores, fitted, converged = {}, {}, {}
        # C ascending, each fit started from the previous solution (warm start: the same optimum, far fewer lbfgs
        # iterations at the weak penalties; the sequence is fixed, so the result stays deterministic)
        m = LogisticRegression(solver="lbfgs", max_iter=max_iter, tol=tol, warm_start=True)
        for c in grid:
            m.set_params(C=c)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                m.fit(x_train, y_train)
            converged[c] = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
            p_val = m.predict_proba(x_val)[:, 1]
            beta = float((betas or {}).get(task, 1.0))
            scores[c] = float(val_logloss(correct(p_val, beta) if beta < 1.0 else p_val, y_val, task))
            fitted[c] = copy.deepcopy(m)
        best = min(grid, key=lambda c: (scores[c], c))
        if not converged[best]:
            log.warning(
                "logistic %s: lbfgs did not converge in baseline.max_iter=%d iterations at C=%g", task, max_iter, best
            )
        models[task] = fitted[best]
        details[task] = {
            "C": best,
            "val_logloss_by_C": {str(c): scores[c] for c in grid},
            "converged": converged[best],
            "n_iter": int(np.max(fitted[best].n_iter_)),
            "at_grid_edge": len(grid) > 1 and best in (grid[0], grid[-1]),
        }
        log.info(
            "logistic %s: C=%g (val log-loss %.5f; grid %s)",
            task,
            best,
            scores[best],
            ", ".join(f"{c:g}: {scores[c]:.5f}" for c in grid),
        )
    return LogisticModels(tuple(tasks), design, models, details)
