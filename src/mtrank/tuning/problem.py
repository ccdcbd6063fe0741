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

from mtrank.errors import Problems
from mtrank.tuning.outcomes import (
    OutcomeConstraint,
    duplicated,
    parse_constraints,
    relative_constraints,
)
from mtrank.tuning.space import SearchSpace, weight_space
from mtrank.utility.config import UtilityConfig

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
        """The problem of a ``utility`` mapping: its keys checked by :class:`~mtrank.utility.config.UtilityConfig`,
        then the outcome constraints and the baseline arm; a :class:`~mtrank.errors.ConfigError` names the key."""
        cfg = UtilityConfig.from_mapping(m, where)
        weights, objective, p = cfg.weight_values, str(cfg.objective), Problems()
        try:
            constraints = relative_constraints(cfg.constraints, METRIC_PREFIX + "{}") + parse_constraints(
                list(cfg.extra_constraints)
            )
        except ValueError as exc:
            p.add(f"{where}.extra_constraints", f"{where}: {exc}")
            p.raise_if_any()
        for c in constraints:
            if not c.metric.startswith(METRIC_PREFIX):
                p.add(where, f"{where}: constraint {c} must be on a metric f_<task>")
        keys = [f"{where}.constraints.{t}" for t, c in cfg.constraints.items() if c is not None] + [
            f"{where}.extra_constraints[{i}]" for i in range(len(cfg.extra_constraints))
        ]
        for i, j in duplicated(constraints):
            p.add(
                keys[j].partition("[")[0],
                f"{keys[j]} = '{constraints[j]}' bounds {constraints[j].metric} from the same side as "
                f"{keys[i]} = '{constraints[i]}': keep one of them",
            )
        p.raise_if_any()
        derived = cfg.derived_task
        prob = cls(weights, cfg.bound_pairs, cfg.total_value, derived, objective, tuple(constraints))
        problems = prob.space.check(
            prob.space.complete({PARAM_PREFIX + t: w for t, w in weights.items() if t != derived})
            | {PARAM_PREFIX + derived: weights[derived]}
        )
        if problems:
            p.add(f"{where}.weights", f"{where}.weights (the baseline arm) break S1/S2: {problems}")
        p.raise_if_any()
        return prob
