"""Eq. 5 as configuration: the utility problem read from a ``conf/utility/*.yaml`` mapping.

::

    tasks weighted in u      weights: {save: 0.25, click: 0.2, long_click: 0.35, closeup: 0.2}   (baseline b)
    S1                       total: 1.0            derived: closeup   (the weight computed as total − Σ others)
    S2                       bounds: {save: [0, 1], ..., hide: [-1, 0]}
    objective                objective: long_click (f_long_click is maximised)
    S3–S5                    constraints: {click: 1.0, save: 0.9, closeup: 1.0}   (f_t ≥ c_t · b_t)
                             extra_constraints: ["f_hide <= 1.0 * baseline"]     (any other, Ax syntax)

Ax sees parameters ``w_<task>`` and metrics ``f_<task>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mtrank.tuning.outcomes import (
    OutcomeConstraint,
    duplicated,
    parse_constraints,
    relative_constraints,
)
from mtrank.tuning.space import SearchSpace, weight_space

__all__ = ["UtilityProblem", "PARAM_PREFIX", "METRIC_PREFIX"]

PARAM_PREFIX = "w_"
METRIC_PREFIX = "f_"


@dataclass(frozen=True)
class UtilityProblem:
    weights: dict[str, float]  # the hand-picked (baseline) weights, one per task in u
    bounds: dict[str, tuple[float, float]]
    total: float
    derived: str
    objective: str
    constraints: tuple[OutcomeConstraint, ...]

    @property
    def tasks(self) -> list[str]:
        return list(self.weights)

    @property
    def objective_metric(self) -> str:
        return METRIC_PREFIX + self.objective

    @property
    def label_tasks(self) -> list[str]:
        """Tasks whose labels the objective and the constraints need."""
        need = [self.objective] + [c.metric[len(METRIC_PREFIX) :] for c in self.constraints]
        return list(dict.fromkeys(need))

    @property
    def space(self) -> SearchSpace:
        return weight_space(self.bounds, self.total, self.derived, PARAM_PREFIX)

    def params(self, weights: Mapping[str, float]) -> dict[str, float]:
        """Task weights → Ax parameters (the derived one recomputed so S1 holds exactly)."""
        return self.space.complete({PARAM_PREFIX + t: float(w) for t, w in weights.items()})

    @staticmethod
    def weights_of(params: Mapping[str, Any]) -> dict[str, float]:
        """Ax parameters → task weights."""
        return {k[len(PARAM_PREFIX) :]: float(v) for k, v in params.items() if k.startswith(PARAM_PREFIX)}

    @staticmethod
    def metrics_of(values: Mapping[str, float]) -> dict[str, float]:
        """``{task: f_t}`` → Ax metrics ``{f_task: f_t}``."""
        return {METRIC_PREFIX + t: float(v) for t, v in values.items()}

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], where: str = "utility") -> UtilityProblem:
        m = dict(m)
        allowed = {"weights", "bounds", "total", "derived", "objective", "constraints", "extra_constraints"}
        unknown = sorted(set(m) - allowed)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        weights = {str(k): float(v) for k, v in dict(m.get("weights") or {}).items()}
        if not weights:
            raise ValueError(f"{where}.weights is empty: give the hand-picked weight of each task in u")
        bounds_in = dict(m.get("bounds") or {})
        missing = [t for t in weights if t not in bounds_in]
        extra = [t for t in bounds_in if t not in weights]
        if missing or extra:
            raise ValueError(
                f"{where}.bounds must give [low, high] for exactly the tasks of {where}.weights "
                f"{list(weights)}; missing {missing}, unknown {extra}"
            )
        bounds = {t: (float(bounds_in[t][0]), float(bounds_in[t][1])) for t in weights}
        total = float(m.get("total", sum(weights.values())))
        derived = str(m.get("derived") or list(weights)[-1])
        if derived not in weights:
            raise ValueError(f"{where}.derived={derived!r} is not one of the weighted tasks {list(weights)}")
        objective = str(m.get("objective") or "")
        if not objective:
            raise ValueError(f"{where}.objective is missing: the task whose f_t is maximised (e.g. long_click)")
        ratios = {str(k): v for k, v in dict(m.get("constraints") or {}).items()}
        if objective in ratios:
            raise ValueError(f"{where}.constraints: the objective {objective} cannot also be constrained")
        constraints = relative_constraints(ratios, METRIC_PREFIX + "{}") + parse_constraints(
            list(m.get("extra_constraints") or [])
        )
        for c in constraints:
            if not c.metric.startswith(METRIC_PREFIX):
                raise ValueError(f"{where}: constraint {c} must be on a metric f_<task>")
        keys = [f"{where}.constraints.{t}" for t, c in ratios.items() if c is not None] + [
            f"{where}.extra_constraints[{i}]" for i in range(len(m.get("extra_constraints") or []))
        ]
        for i, j in duplicated(constraints):
            raise ValueError(
                f"{keys[j]} = '{constraints[j]}' bounds {constraints[j].metric} from the same side as "
                f"{keys[i]} = '{constraints[i]}': keep one of them"
            )
        prob = cls(weights, bounds, total, derived, objective, tuple(constraints))
        problems = prob.space.check(
            prob.space.complete({PARAM_PREFIX + t: w for t, w in weights.items() if t != derived})
            | {PARAM_PREFIX + derived: weights[derived]}
        )
        if problems:
            raise ValueError(f"{where}.weights (the baseline arm) break S1/S2: {problems}")
        return prob
