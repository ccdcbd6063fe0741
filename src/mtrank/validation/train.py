"""Checks of a ``conf/train.yaml`` config, run when ``train(cfg)`` starts, before any data is read or generated.

:func:`validate_train_config` builds each component's typed config from the composed config, gathering the
problems each reports under its full key, then runs the checks that span components once; it raises one
:class:`~mtrank.errors.ConfigError` listing every problem (docs/checks.md has the messages):

* the components: the run (:class:`mtrank.training.config.RunConfig`: ``seed``, ``trainer.max_epochs``), the
  data stream (:class:`mtrank.data.config.StreamConfig`), the data pipeline
  (:class:`mtrank.data.config.PipelineConfig`, reported under ``data.pipeline``) and the simulator
  (:class:`mtrank.data.simulator_config.SimulatorConfig`, under ``data.simulator``), the loss
  (:class:`mtrank.training.config.LossConfig`, over the tasks), the model
  (:class:`mtrank.training.config.ModelConfig`: optimiser, head biases over the objective's heads), the
  calibration (:class:`mtrank.calibration.config.CalibrationConfig`), the report
  (:class:`mtrank.scoring.config.ReportConfig`) and the callbacks (:class:`mtrank.training.config.MonitorConfig`,
  :class:`mtrank.training.config.PerHeadSelectionConfig`);
* across components: ``tasks.names`` against the label columns of ``data.pipeline.columns.labels``,
  ``calibration.downsampling = reweight`` against the objective (:func:`mtrank.calibration.config.check_reweight`),
  every monitored metric (``callbacks.<name>.monitor``, ``model.scheduler.monitor``: logged while fitting;
  ``optimized_metric``: logged by the run) against the run's :class:`~mtrank.validation.metric_names.MetricCatalog`,
  and the Ax sweeper's search space when ``hparams_search`` selects it (:mod:`mtrank.validation.search_space`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from mtrank.calibration.config import CalibrationConfig, check_reweight
from mtrank.data.config import StreamConfig
from mtrank.errors import Problems, fmt_list, suggest
from mtrank.scoring.config import ReportConfig
from mtrank.training.config import (
    OBJECTIVES,
    LossConfig,
    ModelConfig,
    MonitorConfig,
    OptimizerConfig,
    PerHeadSelectionConfig,
    RunConfig,
)
from mtrank.training.objectives import objective_class
from mtrank.validation.compose import UNRESOLVED, build, config_value, resolved
from mtrank.validation.metric_names import MetricCatalog, catalog_for_train_config
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


def check_data(cfg: DictConfig, p: Problems) -> None:
    """The simulator's and the pipeline's own configs, each problem under the key the config names."""
    from mtrank.data.config import PipelineConfig, check_downsample_beta
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
    try:
        if p.has("tasks") or p.has("data.pipeline"):
            # the pipeline's own checks would stop at the problem already reported; β is still checked on its own
            check_downsample_beta((pipeline.get("downsample") or {}).get("beta", 1.0))
            return
        m = dict(pipeline)
        if isinstance(sim, Mapping) and not m.get("inputs") and not m.get("split_inputs"):
            m["inputs"] = ["<the simulator's logs>"]  # filled by the DataModule once generated
        PipelineConfig.from_mapping(m, key="data.pipeline")
    except DataValidationError as exc:
        p.add(exc.key or "data.pipeline", str(exc))
    except (KeyError, TypeError, ValueError) as exc:
        p.add("data.pipeline", f"data.pipeline: {exc}")


def _components(cfg: DictConfig, p: Problems, tasks: list[str]) -> str | None:
    """Build every component's config (problems gathered); returns the objective's name when it is known."""
    trains = bool(cfg.get("train", True))
    run = resolved(cfg, {"seed": None, "trainer.max_epochs": None} if trains else {"seed": None}, p)
    build(p, RunConfig, run.get("seed"), run.get("trainer.max_epochs"), trains)
    stream = resolved(cfg, {f"data.{k}": None for k in ("batch_size", "eval_batch_size", "shuffle_buffer")}, p)
    build(p, StreamConfig.from_mapping, {k[len("data.") :]: v for k, v in stream.items()})
    check_data(cfg, p)
    loss = config_value(cfg, "loss", p)
    loss = loss if isinstance(loss, Mapping) else {}
    objective = str(loss.get("objective") or "multitask")
    if tasks:
        build(p, LossConfig.from_mapping, loss, tasks)
    known = objective if tasks and objective in OBJECTIVES else None
    model = config_value(cfg, "model", p)
    if isinstance(model, Mapping) and tasks:
        build(p, ModelConfig.from_mapping, model, objective_class(known or "multitask"), tasks)
    elif isinstance(model, Mapping) and isinstance(model.get("optimizer"), Mapping):
        build(p, OptimizerConfig.from_mapping, model["optimizer"])
    calibration = config_value(cfg, "calibration", p)
    if isinstance(calibration, Mapping):
        cal = build(p, CalibrationConfig.from_mapping, calibration)
        if cal is not None and known is not None:
            build(p, check_reweight, cal.downsampling, known, objective_class(known).supports_reweight)
    report = config_value(cfg, "report", p)
    if isinstance(report, Mapping):
        build(p, ReportConfig.from_mapping, report)
    return known


def _check_metric(p: Problems, key: str, name: Any, allowed: frozenset[str], describe: str, when: str) -> None:
    if name is None or name is UNRESOLVED:
        return
    if str(name) not in allowed:
        p.add(key, f"{key} = '{name}' is never logged {when}; allowed: {describe}{suggest(name, allowed)}")


def _check_monitors(cfg: DictConfig, p: Problems, catalog: MetricCatalog) -> None:
    """The callbacks' own settings, and every monitored metric against what the run logs."""
    fit, run = catalog.fit_names, catalog.run_names
    fit_text, run_text = catalog.describe(fit_only=True), catalog.describe(fit_only=False)
    when_fit = "while fitting (callbacks and LR schedulers see train/ and val/ metrics only)"
    callbacks = cfg.get("callbacks") if isinstance(cfg, DictConfig) and catalog.trained else None
    for name in list(callbacks.keys()) if isinstance(callbacks, DictConfig) else []:
        cb, key = callbacks.get(name), f"callbacks.{name}"
        if not isinstance(cb, DictConfig):
            continue
        # only the keys read here are resolved (dirpath needs the Hydra run)
        if name == "per_head_selection":
            v = resolved(cfg, {f"{key}.metric": "logloss", f"{key}.mode": "min", f"{key}.min_delta": 0.0}, p)
            build(
                p,
                PerHeadSelectionConfig,
                str(v.get(f"{key}.metric", "logloss")),
                v.get(f"{key}.mode", "min"),
                v.get(f"{key}.min_delta", 0.0),
            )
        if "monitor" not in cb:
            continue
        v = resolved(
            cfg, {f"{key}.monitor": None, f"{key}.mode": None} if "mode" in cb else {f"{key}.monitor": None}, p
        )
        monitor = v.get(f"{key}.monitor")
        build(p, MonitorConfig, key, monitor, v.get(f"{key}.mode"))
        _check_metric(p, f"{key}.monitor", monitor, fit, fit_text, when_fit)
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
    _components(cfg, p, tasks)
    catalog = catalog_for_train_config(cfg, tasks)
    if tasks:
        _check_monitors(cfg, p, catalog)
        sweeper = ax_sweeper_config(cfg)
        if sweeper is not None:
            check_ax_sweeper(cfg, sweeper, p, catalog.run_names, catalog.describe(fit_only=False))
    p.raise_if_any("train")
    return catalog
