"""Calibrated per-head probabilities: the downsampling correction (Eq. 3) and post-hoc calibrators.

Every later stage (utility weights, tuning, A/B tests) reads ``p_<task>``: the model's score corrected for the
negative downsampling of the train split and, optionally, passed through a calibrator fitted on the validation
split. This module holds the maths (pure functions, no Trainer) and the JSON file that carries it with a run.

Downsampling correction (Eq. 3, Dal Pozzolo et al. 2015)
--------------------------------------------------------
Keep every positive and a fraction β of the negatives, train on that, and call ``p_s`` the model's score. If a
negative's chance of being kept does not depend on x, Bayes' rule gives, with ``p`` the probability in the
full (not downsampled) population::

    p_s = p / (p + β (1 − p))            ⇔      p = β p_s / (β p_s − p_s + 1)

which on the logit scale is a shift: ``logit p = logit p_s + log β``. It is monotone (ranking metrics such as
AUROC do not move), the identity at β = 1, and it lowers every score when β < 1.

The effective β_t of a head
---------------------------
The pipeline does not sample each head's negatives: it keeps a fraction β of the train impressions with *no
engagement of any configured task* and keeps every engaged impression whole
(:func:`mtrank.data.pipeline.downsample`). For head t the rows fall into three groups:

* ``P_t``: y_t = 1, all kept;
* ``O_t``: y_t = 0 but another task engaged (e.g. a click without a long click), all kept;
* ``U``:   no engagement at all, kept with probability β.

Head t's negatives are ``O_t ∪ U``, and the share of them that survives is::

    β_t = (|O_t| + β |U|) / (|O_t| + |U|)  =  negatives_after / negatives_before

which is exactly what the pipeline records in ``metadata["counts"]["per_task"][t]["effective_beta"]``
(``negatives_before = rows − positives_before`` and ``negatives_after = kept rows − positives_after`` of the
train split, the realised counts, i.e. what the model actually saw). Substituting β_t for β in the Bayes step
above gives Eq. 3 per head: ``p_t = β_t p_s / (β_t p_s − p_s + 1)``. Checks: β_t ≥ β; β_t = β when no
impression holds another engagement (``|O_t| = 0``: the single-label case of the paper); β_t = 1 when β = 1.
For the binary objective (Eq. 1) the one head predicts "any engagement", whose negatives are exactly ``U``,
so its β is the configured β itself.

The step that is only approximate: the keep rate of a head-t negative at x is really
``β_t(x) = 1 − (1 − β)·P(U | x, y_t = 0)``, which moves with x where the tasks are correlated (long_click
implies click, so rows likely to be clicked keep more long-click negatives). β_t is its average over the
negatives, so the corrected head is calibrated on average and can be slightly off in the tails; a post-hoc
calibrator fitted on the validation split (which is never downsampled) removes what remains. The evaluation
report shows ``ece`` before (``_raw``) and after the correction so that this is measured, not assumed.

How large that error is, measured on the default simulated data (β = 0.1, engagement types correlated by
construction): with the simulator's exact probabilities in place of a model, the constant-β_t correction puts the
mean corrected probability 14–30% below the true mean (closeup −14%, save −21%, click −20%, long_click −30%):
β_t(x) is higher than β_t exactly where p_t is high. The ECE stays small in absolute terms (≤ 0.007 on the test
split) because the probabilities are small, but the heads' *relative* scale matters to the utility score. Two
remedies are built in:

* ``calibration=platt`` (or ``isotonic`` / ``temperature``): a calibrator fitted on the validation split after
  the correction removes the bias without retraining;
* ``calibration.downsampling=reweight``: weight the sampled (unengaged) rows by 1/β in the training loss. The
  weighted sample then has the population's distribution, so every head learns p_t itself (no correction:
  β_t = 1 in Eq. 3) - exact in expectation for every head, at the price of noisier gradients; multi-task
  objective only. The raw scores are then already on the population scale.

Post-hoc calibrators
--------------------
Fitted per task on the validation split, on the corrected probability, and applied after the correction:

* ``temperature``: ``σ(logit(p) / T)``, one parameter;
* ``platt``: ``σ(a·logit(p) + b)`` (Platt 1999), two parameters;
* ``isotonic``: a monotone step function of p (pool-adjacent-violators, scikit-learn), stored as its knots and
  applied by linear interpolation between them.

Temperature and Platt are strictly monotone (rankings unchanged); isotonic is monotone but merges scores into
ties, which can lower AUROC a little. All three are saved as plain JSON (:class:`Calibration`), never pickled.

Fitting in constant memory. A run fits its calibrators on every row of the validation split without holding
them: :class:`BinnedLabels` sums the (probability, label) rows per cell of a fine grid on the logit scale
(:data:`FIT_BINS` = 65 536 equal cells over logit p ∈ [−16.1, 16.1], 5·10⁻⁴ wide: a relative step of 0.05% in
p), and each calibrator is fitted on the cells' mean probabilities weighted by their positive and negative
counts (:meth:`Calibration.fit_binned`). That is the fit on the rows themselves with every score moved to the
mean of its cell: Platt's and the temperature's likelihood change by O(cell width²), isotonic regression pools
the rows of a cell (which its solution does anyway unless a step falls inside a 0.05% cell).
:meth:`Calibration.fit` fits on rows given as arrays.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from mtrank.utils.io import write_text_atomic

__all__ = [
    "CALIBRATION_FILE",
    "FIT_BINS",
    "METHODS",
    "BinnedLabels",
    "Calibration",
    "Calibrator",
    "IdentityCalibrator",
    "IsotonicCalibrator",
    "PlattCalibrator",
    "TemperatureCalibrator",
    "build_calibrator",
    "calibrator_from_dict",
    "correct",
    "correct_logits",
    "downsampling_from_metadata",
    "effective_beta",
    "effective_betas",
]

log = logging.getLogger(__name__)

CALIBRATION_FILE = "calibration.json"
METHODS = ("none", "temperature", "platt", "isotonic")
DOWNSAMPLING_MODES = ("correct", "reweight")
_EPS = 1e-7
_FORMAT_VERSION = 1
FIT_BINS = 1 << 16  # cells of BinnedLabels' grid on the logit scale


# --------------------------------------------------------------------------------------------- Eq. 3


def _check_beta(beta: Any) -> None:
    b = np.asarray(beta.detach().cpu() if isinstance(beta, Tensor) else beta, dtype=np.float64)
    if not np.all((b > 0) & (b <= 1)):
        raise ValueError(f"a downsampling keep rate β must lie in (0, 1], got {b.tolist()}")


def correct(p_s, beta):
    """Eq. 3: ``p = β p_s / (β p_s − p_s + 1)``, elementwise (numpy arrays, tensors or floats).

    ``beta`` broadcasts against ``p_s`` (a scalar, or one β_t per column of a ``[N, T]`` array).
    """
    _check_beta(beta)
    if isinstance(p_s, Tensor):
        beta = torch.as_tensor(beta, dtype=p_s.dtype, device=p_s.device)
    else:
        p_s = np.asarray(p_s, dtype=np.float64)
        beta = np.asarray(beta, dtype=np.float64)
    return beta * p_s / (beta * p_s - p_s + 1.0)


def correct_logits(logits: Tensor, beta) -> Tensor:
    """Eq. 3 on the logit scale, where it is a shift: ``logit p = logit p_s + log β`` (no loss of precision)."""
    _check_beta(beta)
    beta = torch.as_tensor(beta, dtype=logits.dtype, device=logits.device)
    return logits + torch.log(beta)


def effective_beta(negatives_before: int, negatives_after: int) -> float:
    """β_t = negatives_after / negatives_before: the share of head t's negatives that the downsampling kept."""
    if negatives_before < 0 or negatives_after < 0 or negatives_after > negatives_before:
        raise ValueError(
            f"negative counts before={negatives_before}, after={negatives_after}: expected 0 ≤ after ≤ before"
        )
    return negatives_after / negatives_before if negatives_before else 1.0


