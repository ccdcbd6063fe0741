"""Checks of a ``conf/tune_utility.yaml`` config (``src/tune_utility.py``), before the predictions are read.

* the components: the job's own keys (:class:`mtrank.tuning.config.TuneConfig`: ``mode``, ``metric``,
  ``n_trials``, ``generation``) and the utility (:class:`mtrank.utility.config.UtilityConfig`: weights, bounds,
  total, derived weight, objective; then :meth:`mtrank.tuning.problem.UtilityProblem.from_mapping`: constraint
  syntax, the baseline weights inside S1/S2), each problem under the key the config names;
* against the predictions file's columns (its Parquet schema only): every key of ``utility.weights`` needs a
  ``<prob_prefix><task>`` column, the objective and every constrained task a ``<label_prefix><task>`` column;
* ``optimized_metric`` and, with ``hparams_search=ax_utility``, the sweeper's objective and outcome constraints
  on metrics ``f_<task>`` the jobs return, and one search parameter ``utility.weights.<task>`` per weighted task.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtrank.errors import Problems, fmt_list, suggest
from mtrank.tuning.config import TuneConfig
from mtrank.utility.config import UtilityConfig
from mtrank.validation.compose import UNRESOLVED, build, config_value, resolved
from mtrank.validation.search_space import ax_sweeper_config, check_ax_sweeper

__all__ = ["validate_tune_config"]

WEIGHT_PARAM = "utility.weights."


def _predictions_schema(cfg: DictConfig, p: Problems) -> dict[str, Any] | None:
    if OmegaConf.is_missing(cfg, "predictions"):
        p.add(
            "predictions",
            "predictions = ???: give the Parquet file of predictions to tune on "
            "(predictions=path/to/predictions.parquet, written by src/eval.py or src/predict.py)",
        )
        return None
    path = config_value(cfg, "predictions", p)
    if path is UNRESOLVED:
        return None
    if not path:
        p.add("predictions", "predictions is empty: give the Parquet file of predictions to tune on")
        return None
    f = Path(str(path)).expanduser()
    if not f.exists():
        p.add(
            "predictions",
            f"predictions = {f}: no such file (expected the Parquet file of predictions that "
            "src/eval.py or src/predict.py writes)",
        )
        return None
    import polars as pl

    try:
        return dict(pl.read_parquet_schema(f) if f.is_file() else pl.scan_parquet(f).collect_schema())
    except Exception as exc:  # noqa: BLE001 - polars raises several types for unreadable files
        p.add("predictions", f"predictions = {f}: not a readable Parquet file ({str(exc).splitlines()[0]})")
        return None


def _prediction_tasks(schema: Mapping[str, Any], prob: str) -> list[str]:
    """Tasks with a ``<prob><task>`` column; with prob ``p_``, ``p_raw_<t>`` and ``p_true_<t>`` are never tasks
    (the uncalibrated scores and the simulator's true probabilities, not predictions of a task ``raw_<t>``)."""
    found = [c[len(prob) :] for c in schema if c.startswith(prob)]
    if prob == "p_":
        found = [t for t in found if not t.startswith(("raw_", "true_"))]
    return sorted(found)


def _check_utility(cfg: DictConfig, p: Problems, schema: Mapping[str, Any] | None, prob: str, label: str) -> list[str]:
    """The utility section, and its tasks against the predictions' columns; returns the tasks whose f_t the jobs
    report."""
    from mtrank.tuning.problem import UtilityProblem

    util = config_value(cfg, "utility", p)
    if not isinstance(util, Mapping):
        if util is not UNRESOLVED:
            p.add("utility", "utility is missing: choose a utility config (utility=related_products)")
        return []
    build(p, UtilityConfig.from_mapping, util, "utility")
    weights = util.get("weights") or {}
    if schema is not None:
        tasks = _prediction_tasks(schema, prob)
        labelled = sorted(c[len(label) :] for c in schema if c.startswith(label))
        if not tasks:
            cols = list(schema)
            p.add(
                "predictions",
                f"predictions = {config_value(cfg, 'predictions', p)}: no prediction column "
                f"{prob}<task> in the file (its columns: {fmt_list(cols[:20])}"
                f"{' ...' if len(cols) > 20 else ''}); expected the predictions that src/eval.py or "
                f"src/predict.py writes, or set prob_prefix= to the prefix of its columns",
            )
            return []
        for t in weights:
            if f"{prob}{t}" not in schema:
                p.add(
                    f"utility.weights.{t}",
                    f"utility.weights.{t}: the predictions have no column {prob}{t}, so "
                    f"'{t}' is not one of their tasks; allowed keys: {fmt_list(tasks)}"
                    f"{suggest(t, tasks)}",
                )
        need = {"utility.objective": util.get("objective")}
        need.update({f"utility.constraints.{t}": t for t in (util.get("constraints") or {})})
        for key, t in need.items():
            if t and f"{label}{t}" not in schema:
                p.add(
                    key,
                    f"{key}{' = ' + repr(t) if key == 'utility.objective' else ''}: the predictions have no "
                    f"label column {label}{t}; tasks with labels: {fmt_list(labelled)}{suggest(t, labelled)}",
                )
    if p.has("utility"):
        return []
    problem = build(p, UtilityProblem.from_mapping, util, "utility")
    if problem is None:
        return []
    out = list(problem.label_tasks)
    if schema is not None:
        out += [t for t in problem.tasks if t not in out and f"{label}{t}" in schema]
    else:
        out += [t for t in problem.tasks if t not in out]
    return out


def validate_tune_config(cfg: DictConfig) -> None:
    """Check a ``conf/tune_utility.yaml`` config; raise :class:`ConfigError` listing every problem."""
    from mtrank.tuning.problem import METRIC_PREFIX

    p = Problems()
    prefixes = resolved(cfg, {"prob_prefix": "p_", "label_prefix": "label_"}, p)
    own = resolved(cfg, {"mode": "tune", "metric": "pr_auc", "n_trials": 0, "generation": None}, p)
    build(p, TuneConfig.from_mapping, own | prefixes)
    prob, label = str(prefixes.get("prob_prefix", "p_")), str(prefixes.get("label_prefix", "label_"))
    schema = _predictions_schema(cfg, p)
    reported = _check_utility(cfg, p, schema, prob, label)
    if reported:
        metrics = frozenset(METRIC_PREFIX + t for t in reported)
        text = fmt_list(sorted(metrics)) + " (f_<task> for the objective, the constrained and the labelled tasks)"
        om = config_value(cfg, "optimized_metric", p)
        if om is not None and om is not UNRESOLVED and str(om) not in metrics:
            p.add(
                "optimized_metric",
                f"optimized_metric = '{om}' is never returned by the jobs; allowed: {text}{suggest(om, metrics)}",
            )
        sweeper = ax_sweeper_config(cfg)
        if sweeper is not None:
            declared = check_ax_sweeper(cfg, sweeper, p, metrics, text)
            weights = list((config_value(cfg, "utility.weights", p) or {}).keys())
            swept = [n[len(WEIGHT_PARAM) :] for n in declared if n.startswith(WEIGHT_PARAM)]
            missing = [t for t in weights if t not in swept]
            if swept and missing and not p.has("hydra.sweeper.params"):
                p.add(
                    "hydra.sweeper.params",
                    "hydra.sweeper.params has no "
                    + ", ".join(WEIGHT_PARAM + t for t in missing)
                    + f": utility.weights weighs {fmt_list(weights)}, so each needs a search parameter (and a "
                    "place in hydra.sweeper.sum_constraint.params)",
                )
    p.raise_if_any("tune_utility")
