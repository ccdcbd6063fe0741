"""Post-hoc calibrators fitted on validation predictions: temperature, Platt, isotonic; binned fitting."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtrank.calibration.config import METHODS, CalibrationConfig

_EPS = 1e-7


FIT_BINS = 1 << 16  # cells of BinnedLabels' grid on the logit scale


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


def _fit_logistic(
    x: Tensor, y: Tensor, slope0: float, intercept: bool, weight: Tensor | None = None
) -> tuple[float, float]:
    """Maximum-likelihood σ(a x + b) on one feature (full-batch L-BFGS; b fixed at 0 without intercept); rows
    weighted by ``weight`` when given (a row of weight w counts as w rows)."""
    a = torch.tensor([slope0], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=intercept)
    params = [a, b] if intercept else [a]
    opt = torch.optim.LBFGS(
        params, lr=1.0, max_iter=200, tolerance_grad=1e-10, tolerance_change=1e-12, line_search_fn="strong_wolfe"
    )
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

    def fit(self, p, y, weight=None) -> Calibrator:
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

    def fit(self, p, y, weight=None) -> TemperatureCalibrator:
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

    def fit(self, p, y, weight=None) -> PlattCalibrator:
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

    def fit(self, p, y, weight=None) -> IsotonicCalibrator:
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


_CLASSES = {
    "none": IdentityCalibrator,
    "temperature": TemperatureCalibrator,
    "platt": PlattCalibrator,
    "isotonic": IsotonicCalibrator,
}


def build_calibrator(method: str | None) -> Calibrator:
    """An unfitted calibrator for ``method`` in :data:`METHODS` (None means ``none``)."""
    return _CLASSES[CalibrationConfig(method=method or "none").method]()


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

    def update(self, p, y) -> BinnedLabels:
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
