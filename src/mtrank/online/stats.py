"""Confidence-interval arithmetic of an A/B test randomised by user (pure numpy, no I/O).

Users are the randomisation unit, so every metric is computed from per-user totals and its variance counts
users, not impressions (impressions of one user are correlated):

* **volume** ``V = Σ_u y_u / n`` (engagements per user): a mean over users, ``Var(V) = s_y² / n``;
* **propensity** ``P = Σ_u y_u / Σ_u x_u`` (engaged impressions per impression): a ratio of two means over
  users. The delta method gives ``Var(P) ≈ (s_y² − 2 P s_xy + P² s_x²) / (n x̄²)`` (Deng et al. 2018,
  "Applying the delta method in metric analytics");
* **relative lift** of a treatment arm T against the control C (disjoint users, so independent):
  ``L = T / C − 1``. On the log scale ``Var(log T − log C) ≈ Var_T / T² + Var_C / C²``, so the interval
  ``exp(log(T / C) ± z · sd) − 1`` stays above −100 %; the standard error of ``L`` itself is
  ``(T / C) · sd`` (what Ax is told).

``s²`` and ``s_xy`` are sample (co)variances with ``n − 1`` in the denominator. ``z`` is the normal quantile
of the two-sided level (1.959964 for 95 %).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = ["Estimate", "Lift", "z_value", "mean_estimate", "ratio_estimate", "relative_lift"]


def z_value(level: float = 0.95) -> float:
    """Two-sided normal quantile: 1.959964 for ``level=0.95``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2.0)


@dataclass(frozen=True)
class Estimate:
    """A metric of one arm: value, standard error, the normal interval and the number of users."""

    value: float
    se: float
    low: float
    high: float
    n_users: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Lift:
    """Relative lift ``T / C − 1`` with its standard error and log-scale interval (fractions, not %)."""

    value: float
    se: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.low > 0.0 or self.high < 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant}


def _as_users(values: np.ndarray, name: str) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be one value per user (1-d), got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains non-finite values")
    return v


def mean_estimate(y: np.ndarray, level: float = 0.95) -> Estimate:
    """Mean over users of the per-user totals ``y`` (e.g. engagements per user)."""
    y = _as_users(y, "y")
    n = len(y)
    if n < 2:
        raise ValueError(f"a mean over users needs at least 2 users, got {n}")
    m = float(y.mean())
    se = math.sqrt(float(y.var(ddof=1)) / n)
    z = z_value(level)
    return Estimate(m, se, m - z * se, m + z * se, n)


def ratio_estimate(y: np.ndarray, x: np.ndarray, level: float = 0.95) -> Estimate:
    """``Σ y / Σ x`` over users with its delta-method standard error (e.g. engaged impressions / impressions)."""
    y, x = _as_users(y, "y"), _as_users(x, "x")
    if y.shape != x.shape:
        raise ValueError(f"y and x must have one value per user each, got {y.shape} and {x.shape}")
    n = len(y)
    if n < 2:
        raise ValueError(f"a ratio over users needs at least 2 users, got {n}")
    xm = float(x.mean())
    if xm <= 0:
        raise ValueError("the denominator totals add up to 0: no impressions")
    r = float(y.mean()) / xm
    cov = np.cov(np.vstack([y, x]), ddof=1)
    var = (cov[0, 0] - 2.0 * r * cov[0, 1] + r * r * cov[1, 1]) / (n * xm * xm)
    se = math.sqrt(max(float(var), 0.0))
    z = z_value(level)
    return Estimate(r, se, r - z * se, r + z * se, n)


def relative_lift(treatment: Estimate, control: Estimate, level: float = 0.95) -> Lift:
    """``T / C − 1`` for independent arms, with the log-ratio (delta-method) interval."""
    t, c = treatment.value, control.value
    if c <= 0 or t <= 0:
        # no engagement at all in an arm: the ratio is 0 or undefined, the log interval does not exist
        value = t / c - 1.0 if c > 0 else math.nan
        return Lift(value, math.nan, math.nan, math.nan)
    sd = math.sqrt((treatment.se / t) ** 2 + (control.se / c) ** 2)
    ratio = t / c
    z = z_value(level)
    return Lift(ratio - 1.0, ratio * sd, ratio * math.exp(-z * sd) - 1.0, ratio * math.exp(z * sd) - 1.0)