def effective_betas(counts: Mapping[str, Any], tasks: Sequence[str]) -> dict[str, float]:
    """β_t per task from the pipeline's ``metadata["counts"]`` (recomputed from the counts, then cross-checked).

    Raises a ``KeyError`` naming the task when the counts do not cover it.
    """
    per_task = counts.get("per_task") or {}
    out = {}
    for t in tasks:
        if t not in per_task:
            raise KeyError(f"metadata counts have no per_task entry for task '{t}' (tasks counted: {sorted(per_task)})")
        c = per_task[t]
        b = effective_beta(int(c["negatives_before"]), int(c["negatives_after"]))
        recorded = c.get("effective_beta")
        if recorded is not None and not math.isclose(b, float(recorded), rel_tol=1e-9, abs_tol=1e-12):
            raise ValueError(f"counts for task '{t}': effective_beta {recorded} ≠ negatives_after/negatives_before = {b}")
        out[t] = b
    return out


def downsampling_from_metadata(metadata: Mapping[str, Any], mode: str = "correct") -> dict[str, Any]:
    """What the model needs about the downsampling: ``{"beta": β, "effective_beta": {task: β_t}, "mode": mode}``.

    ``mode``: ``correct`` (Eq. 3 per head with β_t) or ``reweight`` (unengaged rows weighted 1/β in the loss).
    """
    if mode not in DOWNSAMPLING_MODES:
        raise ValueError(f"calibration.downsampling = '{mode}': expected one of {list(DOWNSAMPLING_MODES)}")
    counts = metadata.get("counts") or {}
    beta = float(counts.get("beta", metadata.get("beta", 1.0)))
    if not counts.get("per_task"):
        return {"beta": beta, "effective_beta": {t: beta for t in metadata["tasks"]}, "mode": mode}
    return {"beta": beta, "effective_beta": effective_betas(counts, metadata["tasks"]), "mode": mode}


