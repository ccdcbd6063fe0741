"""The utility config (``conf/utility/*.yaml``: Eq. 4's weights and Eq. 5's search problem), as a typed object
that checks itself; every message names the full key (``utility.bounds.save``).

::

    weights: {save: 0.25, click: 0.2, ...}    the hand-picked (baseline) weight of each task in u
    bounds: {save: [0, 1], ...}               S2: [low, high] for exactly the weighted tasks, low < high
    total: 1.0                                S1: Σ_t w_t, strictly between the lows' sum and the highs' sum
    derived: closeup                          the weight computed as total − Σ others (a weighted task)
    objective: long_click                     the task whose f_t is maximised
    constraints: {click: 1.0, ...}            S3–S5 (f_t ≥ c_t · b_t), never on the objective
    extra_constraints: ["f_hide <= 1.0 * baseline"]

:class:`mtrank.tuning.problem.UtilityProblem` builds the search problem from it (outcome constraints, the
search space, the baseline arm inside S1/S2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mtrank.errors import Problems
from mtrank.utils.config_fields import is_number

__all__ = ["UtilityConfig", "KEYS"]

KEYS = ("weights", "bounds", "total", "derived", "objective", "constraints", "extra_constraints")
_TOL = 1e-9


@dataclass(frozen=True)
class UtilityConfig:
    weights: Mapping[str, Any]
    bounds: Mapping[str, Any] = field(default_factory=dict)
    total: Any = None  # None: the weights' sum
    derived: Any = None  # None: the last weighted task
    objective: Any = None
    constraints: Mapping[str, Any] = field(default_factory=dict)
    extra_constraints: tuple[str, ...] = ()
    key: str = "utility"

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", {str(k): v for k, v in dict(self.weights or {}).items()})
        object.__setattr__(self, "bounds", {str(k): v for k, v in dict(self.bounds or {}).items()})
        object.__setattr__(self, "constraints", {str(k): v for k, v in dict(self.constraints or {}).items()})
        object.__setattr__(self, "extra_constraints", tuple(str(c) for c in self.extra_constraints or ()))
        p = Problems()
        self._check(p)
        p.raise_if_any()

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], key: str = "utility") -> UtilityConfig:
        m = dict(m)
        unknown = sorted(set(m) - set(KEYS))
        if unknown:
            p = Problems()
            p.add(key, f"{key}: unknown key(s) {unknown}; allowed: {sorted(KEYS)}")
            p.raise_if_any()
        return cls(
            weights=m.get("weights") or {},
            bounds=m.get("bounds") or {},
            total=m.get("total"),
            derived=m.get("derived"),
            objective=m.get("objective"),
            constraints=m.get("constraints") or {},
            extra_constraints=tuple(m.get("extra_constraints") or ()),
            key=key,
        )

    # ------------------------------------------------------------------ the settled values
    @property
    def tasks(self) -> list[str]:
        return list(self.weights)

    @property
    def weight_values(self) -> dict[str, float]:
        return {t: float(w) for t, w in self.weights.items()}

    @property
    def bound_pairs(self) -> dict[str, tuple[float, float]]:
        return {t: (float(self.bounds[t][0]), float(self.bounds[t][1])) for t in self.weights}

    @property
    def total_value(self) -> float:
        return float(self.total) if self.total is not None else sum(self.weight_values.values())

    @property
    def derived_task(self) -> str:
        return str(self.derived or list(self.weights)[-1])

    # ------------------------------------------------------------------ checks
    def _check(self, p: Problems) -> None:
        key, weights, bounds = self.key, self.weights, self.bounds
        if not weights:
            p.add(f"{key}.weights", f"{key}.weights is empty: give the hand-picked weight of each task in u")
            return
        for t, w in weights.items():
            if not is_number(w):
                p.add(f"{key}.weights.{t}", f"{key}.weights.{t} = {w!r}: expected a number")
        for t, b in bounds.items():
            if not (isinstance(b, (list, tuple)) and len(b) == 2 and all(is_number(x) for x in b) and b[0] < b[1]):
                p.add(f"{key}.bounds.{t}", f"{key}.bounds.{t} = {b!r}: expected [low, high] with low < high")
        missing = [t for t in weights if t not in bounds]
        extra = [t for t in bounds if t not in weights]
        if missing or extra:
            p.add(
                f"{key}.bounds",
                f"{key}.bounds must give [low, high] for exactly the tasks of {key}.weights "
                f"{list(weights)}; missing {missing}, unknown {extra}",
            )
        if self.total is not None and not is_number(self.total):
            p.add(f"{key}.total", f"{key}.total = {self.total!r}: expected a number")
        elif not p.has(key):
            self._check_total(p)
        if str(self.derived_task) not in weights:
            p.add(f"{key}.derived", f"{key}.derived={self.derived!r} is not one of the weighted tasks {list(weights)}")
        if not self.objective:
            p.add(f"{key}.objective", f"{key}.objective is missing: the task whose f_t is maximised (e.g. long_click)")
        elif str(self.objective) in self.constraints:
            p.add(
                f"{key}.constraints",
                f"{key}.constraints: the objective {self.objective} cannot also be constrained",
            )

    def _check_total(self, p: Problems) -> None:
        """S1 must leave something to search within S2: the total strictly between the lows' and highs' sums."""
        key, total, pairs = self.key, self.total, self.bound_pairs
        lo, hi = sum(b[0] for b in pairs.values()), sum(b[1] for b in pairs.values())
        if total is None:
            return
        if not lo - _TOL <= float(total) <= hi + _TOL:
            p.add(
                f"{key}.total",
                f"{key}.total = {total}: the weights cannot add up to it within {key}.bounds "
                f"(their lows add up to {lo}, their highs to {hi})",
            )
        elif not lo + _TOL < float(total) < hi - _TOL:
            side = "lower" if abs(float(total) - lo) <= _TOL else "upper"
            p.add(
                f"{key}.total",
                f"{key}.total = {total}: the weights add up to it only with each at its {side} "
                f"bound in {key}.bounds, which leaves nothing to search; expected a total "
                f"strictly between {lo} (the lows' sum) and {hi} (the highs' sum)",
            )
