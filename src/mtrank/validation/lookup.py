"""Looking config values up by full key, for the checks: unresolved values, numbers, allowed values, task-keyed maps."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtrank.validation.errors import Problems, fmt_list, suggest

SPLITS = ("train", "val", "test")


REPORT_SCALES = ("linear", "log")


UNRESOLVED = object()


def is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def config_value(cfg: DictConfig, key: str, problems: Problems, default: Any = None) -> Any:
    """The resolved value at ``key`` as plain Python (``default`` when absent); an interpolation that does not
    resolve is a problem at that key."""
    try:
        v = OmegaConf.select(cfg, key, default=default, throw_on_missing=True)
    except Exception as exc:  # noqa: BLE001 - MissingMandatoryValue, InterpolationResolutionError, ...
        problems.add(key, f"{key} does not resolve: {str(exc).splitlines()[0]}")
        return UNRESOLVED
    if isinstance(v, DictConfig) or OmegaConf.is_list(v):
        try:
            return OmegaConf.to_container(v, resolve=True)
        except Exception as exc:  # noqa: BLE001
            problems.add(key, f"{key} does not resolve: {str(exc).splitlines()[0]}")
            return UNRESOLVED
    return v


def check_one_of(problems: Problems, key: str, value: Any, allowed: Sequence[str]) -> bool:
    if value is UNRESOLVED:
        return False
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
    if mapping is None or mapping is UNRESOLVED:
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
