"""Small checks the components' typed configs share: numbers, whole numbers, choices, maps keyed by task.

Each adds a :class:`~mtrank.errors.ConfigProblem` under the full key it is given to a
:class:`~mtrank.errors.Problems`; the config that calls it raises them all as one
:class:`~mtrank.errors.ConfigError`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from mtrank.errors import Problems, fmt_list, suggest

__all__ = ["is_number", "is_whole", "check_one_of", "check_task_map", "unknown_keys"]


def is_number(x: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def is_whole(x: Any) -> bool:
    """An int (not a bool)."""
    return isinstance(x, int) and not isinstance(x, bool)


def check_one_of(problems: Problems, key: str, value: Any, allowed: Sequence[str]) -> bool:
    """``value`` (as a string) is one of ``allowed``; else a problem at ``key`` with a "did you mean"."""
    if str(value) not in allowed:
        problems.add(key, f"{key} = {value!r}: expected one of {fmt_list(allowed)}{suggest(value, allowed)}")
        return False
    return True


def check_task_map(
    problems: Problems,
    key: str,
    mapping: Any,
    tasks: Sequence[str],
    *,
    exact: bool,
    positive: bool = False,
    what: str = "tasks",
) -> None:
    """A map keyed by task: its keys must be the tasks (``exact``) or some of them; values finite numbers
    (> 0 with ``positive``). Each unknown key is its own problem, named ``<key>.<entry>``."""
    if mapping is None:
        return
    if not isinstance(mapping, Mapping):
        problems.add(key, f"{key} = {mapping!r}: expected a mapping {{task: value}} over the {what} {fmt_list(tasks)}")
        return
    for k, v in mapping.items():
        if str(k) not in tasks:
            problems.add(
                f"{key}.{k}",
                f"{key}.{k}: '{k}' is not one of the {what}; allowed keys: {fmt_list(tasks)}{suggest(k, tasks)}",
            )
        elif not is_number(v) or (positive and float(v) <= 0):
            problems.add(f"{key}.{k}", f"{key}.{k} = {v!r}: expected a {'positive ' if positive else ''}finite number")
    missing = [t for t in tasks if t not in {str(k) for k in mapping}]
    if exact and missing:
        problems.add(
            key,
            f"{key} has no value for {what} {fmt_list(missing)}; it needs exactly one per task in {fmt_list(tasks)}",
        )


def unknown_keys(problems: Problems, key: str, mapping: Mapping[str, Any], allowed: Collection[str]) -> None:
    """Each key of ``mapping`` outside ``allowed`` is a problem at ``<key>.<entry>``."""
    for k in mapping:
        if str(k) not in allowed:
            problems.add(
                f"{key}.{k}",
                f"{key}.{k}: unknown key; allowed keys: {fmt_list(sorted(allowed))}{suggest(k, allowed)}",
            )
