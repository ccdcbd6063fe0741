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

import re
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from mtrank.validation.errors import Problems, fmt_list, suggest
from mtrank.validation.lookup import REPORT_SCALES, SPLITS, UNRESOLVED, check_one_of, config_value, is_number
from mtrank.validation.metric_names import MetricCatalog, catalog_for_train_config
from mtrank.validation.model_checks import check_loss, check_model, check_optimizer, check_stream
from mtrank.validation.search_space import ax_sweeper_config, check_ax_sweeper


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


def validate_train_config(cfg: DictConfig) -> MetricCatalog:
    """Check a ``conf/train.yaml`` config before anything runs; raise :class:`ConfigError` listing every problem.

    Returns the :class:`MetricCatalog` of what the run will log.
    """
    p = Problems()
    tasks = check_tasks(cfg, p)
    _check_run(cfg, p)
    check_data(cfg, p)
    check_stream(cfg, p)
    check_optimizer(cfg, p)
    objective = check_loss(cfg, p, tasks) if tasks else None
    if tasks:
        check_model(cfg, p, tasks, objective or "multitask")
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