# --------------------------------------------------------------------------------------------- calibrators


def _logit(p: Tensor) -> Tensor:
    p = p.clamp(_EPS, 1 - _EPS)
    return torch.log(p) - torch.log1p(-p)


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float64)


def _check_fit_inputs(p, y, weight=None) -> tuple[Tensor, Tensor, Tensor | None]:
    p = _as_tensor(p).detach().double().reshape(-1).cpu()
    y = _as_tensor(y).detach().double().reshape(-1).cpu()
    if p.shape != y.shape:
        raise ValueError(f"calibrator fit: {p.numel()} scores but {y.numel()} labels")
    if p.numel() == 0:
        raise ValueError("calibrator fit: no rows to fit on")
    if weight is not None:
        weight = _as_tensor(weight).detach().double().reshape(-1).cpu()
        if weight.shape != p.shape or bool((weight < 0).any()) or not float(weight.sum()) > 0:
            raise ValueError(f"calibrator fit: weights must be {p.numel()} non-negative numbers, not all 0")
    return p, y, weight


def _fit_logistic(x: Tensor, y: Tensor, slope0: float, intercept: bool, weight: Tensor | None = None) -> tuple[float, float]:
    """Maximum-likelihood σ(a x + b) on one feature (full-batch L-BFGS; b fixed at 0 without intercept); rows
    weighted by ``weight`` when given (a row of weight w counts as w rows)."""
    a = torch.tensor([slope0], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=intercept)
    params = [a, b] if intercept else [a]
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")
    w = None if weight is None else weight / weight.sum()

    def closure():
        opt.zero_grad()
        if w is None:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(a * x + b, y)
        else:
            loss = torch.nn.functional.binary_cross_entropy_with_logits(a * x + b, y, weight=w, reduction="sum")
        loss.backward()
        return loss

    opt.step(closure)
    return float(a.detach()), float(b.detach())


class Calibrator:
    """Maps a corrected probability to a calibrated one, for one task. ``apply`` takes tensors or arrays."""

    method = "none"

    def fit(self, p, y, weight=None) -> "Calibrator":
        """Fit on scores ``p`` and 0/1 labels ``y`` (1-D), each row counted ``weight`` times when given."""
        return self

    def _apply(self, p: Tensor) -> Tensor:
        return p

    def apply(self, p):
        if isinstance(p, Tensor):
            return self._apply(p)
        arr = np.asarray(p)
        out = self._apply(torch.as_tensor(arr, dtype=torch.float64)).numpy()
        return out.astype(arr.dtype if arr.dtype.kind == "f" else np.float64, copy=False)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"


class IdentityCalibrator(Calibrator):
    method = "none"


@dataclass(repr=False)
class TemperatureCalibrator(Calibrator):
    """``σ(logit(p) / T)``."""

    temperature: float = 1.0
    method = "temperature"

    def fit(self, p, y, weight=None) -> "TemperatureCalibrator":
        p, y, weight = _check_fit_inputs(p, y, weight)
        a, _ = _fit_logistic(_logit(p), y, 1.0, intercept=False, weight=weight)
        if a <= 0:
            raise ValueError(f"temperature fit gave a non-positive slope {a}: the scores do not rank the labels")
        self.temperature = 1.0 / a
        return self

    def _apply(self, p: Tensor) -> Tensor:
        return torch.sigmoid(_logit(p) / self.temperature).to(p.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "temperature": self.temperature}


