"""Checks of a ``conf/train.yaml`` config, run when ``train(cfg)`` starts, before any data is read or generated.

:func:`validate_train_config` raises one :class:`~mtrank.validation.errors.ConfigError` listing every problem;
each names its full config key and what is allowed. What is checked (docs/checks.md has the messages):

* ``seed`` (a whole number or null), ``data.batch_size`` / ``data.eval_batch_size`` (≥ 1), ``trainer.max_epochs``
  (≥ 1 or -1 when the run trains);
* ``tasks.names``: non-empty, no repeats, no reserved names, each with a label column in
  ``data.pipeline.columns.labels``;
* the data config: the pipeline config's own checks (:class:`mtrank.data.config.PipelineConfig`)
  (:func:`mtrank.data.config.check_pipeline_config`) and the simulator's, reported under ``data.pipeline`` /
  ``data.simulator``;
* maps keyed by task: ``loss.task_weights`` (exactly the tasks, with ``task_weighting=fixed`` only),
  ``loss.pos_weight`` (a subset, > 0), ``loss.importance_weights`` (exactly the tasks, > 0),
  ``model.net.head_bias_init`` (a subset of the model's heads);
* the choices of ``loss``, ``calibration`` and ``report``;
* monitored metrics: every ``callbacks.<name>.monitor`` and ``model.scheduler.monitor`` must be logged while
  fitting, ``optimized_metric`` by the run (:mod:`mtrank.validation.metric_names`);
* the Ax sweeper's search space when ``hparams_search`` selects it (:mod:`mtrank.validation.search_space`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtrank.validation.errors import Problems, fmt_list, suggest
from mtrank.validation.metric_names import MetricCatalog, catalog_for_train_config
from mtrank.validation.search_space import ax_sweeper_config, check_ax_sweeper

__all__ = ["validate_train_config", "check_report", "check_calibration", "is_number"]

SPLITS = ("train", "val", "test")
REPORT_SCALES = ("linear", "log")
UNRESOLVED = object()


# ---------------------------------------------------------------------------------------------- helpers


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


# ---------------------------------------------------------------------------------------------- groups


def check_tasks(cfg: DictConfig, p: Problems) -> list[str]:
    """``tasks.names`` against the label columns of the data config; returns the usable task names."""
    from mtrank.data.config import reserved_task_name

    names = config_value(cfg, "tasks.names", p)
    labels = config_value(cfg, "data.pipeline.columns.labels", p)
    if names is UNRESOLVED:
        return []
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        p.add(
            "tasks.names",
            f"tasks.names = {names!r}: expected a non-empty list of task names"
            + (f"; allowed: {fmt_list(labels)}" if isinstance(labels, Mapping) else ""),
        )
        return []
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        p.add("tasks.names", f"tasks.names = {fmt_list(names)} lists {fmt_list(dup)} more than once")
    reserved = [n for n in names if reserved_task_name(n)]
    if reserved:
        p.add(
            "tasks.names",
            f"tasks.names: {fmt_list(reserved)} cannot name a task (a task names a head, a tower "
            "and a metric group: no '.', not empty, not 'mean', not an attribute of torch.nn.Module "
            "such as forward or train)",
        )
    if isinstance(labels, Mapping):
        unknown = [n for n in names if n not in labels and n not in reserved]
        if unknown:
            p.add(
                "tasks.names",
                f"tasks.names: unknown task(s) {fmt_list(unknown)}; allowed: the tasks with a label "
                f"column in data.pipeline.columns.labels: {fmt_list(labels)}"
                f"{suggest(unknown[0], labels)}",
            )
    elif labels is not UNRESOLVED:
        p.add(
            "data.pipeline.columns.labels",
            "data.pipeline.columns.labels is missing: map each task name to its label column",
        )
    data_tasks = config_value(cfg, "data.pipeline.tasks", p)
    if data_tasks is not UNRESOLVED and data_tasks is not None and list(data_tasks) != list(names):
        p.add(
            "data.pipeline.tasks",
            f"data.pipeline.tasks = {fmt_list(data_tasks)} differs from tasks.names = "
            f"{fmt_list(names)}; keep data.pipeline.tasks: ${{tasks.names}}",
        )
    return list(dict.fromkeys(names))


_KEY_IN_MESSAGE = re.compile(r"(data\.pipeline(?:\.[A-Za-z_]\w*)+|tasks\.names)")


def check_data(cfg: DictConfig, p: Problems) -> None:
    from mtrank.data.config import PipelineConfig
    from mtrank.data.errors import DataValidationError

    sim = config_value(cfg, "data.simulator", p)
    if isinstance(sim, Mapping):
        from mtrank.data.simulator_config import SimulatorConfig

        try:
            SimulatorConfig.from_mapping(dict(sim))
        except (ValueError, TypeError) as exc:
            p.add("data.simulator", f"data.simulator: {exc}")
    pipeline = config_value(cfg, "data.pipeline", p)
    if not isinstance(pipeline, Mapping):
        if pipeline is not UNRESOLVED:
            p.add("data.pipeline", "data.pipeline is missing: the data group must define the pipeline")
        return
    if p.has("tasks") or p.has("data.pipeline"):
        # the pipeline's own checks would stop at the problem already reported; β is still checked on its own
        from mtrank.data.config import check_downsample_beta

        beta = config_value(cfg, "data.pipeline.downsample.beta", p, default=1.0)
        if beta is not UNRESOLVED:
            try:
                check_downsample_beta(beta)
            except DataValidationError as exc:
                p.add("data.pipeline.downsample.beta", str(exc))
        return
    m = dict(pipeline)
    if isinstance(sim, Mapping) and not m.get("inputs") and not m.get("split_inputs"):
        m["inputs"] = ["<the simulator's logs>"]  # filled by the DataModule once generated
    try:
        PipelineConfig.from_mapping(m, key="data.pipeline")
    except DataValidationError as exc:
        text = str(exc)  # the data config names its keys in full (data.pipeline.<key>)
        found = _KEY_IN_MESSAGE.search(text)
        p.add(found.group(1) if found else "data.pipeline", text)
    except (KeyError, TypeError, ValueError) as exc:
        p.add("data.pipeline", f"data.pipeline: {exc}")


SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_run(cfg: DictConfig, p: Problems) -> None:
    """``seed``, the batch sizes and, when the run trains, ``trainer.max_epochs``."""
    seed = config_value(cfg, "seed", p)
    if seed is not None and seed is not UNRESOLVED and not (_whole(seed) and 0 <= seed <= SEED_MAX):
        p.add("seed", f"seed = {seed!r}: expected a whole number in [0, {SEED_MAX}] (or null for an unseeded run)")
    for key in ("data.batch_size", "data.eval_batch_size"):
        v = config_value(cfg, key, p)
        if v is not None and v is not UNRESOLVED and not (_whole(v) and v >= 1):
            p.add(key, f"{key} = {v!r}: expected a whole number of rows ≥ 1")
    if not cfg.get("train", True):
        return
    v = config_value(cfg, "trainer.max_epochs", p)
    if v is not None and v is not UNRESOLVED and not (_whole(v) and (v >= 1 or v == -1)):
        p.add(
            "trainer.max_epochs",
            f"trainer.max_epochs = {v!r}: expected a number of epochs ≥ 1 (or -1: no limit, "
            "ended by trainer.max_steps or early stopping); to test a trained run without "
            "training it, use src/eval.py ckpt_path=<run folder>",
        )


def _check_loss(cfg: DictConfig, p: Problems, tasks: Sequence[str]) -> str:
    from mtrank.training.objectives import OBJECTIVES

    objective = config_value(cfg, "loss.objective", p, default="multitask")
    if not check_one_of(p, "loss.objective", objective, OBJECTIVES):
        return "multitask"
    _LOSS_CHECKS[str(objective)](cfg, p, tasks)
    return str(objective)


def _check_multitask_loss(cfg: DictConfig, p: Problems, tasks: Sequence[str]) -> None:
    """``loss.objective = multitask``: ``task_weighting``, ``task_weights``, ``uncertainty_variant``, ``pos_weight``."""
    from mtrank.training.losses import TASK_WEIGHTING_KINDS, UNCERTAINTY_VARIANTS

    weighting = config_value(cfg, "loss.task_weighting", p, default="equal")
    ok = check_one_of(
        p,
        "loss.task_weighting",
        str(weighting).lower() if isinstance(weighting, str) else weighting,
        TASK_WEIGHTING_KINDS,
    )
    weights = config_value(cfg, "loss.task_weights", p)
    if ok and str(weighting).lower() == "fixed":
        if weights is None:
            p.add(
                "loss.task_weights",
                f"loss.task_weighting = fixed needs loss.task_weights: one weight per task in {fmt_list(tasks)}",
            )
        check_task_map(p, "loss.task_weights", weights, tasks, exact=True)
    elif ok and weights is not None and weights is not UNRESOLVED:
        p.add(
            "loss.task_weights",
            f"loss.task_weights is set but loss.task_weighting = {weighting} ignores it; "
            "set loss.task_weighting=fixed to use these weights, or loss.task_weights=null",
        )
    if ok and str(weighting).lower() == "uncertainty":
        check_one_of(
            p,
            "loss.uncertainty_variant",
            config_value(cfg, "loss.uncertainty_variant", p, default="kendall"),
            UNCERTAINTY_VARIANTS,
        )
    check_task_map(p, "loss.pos_weight", config_value(cfg, "loss.pos_weight", p), tasks, exact=False, positive=True)


def _check_binary_loss(cfg: DictConfig, p: Problems, tasks: Sequence[str]) -> None:
    """``loss.objective = binary``: ``importance_weights``, ``rule``."""
    from mtrank.training.losses import IMPORTANCE_RULES

    iw = config_value(cfg, "loss.importance_weights", p)
    if iw is None:
        p.add(
            "loss.importance_weights",
            f"loss.objective = binary needs loss.importance_weights: one weight per task in {fmt_list(tasks)}",
        )
    check_task_map(p, "loss.importance_weights", iw, tasks, exact=True, positive=True)
    check_one_of(p, "loss.rule", config_value(cfg, "loss.rule", p, default="max"), IMPORTANCE_RULES)


# the checks of each objective's own keys, by loss.objective (mtrank.training.objectives.OBJECTIVES)
_LOSS_CHECKS = {"multitask": _check_multitask_loss, "binary": _check_binary_loss}


def _check_model(cfg: DictConfig, p: Problems, tasks: Sequence[str], objective: str) -> None:
    from mtrank.training.objectives import objective_class

    key = "model.net.head_bias_init"
    init = config_value(cfg, key, p)
    if init is None or init is UNRESOLVED or is_number(init):
        return
    kind = objective_class(objective)
    heads = kind.heads_for(tasks)
    if not isinstance(init, Mapping):
        p.add(
            key,
            f"{key} = {init!r}: expected a number (every head) or a mapping {{head: bias}} over the heads "
            f"{fmt_list(heads)}",
        )
        return
    for k, v in init.items():
        if str(k) not in heads:
            why, hint = kind.heads_text, kind.bias_hint.format(key=key)
            p.add(
                f"{key}.{k}",
                f"{key}.{k}: '{k}' is not a head of this model ({why}); allowed keys: {fmt_list(heads)}; {hint}",
            )
        elif not is_number(v):
            p.add(f"{key}.{k}", f"{key}.{k} = {v!r}: expected a finite number")


def _check_optimizer(cfg: DictConfig, p: Problems) -> None:
    """``model.optimizer.lr`` must be a positive finite number: 0 trains nothing (the run ends with the initial
    weights and no word), a negative rate climbs the loss."""
    key = "model.optimizer.lr"
    if config_value(cfg, "model.optimizer", p) in (None, UNRESOLVED):
        return
    lr = config_value(cfg, key, p)
    if lr is None or lr is UNRESOLVED:
        return
    if not is_number(lr) or float(lr) <= 0:
        p.add(
            key,
            f"{key} = {lr!r}: expected a positive finite learning rate (e.g. 0.002); 0 would leave the model "
            "untrained and a negative rate would climb the loss",
        )


def _check_stream(cfg: DictConfig, p: Problems) -> None:
    """``data.shuffle_buffer``: an integer ≥ 1 (rows permuted together when training)."""
    key = "data.shuffle_buffer"
    v = config_value(cfg, key, p)
    if v is None or v is UNRESOLVED:
        return
    if not is_number(v) or not float(v).is_integer() or v < 1:
        p.add(
            key,
            f"{key} = {v!r}: expected an integer ≥ 1, the number of train rows permuted together (whole "
            "batches; e.g. 65536); 0 would not shuffle across batches",
        )


def check_calibration(cfg: DictConfig, p: Problems, objective: str | None) -> None:
    """``calibration.method``, ``fit_split``, ``downsampling`` (reweight needs the multi-task objective)."""
    from mtrank.calibration.calibrators import METHODS
    from mtrank.calibration.downsampling import DOWNSAMPLING_MODES
    from mtrank.training.objectives import objective_class

    if config_value(cfg, "calibration", p) is None:
        return
    check_one_of(p, "calibration.method", config_value(cfg, "calibration.method", p, default="none"), METHODS)
    check_one_of(p, "calibration.fit_split", config_value(cfg, "calibration.fit_split", p, default="val"), SPLITS)
    mode = config_value(cfg, "calibration.downsampling", p, default="correct")
    if (
        check_one_of(p, "calibration.downsampling", mode, DOWNSAMPLING_MODES)
        and mode == "reweight"
        and objective is not None
        and not objective_class(objective).supports_reweight
    ):
        p.add(
            "calibration.downsampling",
            f"calibration.downsampling = reweight needs loss.objective = multitask (the "
            f"binary objective is corrected with Eq. 3); allowed with loss.objective = "
            f"{objective}: [correct]",
        )


def check_report(cfg: DictConfig, p: Problems) -> None:
    """The evaluation report's choices (``report.bins``, ``scale``, ``n_bins``, ``min_bin_count``, ``ks``,
    ``ranking_chunk_rows``)."""
    from mtrank.scoring.plots import BIN_STRATEGIES

    report = config_value(cfg, "report", p)
    if not isinstance(report, Mapping):
        return
    check_one_of(p, "report.bins", report.get("bins", "quantile"), BIN_STRATEGIES)
    check_one_of(p, "report.scale", report.get("scale", "linear"), REPORT_SCALES)
    for k, low in (("n_bins", 1), ("min_bin_count", 0), ("ranking_chunk_rows", 1)):
        v = report.get(k)
        if v is not None and (not is_number(v) or not float(v).is_integer() or v < low):
            p.add(f"report.{k}", f"report.{k} = {v!r}: expected an integer ≥ {low}")
    ks = report.get("ks") or []
    bad = [k for k in (ks if isinstance(ks, list) else [ks]) if not is_number(k) or not float(k).is_integer() or k < 1]
    if bad or not isinstance(ks, list):
        p.add("report.ks", f"report.ks = {ks!r}: expected a list of integers ≥ 1 (NDCG@k cut-offs), e.g. [5, 10]")


def _check_metric(p: Problems, key: str, name: Any, allowed: frozenset[str], describe: str, when: str) -> None:
    if name is None or name is UNRESOLVED:
        return
    if str(name) not in allowed:
        p.add(key, f"{key} = '{name}' is never logged {when}; allowed: {describe}{suggest(name, allowed)}")


def _check_monitors(cfg: DictConfig, p: Problems, catalog: MetricCatalog) -> None:
    fit, run = catalog.fit_names, catalog.run_names
    fit_text, run_text = catalog.describe(fit_only=True), catalog.describe(fit_only=False)
    when_fit = "while fitting (callbacks and LR schedulers see train/ and val/ metrics only)"
    callbacks = cfg.get("callbacks") if isinstance(cfg, DictConfig) and catalog.trained else None
    for name in list(callbacks.keys()) if isinstance(callbacks, DictConfig) else []:
        cb = callbacks.get(name)
        if not isinstance(cb, DictConfig) or "monitor" not in cb:
            continue  # only the keys read here are resolved (dirpath needs the Hydra run)
        monitor = config_value(cfg, f"callbacks.{name}.monitor", p)
        _check_metric(p, f"callbacks.{name}.monitor", monitor, fit, fit_text, when_fit)
        if monitor is not None and "mode" in cb:
            check_one_of(p, f"callbacks.{name}.mode", config_value(cfg, f"callbacks.{name}.mode", p), ("min", "max"))
    sched = config_value(cfg, "model.scheduler", p) if catalog.trained else None  # train=false: nothing is fitted
    if isinstance(sched, Mapping) and sched.get("monitor") is not None:
        _check_metric(p, "model.scheduler.monitor", sched.get("monitor"), fit, fit_text, when_fit)
    _check_metric(
        p, "optimized_metric", config_value(cfg, "optimized_metric", p), run, run_text, "by this run (its metrics.json)"
    )


# ---------------------------------------------------------------------------------------------- entry


def validate_train_config(cfg: DictConfig) -> MetricCatalog:
    """Check a ``conf/train.yaml`` config before anything runs; raise :class:`ConfigError` listing every problem.

    Returns the :class:`MetricCatalog` of what the run will log.
    """
    p = Problems()
    tasks = check_tasks(cfg, p)
    _check_run(cfg, p)
    check_data(cfg, p)
    _check_stream(cfg, p)
    _check_optimizer(cfg, p)
    objective = _check_loss(cfg, p, tasks) if tasks else None
    if tasks:
        _check_model(cfg, p, tasks, objective or "multitask")
    check_calibration(cfg, p, objective)
    check_report(cfg, p)
    catalog = catalog_for_train_config(cfg, tasks)
    if tasks:
        _check_monitors(cfg, p, catalog)
        sweeper = ax_sweeper_config(cfg)
        if sweeper is not None:
            check_ax_sweeper(cfg, sweeper, p, catalog.run_names, catalog.describe(fit_only=False))
    p.raise_if_any("train")
    return catalog
