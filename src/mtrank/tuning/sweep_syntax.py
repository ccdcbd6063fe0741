"""Hydra's sweep grammar for search parameters: ``interval``, ``int(interval)``, ``tag(log, ...)``, ``range``,
``choice`` and the mapping form → :mod:`mtrank.tuning.space` parameters; values back to override strings.

Used by the Ax sweeper plugin (``hydra_plugins.mtrank_ax_sweeper``) and by the config checks that validate a search
space before any job runs.
"""

from __future__ import annotations

import decimal
import math
from collections.abc import Mapping
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

from mtrank.tuning.space import Choice, Range
from mtrank.utils.config import plain

__all__ = ["parse_param", "format_value", "range_values", "describe_param", "MAPPING_KEYS"]

# the mapping form's keys: ours, then the upstream Hydra Ax sweeper's spellings (Ax's own parameter dicts)
MAPPING_KEYS = {
    "range": ("type", "bounds", "log", "int", "log_scale", "value_type", "parameter_type"),
    "choice": ("type", "values", "ordered", "is_ordered", "value_type", "parameter_type"),
    "fixed": ("type", "value", "value_type", "parameter_type"),
}
_TYPES = {"int": "int", "float": "float", "str": "str", "string": "str", "bool": "bool"}


def _type_of(name: str, spec: Mapping[str, Any]) -> str | None:
    """``value_type`` / ``parameter_type`` (upstream: ``ParameterType.INT`` or ``int``) as int | float | str | bool."""
    given = [spec[k] for k in ("value_type", "parameter_type") if spec.get(k) is not None]
    if not given:
        return None
    t = str(given[0]).split(".")[-1].lower()
    if t not in _TYPES:
        raise ValueError(f"hydra.sweeper.params.{name}: value_type {given[0]!r} is not one of {sorted(set(_TYPES))}")
    return _TYPES[t]


def _mapping_param(name: str, spec: Mapping[str, Any]) -> Range | Choice | None:
    kind = spec.get("type")
    if kind not in MAPPING_KEYS:
        raise ValueError(f"hydra.sweeper.params.{name}: type must be 'range', 'choice' or 'fixed', got {kind!r}")
    unknown = sorted(set(spec) - set(MAPPING_KEYS[kind]))
    if unknown:
        raise ValueError(
            f"hydra.sweeper.params.{name}: unknown key(s) {unknown} for type {kind}; allowed: "
            f"{list(MAPPING_KEYS[kind])}"
        )
    vtype = _type_of(name, spec)
    if kind == "fixed":
        return None
    if kind == "range":
        b = list(spec.get("bounds") or [])
        if len(b) != 2:
            raise ValueError(f"hydra.sweeper.params.{name}: bounds must be [low, high], got {b}")
        if (
            spec.get("log") is not None
            and spec.get("log_scale") is not None
            and bool(spec["log"]) != bool(spec["log_scale"])
        ):
            raise ValueError(f"hydra.sweeper.params.{name}: log and log_scale disagree")
        log_scale = bool(spec.get("log", spec.get("log_scale", False)))
        if spec.get("int") is not None:
            is_int = bool(spec["int"])
        elif vtype is not None:
            is_int = vtype == "int"
        else:  # as upstream (and Ax): whole-number bounds make an integer parameter
            is_int = all(isinstance(x, int) and not isinstance(x, bool) for x in b)
        return Range(name, float(b[0]), float(b[1]), "int" if is_int else "float", log_scale)
    ordered = spec.get("ordered", spec.get("is_ordered"))
    return _choice(name, list(spec.get("values") or ()), ordered)


def _choice(name: str, values: list[Any], ordered: bool | None = None) -> Choice:
    if any(isinstance(v, (list, tuple, Mapping)) for v in values):
        return Choice(name, tuple(literal(v) for v in values), ordered, literal=True)
    if ordered is None and values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        ordered = True
    return Choice(name, tuple(values), ordered)