@dataclass(repr=False)
class PlattCalibrator(Calibrator):
    """``σ(a·logit(p) + b)``."""

    a: float = 1.0
    b: float = 0.0
    method = "platt"

    def fit(self, p, y, weight=None) -> "PlattCalibrator":
        p, y, weight = _check_fit_inputs(p, y, weight)
        self.a, self.b = _fit_logistic(_logit(p), y, 1.0, intercept=True, weight=weight)
        return self

    def _apply(self, p: Tensor) -> Tensor:
        return torch.sigmoid(self.a * _logit(p) + self.b).to(p.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "a": self.a, "b": self.b}


@dataclass(repr=False)
class IsotonicCalibrator(Calibrator):
    """A monotone map fitted by isotonic regression, kept as knots ``x`` → ``y`` and linearly interpolated.

    Scores outside ``[x[0], x[-1]]`` take the value of the nearest knot.
    """

    x: list[float] = field(default_factory=lambda: [0.0, 1.0])
    y: list[float] = field(default_factory=lambda: [0.0, 1.0])
    method = "isotonic"

    def fit(self, p, y, weight=None) -> "IsotonicCalibrator":
        from sklearn.isotonic import IsotonicRegression

        p, y, weight = _check_fit_inputs(p, y, weight)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(p.numpy(), y.numpy(), sample_weight=None if weight is None else weight.numpy())
        self.x = [float(v) for v in iso.X_thresholds_]
        self.y = [float(v) for v in iso.y_thresholds_]
        return self

    def _apply(self, p: Tensor) -> Tensor:
        xs = torch.tensor(self.x, dtype=torch.float64, device=p.device)
        ys = torch.tensor(self.y, dtype=torch.float64, device=p.device)
        q = p.double().clamp(xs[0], xs[-1])
        if xs.numel() == 1:
            return ys.expand_as(q).to(p.dtype).clone()
        i = torch.searchsorted(xs, q, right=True).clamp(1, xs.numel() - 1)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        w = torch.where(x1 > x0, (q - x0) / (x1 - x0).clamp_min(1e-300), torch.zeros_like(q))
        return (y0 + w * (y1 - y0)).to(p.dtype)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "x": self.x, "y": self.y}


_CLASSES = {"none": IdentityCalibrator, "temperature": TemperatureCalibrator, "platt": PlattCalibrator,
            "isotonic": IsotonicCalibrator}


def build_calibrator(method: str | None) -> Calibrator:
    """An unfitted calibrator for ``method`` in :data:`METHODS` (None means ``none``)."""
    method = method or "none"
    if method not in _CLASSES:
        raise ValueError(f"calibration.method = '{method}': expected one of {list(METHODS)}")
    return _CLASSES[method]()


def calibrator_from_dict(d: Mapping[str, Any]) -> Calibrator:
    """Rebuild a calibrator from :meth:`Calibrator.to_dict` (plain JSON values only)."""
    d = dict(d)
    method = d.pop("method", None)
    if method not in _CLASSES:
        raise ValueError(f"calibrator method '{method}' is unknown: expected one of {list(METHODS)}")
    cls = _CLASSES[method]
    if cls is IdentityCalibrator:
        return cls()
    try:
        obj = cls(**{k: (list(map(float, v)) if isinstance(v, list) else float(v)) for k, v in d.items()})
    except TypeError as exc:
        raise ValueError(f"calibrator '{method}' has unexpected fields {sorted(d)}: {exc}") from None
    if isinstance(obj, IsotonicCalibrator) and (len(obj.x) != len(obj.y) or not obj.x):
        raise ValueError("isotonic calibrator: knots x and y must be non-empty lists of the same length")
    return obj


