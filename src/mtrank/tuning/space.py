"""Search spaces for Ax, with a sum constraint held exactly (S1) by a derived parameter.

Ax's public API takes linear parameter constraints as inequalities only, so ``Σ_i x_i = C`` (Eq. 5, S1)
is written as: every parameter but one (``derived``) is searched; the derived one is
``C − Σ others`` (an Ax ``DerivedParameterConfig``), and its bounds ``l ≤ x_derived ≤ h`` (S2) become two
inequalities on the others: ``Σ others ≤ C − l`` and ``Σ others ≥ C − h``.

A space is described by plain data (:class:`Range`, :class:`Choice`, :class:`SumConstraint`) and turned
into Ax configs only by :meth:`SearchSpace.ax_parameters` (Ax is imported there, not at import time).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mtrank.tuning.simplex import BoxMap

__all__ = ["Range", "Choice", "SumConstraint", "SearchSpace", "weight_space"]

# |Σ w − C| allowed by check(): floating-point rounding of Ax's C − Σ others, nothing more.
SUM_TOL = 1e-9
# bound violation allowed by check(): Ax's optimiser meets linear constraints to ~1e-9 relative.
BOUND_TOL = 1e-6


@dataclass(frozen=True)
class Range:
    """A float or int parameter in ``[low, high]`` (log scale if ``log``)."""

    name: str
    low: float
    high: float
    kind: str = "float"  # float | int
    log: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("float", "int"):
            raise ValueError(f"parameter {self.name}: kind must be 'float' or 'int', got {self.kind!r}")
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(
                f"parameter {self.name}: bounds must be finite with low < high, got [{self.low}, {self.high}]"
            )
        if self.log and self.low <= 0:
            raise ValueError(f"parameter {self.name}: a log-scale range needs low > 0, got {self.low}")


@dataclass(frozen=True)
class Choice:
    """A parameter taking one of ``values``. With ``literal`` the values are Hydra override literals (a list
    ``[1,2]`` or a mapping ``{a:1}`` written as text): Ax chooses among the strings, the job gets the list or
    mapping they spell."""

    name: str
    values: tuple[Any, ...]
    ordered: bool | None = None
    literal: bool = False

    def __post_init__(self) -> None:
        if len(self.values) < 1:
            raise ValueError(f"parameter {self.name}: a choice needs at least one value")


@dataclass(frozen=True)
class SumConstraint:
    """``Σ_{n in names} x_n = total``, held exactly by deriving ``derived`` from the others."""

    names: tuple[str, ...]
    total: float
    derived: str

    def __post_init__(self) -> None:
        if len(self.names) < 2:
            raise ValueError(f"a sum constraint needs at least two parameters, got {list(self.names)}")
        if self.derived not in self.names:
            raise ValueError(f"sum constraint: derived={self.derived!r} is not one of {list(self.names)}")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"sum constraint: repeated parameter names in {list(self.names)}")


def _fmt(x: float) -> str:
    return repr(float(x))


@dataclass(frozen=True)
class SearchSpace:
    """Parameters, an optional exact sum constraint and extra linear inequalities in Ax syntax."""

    params: tuple[Range | Choice, ...]
    sum_constraint: SumConstraint | None = None
    parameter_constraints: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"parameter(s) {dup} defined more than once")
        sc = self.sum_constraint
        if sc is None:
            return
        by_name = self.by_name
        for n in sc.names:
            if n not in by_name:
                raise ValueError(f"sum constraint names {n!r}, which is not a parameter; parameters: {names}")
            p = by_name[n]
            if not isinstance(p, Range) or p.kind != "float" or p.log:
                raise ValueError(f"sum constraint: {n} must be a linear-scale float range")
        lo = sum(by_name[n].low for n in sc.names)  # type: ignore[union-attr]
        hi = sum(by_name[n].high for n in sc.names)  # type: ignore[union-attr]
        if not lo - SUM_TOL <= sc.total <= hi + SUM_TOL:
            raise ValueError(
                f"sum constraint: total={sc.total} cannot be reached within the bounds "
                f"(their lows add up to {lo}, their highs to {hi})"
            )
        if not lo + SUM_TOL < sc.total < hi - SUM_TOL:
            raise ValueError(
                f"sum constraint: total={sc.total} is reached only with every parameter at its "
                f"{'lower' if abs(sc.total - lo) <= SUM_TOL else 'upper'} bound, which leaves nothing to search; "
                f"expected a total strictly between the lows' sum {lo} and the highs' sum {hi}"
            )

    # ------------------------------------------------------------------ views
    @property
    def by_name(self) -> dict[str, Range | Choice]:
        return {p.name: p for p in self.params}

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    @property
    def free_names(self) -> list[str]:
        """Parameters Ax searches (all but the derived one)."""
        d = self.sum_constraint.derived if self.sum_constraint else None
        return [p.name for p in self.params if p.name != d]

    @property
    def n_points(self) -> int | None:
        """How many distinct points a discrete space has (choices and integer ranges, no constraints), else
        None (a float range or a constraint: uncountable or not counted)."""
        if self.sum_constraint is not None or self.parameter_constraints:
            return None
        n = 1
        for p in self.params:
            if isinstance(p, Choice):
                n *= len(set(p.values))
            elif p.kind == "int":
                n *= int(p.high) - int(p.low) + 1
            else:
                return None
        return n

    def _others(self) -> list[str]:
        sc = self.sum_constraint
        assert sc is not None
        return [n for n in sc.names if n != sc.derived]

    # ------------------------------------------------------------------ S1 as a box (mtrank.tuning.simplex)
    def box_map(self) -> BoxMap | None:
        """The stick-breaking map of the sum constraint's weights onto a box, or None without a sum constraint."""
        sc = self.sum_constraint
        if sc is None:
            return None
        bounds = {n: (p.low, p.high) for n in sc.names if isinstance(p := self.by_name[n], Range)}
        return BoxMap.of(sc.names, bounds, sc.total, sc.derived)

    def ax_names(self, box: bool = False) -> list[str]:
        """The parameters of the Ax experiment: every parameter, or with ``box`` the box coordinates in place of
        the sum constraint's weights."""
        bm = self.box_map() if box else None
        if bm is None:
            return self.names
        return [p.name for p in self.params if p.name not in bm.names] + bm.box_names

    def to_ax(self, values: Mapping[str, Any], box: bool = False) -> dict[str, Any]:
        """Parameter values (complete) → the Ax experiment's parameters."""
        bm = self.box_map() if box else None
        if bm is None:
            return dict(values)
        return {k: v for k, v in values.items() if k not in bm.names} | bm.to_box(values)

    def from_ax(self, params: Mapping[str, Any], box: bool = False) -> dict[str, Any]:
        """The Ax experiment's parameters → parameter values (in this space's order, derived weight included)."""
        bm = self.box_map() if box else None
        if bm is None:
            return dict(params)
        w = bm.to_weights(params)
        return {p.name: w[p.name] if p.name in w else params[p.name] for p in self.params}

    # ------------------------------------------------------------------ Ax
    def ax_parameters(self, box: bool = False) -> list[Any]:
        """Ax parameter configs: ranges and choices, plus the derived parameter of the sum constraint (or, with
        ``box``, the box coordinates ``[0, 1]`` of the sum constraint's weights instead of those weights)."""
        from ax import ChoiceParameterConfig, RangeParameterConfig
        from ax.api.configs import DerivedParameterConfig

        out: list[Any] = []
        bm = self.box_map() if box else None
        for p in self.params:
            if self.sum_constraint is not None and p.name == self.sum_constraint.derived:
                continue
            if bm is not None and p.name in bm.names:
                continue
            if isinstance(p, Range):
                lo, hi = (int(p.low), int(p.high)) if p.kind == "int" else (float(p.low), float(p.high))
                out.append(
                    RangeParameterConfig(
                        name=p.name, bounds=(lo, hi), parameter_type=p.kind, scaling="log" if p.log else None
                    )
                )
            else:
                ptype = _choice_type(p.values)
                out.append(
                    ChoiceParameterConfig(
                        name=p.name, values=list(p.values), parameter_type=ptype, is_ordered=p.ordered
                    )
                )
        if bm is not None:
            out += [RangeParameterConfig(name=n, bounds=(0.0, 1.0), parameter_type="float") for n in bm.box_names]
        elif self.sum_constraint is not None:
            sc = self.sum_constraint
            expr = _fmt(sc.total) + "".join(f" - {n}" for n in self._others())
            out.append(DerivedParameterConfig(name=sc.derived, expression_str=expr, parameter_type="float"))
        return out

    def ax_parameter_constraints(self, box: bool = False) -> list[str]:
        """The derived parameter's bounds as inequalities on the others, plus the extra constraints (with ``box``:
        none for the sum constraint, which the box map holds)."""
        out = list(self.parameter_constraints)
        sc = self.sum_constraint
        if box and sc is not None and out:
            raise ValueError(
                f"parameter constraints {out} cannot be combined with generation.simplex=box (the sum constraint's "
                "weights are not Ax parameters there); use generation.simplex=derived"
            )
        if sc is not None and not box:
            d = self.by_name[sc.derived]
            assert isinstance(d, Range)
            lhs = " + ".join(self._others())
            out.append(f"{lhs} <= {_fmt(sc.total - d.low)}")
            out.append(f"{lhs} >= {_fmt(sc.total - d.high)}")
        return out

    # ------------------------------------------------------------------ values
    def complete(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` with the derived parameter filled in (given or not) so that the sum holds exactly."""
        out = dict(values)
        missing = [n for n in self.free_names if n not in out]
        if missing:
            raise KeyError(f"missing value(s) for parameter(s) {missing}; parameters: {self.names}")
        unknown = sorted(set(out) - set(self.names))
        if unknown:
            raise KeyError(f"unknown parameter(s) {unknown}; parameters: {self.names}")
        sc = self.sum_constraint
        if sc is not None:
            derived = sc.total - sum(float(out[n]) for n in self._others())
            given = out.get(sc.derived)
            if given is not None and abs(float(given) - derived) > 1e-6 * max(1.0, abs(sc.total)):
                raise ValueError(
                    f"the values of {list(sc.names)} must add up to {sc.total}: with the others as given, "
                    f"{sc.derived} would be {derived}, not {given}"
                )
            out[sc.derived] = derived
        return out

    def check(self, values: Mapping[str, Any]) -> list[str]:
        """What is violated (S1 sum, S2 bounds, choices): an empty list when ``values`` is a member."""
        problems: list[str] = []
        for p in self.params:
            if p.name not in values:
                problems.append(f"{p.name} missing")
                continue
            v = values[p.name]
            if isinstance(p, Range):
                tol = BOUND_TOL * max(1.0, abs(p.high - p.low))
                if not (p.low - tol <= float(v) <= p.high + tol):
                    problems.append(f"{p.name}={v} outside [{p.low}, {p.high}]")
            elif v not in p.values:
                problems.append(f"{p.name}={v!r} not one of {list(p.values)}")
        sc = self.sum_constraint
        if sc is not None and all(n in values for n in sc.names):
            s = sum(float(values[n]) for n in sc.names)
            if abs(s - sc.total) > SUM_TOL * max(1.0, abs(sc.total)):
                problems.append(f"sum of {list(sc.names)} is {s!r}, not {sc.total}")
        return problems


def _choice_type(values: Sequence[Any]) -> str:
    if all(isinstance(v, bool) for v in values):
        return "bool"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "int"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return "float"
    if all(isinstance(v, str) for v in values):
        return "str"
    raise ValueError(f"choice values must all be bools, numbers or strings, got {list(values)}")


def weight_space(
    bounds: Mapping[str, Sequence[float]],
    total: float,
    derived: str | None = None,
    prefix: str = "w_",
) -> SearchSpace:
    """The utility-weight space of Eq. 5: one parameter ``<prefix><task>`` per task with bounds (S2), the
    weights adding up to ``total`` exactly (S1). ``derived`` names the task whose weight is computed
    (default: the last task)."""
    if not bounds:
        raise ValueError("weight bounds are empty: give [low, high] for each task")
    tasks = list(bounds)
    derived = tasks[-1] if derived is None else derived
    if derived not in tasks:
        raise ValueError(f"derived={derived!r} is not one of the weighted tasks {tasks}")
    params = []
    for t in tasks:
        b = list(bounds[t])
        if len(b) != 2:
            raise ValueError(f"bounds of {t} must be [low, high], got {b}")
        params.append(Range(f"{prefix}{t}", float(b[0]), float(b[1])))
    sc = SumConstraint(tuple(f"{prefix}{t}" for t in tasks), float(total), f"{prefix}{derived}")
    return SearchSpace(tuple(params), sc)
