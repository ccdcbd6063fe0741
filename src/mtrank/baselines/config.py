"""Checks of a ``conf/baselines.yaml`` config, run before any data is read: one
:class:`~mtrank.errors.ConfigError` listing every problem, each naming its full config key.

* ``tasks.names`` and ``data.pipeline``: the checks of ``src/train.py`` (unknown task, bad split, ...);
* ``baseline.name``: one of :data:`BASELINES`; every other key under ``baseline`` must be one that baseline
  reads (a typo is an error with a suggestion, not a silently ignored knob);
* LightGBM: ``num_boost_round`` and ``early_stopping_rounds`` integers ≥ 1, ``early_stopping_metric`` one of
  :data:`STOPPING_METRICS`, ``categorical_max_cardinality`` null or an integer ≥ 2, ``params`` a mapping that
  leaves ``objective`` / ``metric`` / ``seed`` to mtrank;
* logistic regression: ``c_grid`` a non-empty list of positive numbers, ``max_iter`` an integer ≥ 1, ``tol`` > 0;
* ``seed`` an integer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from mtrank.errors import Problems, fmt_list, suggest
from mtrank.utils.config_fields import is_number
from mtrank.validation.compose import UNRESOLVED, config_value
from mtrank.validation.train import check_data, check_tasks

__all__ = ["BASELINES", "STOPPING_METRICS", "validate_baseline_config"]

BASELINES = ("lightgbm", "logistic")
STOPPING_METRICS = ("binary_logloss", "auc")
# the keys each baseline reads under `baseline`
KEYS = {
    "lightgbm": (
        "name",
        "num_boost_round",
        "early_stopping_rounds",
        "early_stopping_metric",
        "categorical_max_cardinality",
        "save_models",
        "params",
    ),
    "logistic": ("name", "c_grid", "max_iter", "tol"),
}
RESERVED_PARAMS = ("objective", "metric", "seed")


def _int_at_least(p: Problems, key: str, v: Any, low: int, what: str) -> None:
    if v is UNRESOLVED:
        return
    if not isinstance(v, int) or isinstance(v, bool) or v < low:
        p.add(key, f"{key} = {v!r}: expected an integer ≥ {low} ({what})")


def _check_lightgbm(b: Mapping[str, Any], p: Problems) -> None:
    _int_at_least(p, "baseline.num_boost_round", b.get("num_boost_round"), 1, "the most boosting rounds per task")
    _int_at_least(
        p,
        "baseline.early_stopping_rounds",
        b.get("early_stopping_rounds"),
        1,
        "rounds without improvement on val before stopping",
    )
    m = b.get("early_stopping_metric")
    if m not in STOPPING_METRICS:
        p.add(
            "baseline.early_stopping_metric",
            f"baseline.early_stopping_metric = {m!r}: expected one of "
            f"{fmt_list(STOPPING_METRICS)}{suggest(m, STOPPING_METRICS)}",
        )
    mc = b.get("categorical_max_cardinality")
    if mc is not None:
        _int_at_least(
            p,
            "baseline.categorical_max_cardinality",
            mc,
            2,
            "or null: larger vocabularies are given as numbers, not as categorical columns",
        )
    if not isinstance(b.get("save_models", False), bool):
        p.add("baseline.save_models", f"baseline.save_models = {b.get('save_models')!r}: expected true or false")
    params = b.get("params")
    if params is None:
        return
    if not isinstance(params, Mapping):
        p.add("baseline.params", f"baseline.params = {params!r}: expected a mapping of LightGBM parameters")
        return
    for k in RESERVED_PARAMS:
        if k in params:
            p.add(
                f"baseline.params.{k}",
                f"baseline.params.{k} is set by mtrank (objective: binary; metric: "
                f"baseline.early_stopping_metric; seed: the top-level seed); remove it",
            )


def _check_logistic(b: Mapping[str, Any], p: Problems) -> None:
    grid = b.get("c_grid")
    if not isinstance(grid, list) or not grid:
        p.add(
            "baseline.c_grid",
            f"baseline.c_grid = {grid!r}: expected a non-empty list of positive numbers (the "
            "inverse L2 strengths tried; the one with the lowest val log-loss is kept)",
        )
    else:
        bad = [c for c in grid if not is_number(c) or float(c) <= 0]
        if bad:
            p.add(
                "baseline.c_grid", f"baseline.c_grid = {fmt_list(grid)}: {fmt_list(bad)} not positive finite number(s)"
            )
        values = [float(c) for c in grid if is_number(c)]
        dup = sorted({c for c in values if values.count(c) > 1})
        if dup:
            p.add("baseline.c_grid", f"baseline.c_grid = {fmt_list(grid)} lists {fmt_list(dup)} more than once")
    _int_at_least(p, "baseline.max_iter", b.get("max_iter"), 1, "lbfgs iterations per fit")
    tol = b.get("tol")
    if not is_number(tol) or float(tol) <= 0:
        p.add("baseline.tol", f"baseline.tol = {tol!r}: expected a positive number")


def validate_baseline_config(cfg: DictConfig) -> list[str]:
    """Raise a :class:`ConfigError` naming every bad key; return the task names."""
    p = Problems()
    tasks = check_tasks(cfg, p)
    check_data(cfg, p)
    seed = config_value(cfg, "seed", p)
    if seed is not UNRESOLVED and (not isinstance(seed, int) or isinstance(seed, bool)):
        p.add("seed", f"seed = {seed!r}: expected an integer")
    b = config_value(cfg, "baseline", p)
    if b is not UNRESOLVED:
        if not isinstance(b, Mapping):
            p.add("baseline", f"baseline is missing: choose one with baseline={'|'.join(BASELINES)}")
        else:
            name = b.get("name")
            if name not in BASELINES:
                p.add(
                    "baseline.name",
                    f"baseline.name = {name!r}: expected one of {fmt_list(BASELINES)}{suggest(name, BASELINES)}",
                )
            else:
                for k in b:
                    if k not in KEYS[name]:
                        p.add(
                            f"baseline.{k}",
                            f"baseline.{k}: unknown key for baseline {name}; its keys are "
                            f"{fmt_list(KEYS[name])}{suggest(k, KEYS[name])}",
                        )
                (_check_lightgbm if name == "lightgbm" else _check_logistic)(b, p)
    p.raise_if_any("baselines")
    return tasks
