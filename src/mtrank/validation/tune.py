"""Checks of a ``conf/tune_utility.yaml`` config (``src/tune_utility.py``), before the predictions are read.

* ``mode``, ``metric``, ``n_trials``, ``generation``;
* ``utility``: ``utility.bounds`` as ``[low, high]`` with low < high, then the problem's own checks
  (:meth:`mtrank.tuning.problem.UtilityProblem.from_mapping`: bounds over exactly the weighted tasks, the
  derived weight, the baseline weights inside S1/S2, constraint syntax);
* against the predictions file's columns (its Parquet schema only): every key of ``utility.weights`` needs a
  ``<prob_prefix><task>`` column, the objective and every constrained task a ``<label_prefix><task>`` column;
* ``optimized_metric`` and, with ``hparams_search=ax_utility``, the sweeper's objective and outcome constraints
  on metrics ``f_<task>`` the jobs return, and one search parameter ``utility.weights.<task>`` per weighted task.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtrank.validation.errors import Problems, fmt_list, suggest
from mtrank.validation.lookup import UNRESOLVED, check_one_of, config_value, is_number
from mtrank.validation.search_space import ax_sweeper_config, check_ax_sweeper

__all__ = ["validate_tune_config", "MODES"]

MODES = ("tune", "evaluate")
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


def _check_utility(cfg: DictConfig, p: Problems, schema: Mapping[str, Any] | None) -> list[str]:
    """The utility section; returns the tasks whose f_t the jobs report."""
    from mtrank.tuning.problem import UtilityProblem

    util = config_value(cfg, "utility", p)
    if not isinstance(util, Mapping):
        if util is not UNRESOLVED:
            p.add("utility", "utility is missing: choose a utility config (utility=related_products)")
        return []
    weights = util.get("weights") or {}
    prob, label = (
        str(config_value(cfg, "prob_prefix", p, default="p_")),
        str(config_value(cfg, "label_prefix", p, default="label_")),
    )
    for t, b in (util.get("bounds") or {}).items():
        if not (isinstance(b, (list, tuple)) and len(b) == 2 and all(is_number(x) for x in b) and b[0] < b[1]):
            p.add(f"utility.bounds.{t}", f"utility.bounds.{t} = {b!r}: expected [low, high] with low < high")
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
    bounds = util.get("bounds") or {}
    total = util.get("total")
    if not p.has("utility") and is_number(total) and bounds and set(bounds) == set(weights):
        lo, hi = sum(b[0] for b in bounds.values()), sum(b[1] for b in bounds.values())
        if not lo - 1e-9 <= float(total) <= hi + 1e-9:
            p.add(
                "utility.total",
                f"utility.total = {total}: the weights cannot add up to it within utility.bounds "
                f"(their lows add up to {lo}, their highs to {hi})",
            )
        elif not lo + 1e-9 < float(total) < hi - 1e-9:
            side = "lower" if abs(float(total) - lo) <= 1e-9 else "upper"
            p.add(
                "utility.total",
                f"utility.total = {total}: the weights add up to it only with each at its {side} "
                f"bound in utility.bounds, which leaves nothing to search; expected a total "
                f"strictly between {lo} (the lows' sum) and {hi} (the highs' sum)",
            )
    if p.has("utility"):
        return []
    try:
        problem = UtilityProblem.from_mapping(util, "utility")
    except (ValueError, TypeError, KeyError) as exc:
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        text = text if text.startswith("utility") else f"utility: {text}"
        p.add(re.match(r"utility(\.[A-Za-z_]\w*)*", text).group(0), text)
        return []
    out = list(problem.label_tasks)
    if schema is not None:
        out += [t for t in problem.tasks if t not in out and f"{label}{t}" in schema]
    else:
        out += [t for t in problem.tasks if t not in out]
    return out


def validate_tune_config(cfg: DictConfig) -> None:
    """Check a ``conf/tune_utility.yaml`` config; raise :class:`ConfigError` listing every problem."""
    from mtrank.tuning.generation import GenerationConfig
    from mtrank.tuning.problem import METRIC_PREFIX
    from mtrank.utility.objectives import metric_k

    p = Problems()
    check_one_of(p, "mode", config_value(cfg, "mode", p, default="tune"), MODES)
    metric = config_value(cfg, "metric", p, default="pr_auc")
    try:
        metric_k(str(metric))
    except ValueError:
        p.add("metric", f"metric = {metric!r}: expected pr_auc or ndcg@<k> with k ≥ 1 (e.g. ndcg@10)")
    n = config_value(cfg, "n_trials", p, default=0)
    if n is not UNRESOLVED and (not is_number(n) or not float(n).is_integer() or n < 0):
        p.add("n_trials", f"n_trials = {n!r}: expected an integer ≥ 0")
    gen = config_value(cfg, "generation", p)
    if isinstance(gen, Mapping):
        try:
            GenerationConfig.from_mapping(gen)
        except (ValueError, TypeError) as exc:
            p.add("generation", f"generation: {exc}")
    schema = _predictions_schema(cfg, p)
    reported = _check_utility(cfg, p, schema)
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