class BinnedLabels:
    """(probability, 0/1 label) rows summed per cell of a fine grid on the logit scale: the sufficient statistics
    of a calibrator fit in constant memory (module docstring, "Fitting in constant memory").

    ``n_bins`` equal cells over logit p ∈ [logit ε, logit(1 − ε)], ε = 1e-7 (scores beyond go to the end cells);
    per cell the rows, the positives and Σp.
    """

    def __init__(self, n_bins: int = FIT_BINS) -> None:
        if int(n_bins) < 1:
            raise ValueError(f"n_bins={n_bins}: expected ≥ 1")
        self.n_bins = int(n_bins)
        self.count = np.zeros(self.n_bins)
        self.pos = np.zeros(self.n_bins)
        self.p_sum = np.zeros(self.n_bins)

    def update(self, p, y) -> "BinnedLabels":
        p = np.asarray(p, dtype=np.float64).reshape(-1)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if p.shape != y.shape:
            raise ValueError(f"BinnedLabels.update: {p.size} scores but {y.size} labels")
        hi = math.log((1 - _EPS) / _EPS)
        q = np.clip(p, _EPS, 1 - _EPS)
        cell = np.floor((np.log(q) - np.log1p(-q) + hi) * (self.n_bins / (2 * hi))).astype(np.int64)
        cell = np.clip(cell, 0, self.n_bins - 1)
        self.count += np.bincount(cell, minlength=self.n_bins)
        self.pos += np.bincount(cell, weights=y, minlength=self.n_bins)
        self.p_sum += np.bincount(cell, weights=p, minlength=self.n_bins)
        return self

    @property
    def rows(self) -> int:
        return int(self.count.sum())

    @property
    def positives(self) -> float:
        return float(self.pos.sum())

    def points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(p, y, weight)``: per non-empty cell its mean probability twice, with label 1 weighted by its positives
        and label 0 by its negatives (zero weights dropped): the rows, each moved to its cell's mean."""
        keep = self.count > 0
        mean = self.p_sum[keep] / self.count[keep]
        pos, neg = self.pos[keep], self.count[keep] - self.pos[keep]
        p = np.concatenate([mean, mean])
        y = np.concatenate([np.ones_like(mean), np.zeros_like(mean)])
        w = np.concatenate([pos, neg])
        nz = w > 0
        return p[nz], y[nz], w[nz]


# --------------------------------------------------------------------------------------------- the run's file