def range_values(start: float, stop: float, step: float | None) -> list[Any]:
    """The values of Hydra's ``range(start, stop, step)``: as many as Hydra's own range yields (``range(0, 1,
    0.1)`` has 10), each computed as ``start + i * step`` and rounded to the decimals the bounds are written
    with, so that ``0.1 * 3`` is ``0.3``, not ``0.30000000000000004``."""
    step = 1 if step is None else step
    if step == 0:
        raise ValueError("range step must not be 0")
    if all(isinstance(x, int) and not isinstance(x, bool) for x in (start, stop, step)):
        return list(range(start, stop, step))
    d = lambda x: decimal.Decimal(repr(float(x)))  # noqa: E731 - the number as written
    n = max(0, math.ceil((d(stop) - d(start)) / d(step)))
    places = max(-min(d(start).as_tuple().exponent, d(step).as_tuple().exponent, 0), 0)
    return [round(float(start) + i * float(step), min(places, 15)) for i in range(n)]


def parse_param(name: str, spec: Any) -> Any:
    """One ``hydra.sweeper.params`` entry → a :mod:`mtrank.tuning.space` parameter, or ``None`` for a fixed value.

    Strings use Hydra's sweep grammar: ``interval(a, b)`` (float range), ``int(interval(a, b))`` (int
    range), ``tag(log, interval(a, b))`` (log scale), ``range(a, b[, step])``, ``choice(...)`` and ``a,b,c``
    (choices; lists and mappings among them are passed to the job as lists and mappings). A mapping
    ``{type: range, bounds: [a, b], log: false, int: false}``, ``{type: choice, values: [...], ordered: null}``
    or ``{type: fixed, value: v}`` works too, with the upstream Hydra Ax sweeper's spellings (``log_scale``,
    ``is_ordered``, ``value_type`` / ``parameter_type``; whole-number bounds make an int parameter, as there);
    any other key is refused by name.
    """
    spec = plain(spec)
    if isinstance(spec, Mapping):
        return _mapping_param(name, spec)
    if not isinstance(spec, str):
        return None
    override = OverridesParser.create().parse_overrides([f"{name}={spec}"])[0]
    if not override.is_sweep_override():
        return None
    v = override.value()
    log_scale = "log" in (getattr(v, "tags", None) or set())
    if isinstance(v, IntervalSweep):
        is_int = isinstance(v.start, int) and isinstance(v.end, int)
        return Range(name, float(v.start), float(v.end), "int" if is_int else "float", log_scale)
    if isinstance(v, ChoiceSweep):
        return _choice(name, list(v.list))
    if isinstance(v, RangeSweep):
        return Choice(name, tuple(range_values(v.start, v.stop, v.step)), True)
    raise ValueError(f"hydra.sweeper.params.{name}: unsupported sweep {spec!r}")


def literal(v: Any) -> str:
    """A value as Hydra override text: ``[-1,0,1]``, ``{x:-1,y:0}``, ``'a b'``."""
    if isinstance(v, Mapping):
        return "{" + ",".join(f"{k}:{literal(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(literal(x) for x in v) + "]"
    if v is None:
        return "null"
    return format_value(v)


def format_value(v: Any) -> str:
    """A parameter value as a Hydra override value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    s = str(v)
    if any(c in s for c in " ,:=[]{}()'\"\\$*") or s == "":
        return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return s


def describe_param(p: Range | Choice) -> str:
    """``name: range=[a, b]`` / ``name: range=[a, b] (log)`` / ``name: choice=[...]``, as the upstream sweeper logs."""
    if isinstance(p, Range):
        b = f"[{int(p.low)}, {int(p.high)}]" if p.kind == "int" else f"[{p.low!r}, {p.high!r}]"
        return f"{p.name}: range={b}{' (log)' if p.log else ''}"
    return f"{p.name}: choice={list(p.values)}"
