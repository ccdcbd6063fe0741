"""Objective and outcome constraints (Eq. 5, S3–S5), and the arithmetic that checks them.

An outcome constraint is written as Ax writes it: ``"f_click >= 1.0 * baseline"`` (relative: at least
``c · b`` where ``b`` is the metric of the evaluated baseline arm) or ``"f_click >= 0.12"`` (absolute).
:meth:`OutcomeConstraint.threshold` is the number a trial is held to — the same number Ax's own
derelativisation computes from the raw baseline value, so the feasibility this module reports is the
feasibility Ax optimises for.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "OutcomeConstraint",
    "parse_constraints",
    "duplicated",
    "relative_constraints",
    "thresholds",
    "violations",
    "is_feasible",
]

_PATTERN = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][\w./@:-]*)\s*(?P<op>>=|<=)\s*(?P<bound>[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)"
    r"\s*(?P<rel>\*\s*baseline)?\s*$"
)


@dataclass(frozen=True)
class OutcomeConstraint:
    """``metric >= bound`` / ``metric <= bound``; with ``relative`` the bound is ``bound · baseline``."""

    metric: str
    op: str
    bound: float
    relative: bool = False

    def __post_init__(self) -> None:
        if self.op not in (">=", "<="):
            raise ValueError(f"outcome constraint on {self.metric}: op must be '>=' or '<=', got {self.op!r}")
        if not math.isfinite(self.bound):
            raise ValueError(f"outcome constraint on {self.metric}: bound must be finite, got {self.bound}")

    @classmethod
    def parse(cls, text: str) -> OutcomeConstraint:
        m = _PATTERN.match(text)
        if m is None:
            raise ValueError(
                f"cannot read outcome constraint {text!r}; expected 'metric >= 0.9 * baseline' (relative to the "
                f"baseline arm) or 'metric >= 0.3' (absolute), with >= or <="
            )
        return cls(m["metric"], m["op"], float(m["bound"]), m["rel"] is not None)

    def ax_string(self) -> str:
        """The constraint as Ax's ``configure_optimization`` reads it."""
        b = repr(float(self.bound))
        return f"{self.metric} {self.op} {b} * baseline" if self.relative else f"{self.metric} {self.op} {b}"

    def threshold(self, baseline: float | None = None) -> float:
        """The value a trial is held to.

        Relative: ``c · b`` for a positive baseline ``b`` (every PR-AUC, NDCG or AUROC). Ax (≥ 1.3) stores
        ``c`` as a change of ``(c − 1)`` relative to ``|b|``, so for a negative ``b`` the threshold is
        ``b · (1 + sign(b) · (c − 1))`` — mirrored here so both agree.
        """
        if not self.relative:
            return float(self.bound)
        if baseline is None or not math.isfinite(baseline):
            raise ValueError(f"constraint {self.ax_string()!r} is relative but the baseline's {self.metric} is unknown")
        c = float(self.bound)
        return float(baseline) * (1.0 + math.copysign(1.0, baseline) * (c - 1.0)) if baseline != 0 else 0.0

    def satisfied(self, value: float, baseline: float | None = None) -> bool:
        if value is None or not math.isfinite(value):
            return False
        t = self.threshold(baseline)
        return value >= t if self.op == ">=" else value <= t

    def __str__(self) -> str:
        return self.ax_string()


def parse_constraints(items: Sequence[str | OutcomeConstraint] | None) -> list[OutcomeConstraint]:
    return [c if isinstance(c, OutcomeConstraint) else OutcomeConstraint.parse(str(c)) for c in (items or [])]


def duplicated(constraints: Sequence[OutcomeConstraint]) -> list[tuple[int, int]]:
    """``(i, j)`` for each constraint ``j`` that bounds the same metric on the same side as an earlier ``i``
    (Ax refuses two such constraints with a raw error; one of them is always redundant or contradictory)."""
    first: dict[tuple[str, str], int] = {}
    out = []
    for j, c in enumerate(constraints):
        k = (c.metric, c.op)
        if k in first:
            out.append((first[k], j))
        else:
            first[k] = j
    return out


def relative_constraints(ratios: Mapping[str, float] | None, metric_name: str = "{}") -> list[OutcomeConstraint]:
    """``{task: c_task}`` → ``metric(task) >= c_task · baseline`` for each task (S3–S5)."""
    out = []
    for task, c in (ratios or {}).items():
        if c is None:
            continue
        out.append(OutcomeConstraint(metric_name.format(task), ">=", float(c), relative=True))
    return out


def thresholds(constraints: Sequence[OutcomeConstraint], baseline: Mapping[str, float] | None) -> dict[str, float]:
    """``{constraint text: threshold}`` given the baseline arm's metrics."""
    base = baseline or {}
    return {c.ax_string(): c.threshold(base.get(c.metric)) for c in constraints}


def violations(
    values: Mapping[str, float], constraints: Sequence[OutcomeConstraint], baseline: Mapping[str, float] | None
) -> list[str]:
    """The constraints ``values`` violates, as readable strings (empty when feasible)."""
    base = baseline or {}
    out = []
    for c in constraints:
        v = values.get(c.metric)
        if v is None or not c.satisfied(float(v), base.get(c.metric)):
            out.append(f"{c.metric}={v} violates {c.op} {c.threshold(base.get(c.metric)):.6g}")
    return out


def is_feasible(
    values: Mapping[str, float], constraints: Sequence[OutcomeConstraint], baseline: Mapping[str, float] | None
) -> bool:
    return not violations(values, constraints, baseline)