@dataclass
class Calibration:
    """Everything that turns a model's raw head scores into the probabilities the later stages use.

    ``betas``: the keep rate per task used by Eq. 3 (β_t for the multi-task heads, β for every task of the
    binary objective); ``calibrators``: one post-hoc calibrator per task, applied after the correction.
    """

    tasks: list[str]
    betas: dict[str, float]
    calibrators: dict[str, Calibrator] = field(default_factory=dict)
    method: str = "none"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tasks = [str(t) for t in self.tasks]
        missing = [t for t in self.tasks if t not in self.betas]
        if missing:
            raise ValueError(f"calibration has no β for task(s) {missing}")
        _check_beta([self.betas[t] for t in self.tasks])
        for t in self.tasks:
            self.calibrators.setdefault(t, IdentityCalibrator())

    @property
    def has_calibrators(self) -> bool:
        return any(not isinstance(c, IdentityCalibrator) for c in self.calibrators.values())

    def beta_vector(self, tasks: Sequence[str] | None = None) -> list[float]:
        return [float(self.betas[t]) for t in (tasks or self.tasks)]

    def correct(self, p_raw, tasks: Sequence[str] | None = None):
        """Eq. 3 per column of a ``[N, T]`` array or tensor (columns in ``tasks`` order)."""
        return correct(p_raw, np.asarray(self.beta_vector(tasks)))

    def calibrate(self, p_corrected, tasks: Sequence[str] | None = None):
        """The post-hoc calibrators per column of a corrected ``[N, T]`` array or tensor."""
        tasks = list(tasks or self.tasks)
        if not self.has_calibrators:
            return p_corrected
        cols = [self.calibrators[t].apply(p_corrected[:, j]) for j, t in enumerate(tasks)]
        return torch.stack(cols, dim=1) if isinstance(p_corrected, Tensor) else np.stack(cols, axis=1)

    def apply(self, p_raw, tasks: Sequence[str] | None = None):
        """Raw scores ``[N, T]`` → corrected and calibrated probabilities ``[N, T]``."""
        return self.calibrate(self.correct(p_raw, tasks), tasks)

    def fit(self, p_corrected, labels, method: str) -> "Calibration":
        """Fit one ``method`` calibrator per task on corrected probabilities ``[N, T]`` and 0/1 labels ``[N, T]``."""
        p = np.asarray(p_corrected, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64)
        if p.shape != y.shape or p.ndim != 2 or p.shape[1] != len(self.tasks):
            raise ValueError(f"calibration fit: probabilities {p.shape} and labels {y.shape} must both be [N, {len(self.tasks)}]")
        return self._fit_each(method, {t: (p.shape[0], float(y[:, j].sum()), lambda c, j=j: c.fit(p[:, j], y[:, j]))
                                       for j, t in enumerate(self.tasks)})

    def fit_binned(self, binned: Mapping[str, BinnedLabels], method: str) -> "Calibration":
        """Fit one ``method`` calibrator per task on its :class:`BinnedLabels` (corrected probabilities and labels
        summed on the fitting grid, e.g. by :func:`mtrank.prediction.fit_calibration`)."""
        missing = [t for t in self.tasks if t not in binned]
        if missing:
            raise ValueError(f"calibration fit: no binned scores for task(s) {missing}")
        def fit(c: Calibrator, b: BinnedLabels) -> Calibrator:
            p, y, w = b.points()
            return c.fit(p, y, weight=w)

        return self._fit_each(method, {t: (binned[t].rows, binned[t].positives, lambda c, b=binned[t]: fit(c, b))
                                       for t in self.tasks})

    def _fit_each(self, method: str, per_task: Mapping[str, tuple[int, float, Any]]) -> "Calibration":
        """``per_task``: task → (rows, positives, fit(calibrator) → calibrator)."""
        self.method = method or "none"
        build_calibrator(self.method)  # an unknown method fails here, before any fitting
        fitted = {}
        for t in self.tasks:
            rows, positives, fit = per_task[t]
            if self.method != "none" and (rows == 0 or positives in (0, rows)):
                log.warning("calibration: task '%s' has %s in the fitting rows; left uncalibrated (identity)", t,
                            "no rows" if rows == 0 else "a single class")
                fitted[t] = IdentityCalibrator()
                continue
            fitted[t] = fit(build_calibrator(self.method))
        self.calibrators = fitted
        return self

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": _FORMAT_VERSION,
            "tasks": list(self.tasks),
            "method": self.method,
            "betas": {t: float(self.betas[t]) for t in self.tasks},
            "calibrators": {t: self.calibrators[t].to_dict() for t in self.tasks},
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Calibration":
        if d.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"calibration format_version {d.get('format_version')}; this mtrank reads {_FORMAT_VERSION}")
        return cls(
            tasks=list(d["tasks"]),
            betas={k: float(v) for k, v in d["betas"].items()},
            calibrators={t: calibrator_from_dict(c) for t, c in (d.get("calibrators") or {}).items()},
            method=str(d.get("method", "none")),
            info=dict(d.get("info") or {}),
        )

    def save(self, path: Path | str) -> Path:
        """Write the JSON atomically (temp file + rename) to ``path`` (a ``.json`` file, or a folder that gets
        ``calibration.json``); returns the file's path."""
        path = Path(path)
        if path.suffix != ".json":
            path = path / CALIBRATION_FILE
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: Path | str) -> "Calibration":
        path = Path(path)
        if path.suffix != ".json":
            path = path / CALIBRATION_FILE
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no calibration file at {path}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"calibration file {path} is not valid JSON: {exc}") from None
        try:
            return cls.from_dict(d)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"calibration file {path} is malformed: {exc}") from None

    @classmethod
    def from_downsampling(cls, downsampling: Mapping[str, Any], tasks: Sequence[str], objective: str) -> "Calibration":
        """The correction-only calibration of a model: β_t per task (multitask) or β for all (binary);
        1 for all when the loss reweighted the sampled rows (``mode: reweight``)."""
        beta = float(downsampling.get("beta", 1.0))
        mode = downsampling.get("mode", "correct")
        if mode not in DOWNSAMPLING_MODES:
            raise ValueError(f"downsampling mode '{mode}': expected one of {list(DOWNSAMPLING_MODES)}")
        eff = downsampling.get("effective_beta") or {}
        if mode == "reweight":
            betas = {t: 1.0 for t in tasks}
        else:
            betas = {t: (float(eff.get(t, beta)) if objective == "multitask" else beta) for t in tasks}
        return cls(tasks=list(tasks), betas=betas, info={"beta": beta, "objective": objective, "mode": mode})


