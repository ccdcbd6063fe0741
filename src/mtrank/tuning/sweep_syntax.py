"""Hydra's sweep grammar for search parameters: ``interval``, ``int(interval)``, ``tag(log, ...)``, ``range``,
``choice`` and the mapping form → :mod:`mtrank.tuning.space` parameters; values back to override strings.

Used by the Ax sweeper plugin (``hydra_plugins.mtrank_ax_sweeper``) and by the config checks that validate a search
space before any job runs.
"""

from __future__ import annotations

from typing import Any, Mapping

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

from mtrank.tuning.space import Choice, Range
from mtrank.utils.config import plain

__all__ = ["parse_param", "format_value"]


def parse_param(name: str, spec: Any) -> Any:
    """One ``hydra.sweeper.params`` entry → a :mod:`mtrank.tuning.space` parameter, or ``None`` for a fixed value.

    Strings use Hydra's sweep grammar: ``interval(a, b)`` (float range), ``int(interval(a, b))`` (int
    range), ``tag(log, interval(a, b))`` (log scale), ``range(a, b[, step])`` and ``choice(...)``
    (choices). A mapping ``{type: range, bounds: [a, b], log: false, int: false}`` or
    ``{type: choice, values: [...], ordered: null}`` works too.
    """
    spec = plain(spec)
    if isinstance(spec, Mapping):
        kind = spec.get("type")
        if kind == "range":
            b = list(spec.get("bounds") or [])
            if len(b) != 2:
                raise ValueError(f"hydra.sweeper.params.{name}: bounds must be [low, high], got {b}")
            is_int = bool(spec.get("int", False))
            return Range(name, float(b[0]), float(b[1]), "int" if is_int else "float", bool(spec.get("log", False)))
        if kind == "choice":
            return Choice(name, tuple(spec.get("values") or ()), spec.get("ordered"))
        raise ValueError(f"hydra.sweeper.params.{name}: type must be 'range' or 'choice', got {kind!r}")
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
        return Choice(name, tuple(v.list), True if all(isinstance(x, (int, float)) for x in v.list) else None)
    if isinstance(v, RangeSweep):
        step = v.step if v.step is not None else 1
        values: list[Any] = []
        x = v.start
        while (step > 0 and x < v.stop) or (step < 0 and x > v.stop):
            values.append(x)
            x = x + step
        return Choice(name, tuple(values), True)
    raise ValueError(f"hydra.sweeper.params.{name}: unsupported sweep {spec!r}")


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
