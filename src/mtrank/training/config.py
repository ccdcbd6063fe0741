"""The training component's configs, as typed objects that check themselves (every message names the full key).

* :class:`LossConfig` (``loss``): the objective and its settings, over the tasks (maps keyed by task);
* :class:`OptimizerConfig` (``model.optimizer``) and :class:`ModelConfig` (``model``: the optimiser and the
  heads' ``net.head_bias_init``; every other key is the network's or the module's own);
* :class:`RunConfig`: ``seed`` and, when the run trains, ``trainer.max_epochs``;
* :class:`MonitorConfig` (``callbacks.<name>.monitor`` / ``mode``) and :class:`PerHeadSelectionConfig`
  (``callbacks.per_head_selection``).

Each raises one :class:`~mtrank.errors.ConfigError` listing its problems when it is built; the constructors that
read these settings (:func:`mtrank.training.objectives.build_objective`,
:func:`mtrank.training.losses.build_task_weighting`, :class:`mtrank.training.selection.PerHeadSelection`) build
them, so the rules live here only. What spans components (a monitored metric the run never logs) is
:mod:`mtrank.validation`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mtrank.errors import ConfigError, Problems, fmt_list
from mtrank.models.conditional import FORMS as IMPLIED_FORMS
from mtrank.models.conditional import implied_links
from mtrank.utils.config_fields import check_one_of, check_task_map, is_number, is_whole

__all__ = [
    "OBJECTIVES",
    "TASK_WEIGHTING_KINDS",
    "UNCERTAINTY_VARIANTS",
    "IMPORTANCE_RULES",
    "MONITOR_MODES",
    "COMPILE_KEYS",
    "SEED_MAX",
    "LossConfig",
    "OptimizerConfig",
    "CompileConfig",
    "ModelConfig",
    "RunConfig",
    "MonitorConfig",
    "PerHeadSelectionConfig",
]

OBJECTIVES = ("multitask", "binary")  # loss.objective (mtrank.training.objectives has a class for each)
TASK_WEIGHTING_KINDS = ("equal", "fixed", "uncertainty")
UNCERTAINTY_VARIANTS = ("kendall", "liebel")
IMPORTANCE_RULES = ("max", "sum")
MONITOR_MODES = ("min", "max")
COMPILE_KEYS = ("backend", "mode", "dynamic", "fullgraph", "options")  # torch.compile's keyword arguments
SEED_MAX = 2**32 - 1  # numpy's and Lightning's seed range


def _gather(p: Problems, make: Any, *args: Any) -> Any:
    """``make(*args)``, its :class:`~mtrank.errors.ConfigError` added to ``p`` (then None)."""
    try:
        return make(*args)
    except ConfigError as exc:
        p.extend(exc)
        return None


def _lower(x: Any) -> Any:
    return x.lower() if isinstance(x, str) else x


@dataclass(frozen=True)
class LossConfig:
    """``loss`` over ``tasks``. ``objective: multitask`` (Eq. 2) reads ``task_weighting``, ``task_weights``
    (with ``fixed`` only, one per task), ``uncertainty_variant`` (with ``uncertainty``) and ``pos_weight`` (some
    tasks, > 0); ``objective: binary`` (Eq. 1) reads ``importance_weights`` (one per task, > 0) and ``rule``.
    Other keys are left alone, as the module leaves them."""

    tasks: tuple[str, ...]
    objective: str = "multitask"
    task_weighting: str = "equal"
    task_weights: Mapping[str, float] | None = None
    uncertainty_variant: str = "kendall"
    pos_weight: Mapping[str, float] | None = None
    importance_weights: Mapping[str, float] | None = None
    rule: str = "max"
    key: str = "loss"

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", tuple(str(t) for t in self.tasks))
        object.__setattr__(self, "task_weighting", _lower(self.task_weighting))
        object.__setattr__(self, "uncertainty_variant", _lower(self.uncertainty_variant))
        p = Problems()
        if check_one_of(p, f"{self.key}.objective", self.objective, OBJECTIVES):
            (self._check_multitask if self.objective == "multitask" else self._check_binary)(p)
        p.raise_if_any()

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any] | None, tasks: Sequence[str], key: str = "loss") -> LossConfig:
        m = dict(m or {})
        known = ("objective", "task_weighting", "uncertainty_variant", "rule")
        kwargs = {k: m[k] for k in known if m.get(k) is not None}
        for k in ("task_weights", "pos_weight", "importance_weights"):
            kwargs[k] = m.get(k)
        return cls(tasks=tuple(tasks), key=key, **kwargs)

    def _check_multitask(self, p: Problems) -> None:
        key, tasks = self.key, self.tasks
        ok = check_one_of(p, f"{key}.task_weighting", self.task_weighting, TASK_WEIGHTING_KINDS)
        if ok and self.task_weighting == "fixed":
            if self.task_weights is None:
                p.add(
                    f"{key}.task_weights",
                    f"{key}.task_weighting = fixed needs {key}.task_weights: one weight per task in {fmt_list(tasks)}",
                )
            check_task_map(p, f"{key}.task_weights", self.task_weights, tasks, exact=True)
        elif ok and self.task_weights is not None:
            p.add(
                f"{key}.task_weights",
                f"{key}.task_weights is set but {key}.task_weighting = {self.task_weighting} ignores it; "
                f"set {key}.task_weighting=fixed to use these weights, or {key}.task_weights=null",
            )
        if ok and self.task_weighting == "uncertainty":
            check_one_of(p, f"{key}.uncertainty_variant", self.uncertainty_variant, UNCERTAINTY_VARIANTS)
        check_task_map(p, f"{key}.pos_weight", self.pos_weight, tasks, exact=False, positive=True)

    def _check_binary(self, p: Problems) -> None:
        key, tasks = self.key, self.tasks
        if self.importance_weights is None:
            p.add(
                f"{key}.importance_weights",
                f"{key}.objective = binary needs {key}.importance_weights: one weight per task in {fmt_list(tasks)}",
            )
        check_task_map(p, f"{key}.importance_weights", self.importance_weights, tasks, exact=True, positive=True)
        check_one_of(p, f"{key}.rule", self.rule, IMPORTANCE_RULES)

    def per_task(self, name: str, default: float | None) -> list[float] | None:
        """The map ``name`` (``pos_weight``, ``importance_weights``, ``task_weights``) in task order; None when
        it is not set. Tasks it leaves out get ``default``."""
        mapping = getattr(self, name)
        if not mapping:
            return None
        return [float(mapping.get(t, default)) for t in self.tasks]


@dataclass(frozen=True)
class OptimizerConfig:
    """``model.optimizer``: a torch optimiser (``_target_`` and its arguments); ``lr`` a positive finite number
    when given: 0 trains nothing (the run ends with the initial weights and no word), a negative rate climbs the
    loss."""

    lr: Any = None
    key: str = "model.optimizer"

    def __post_init__(self) -> None:
        p = Problems()
        if self.lr is not None and (not is_number(self.lr) or float(self.lr) <= 0):
            p.add(
                f"{self.key}.lr",
                f"{self.key}.lr = {self.lr!r}: expected a positive finite learning rate (e.g. 0.002); 0 would leave "
                "the model untrained and a negative rate would climb the loss",
            )
        p.raise_if_any()

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], key: str = "model.optimizer") -> OptimizerConfig:
        return cls(lr=dict(m).get("lr"), key=key)


@dataclass(frozen=True)
class CompileConfig:
    """``model.compile``: false / null (eager), true (``torch.compile``'s defaults) or a mapping of its keyword
    arguments (:data:`COMPILE_KEYS`)."""

    value: Any = None
    key: str = "model.compile"

    def __post_init__(self) -> None:
        p, v = Problems(), self.value
        if isinstance(v, Mapping):
            unknown = sorted(set(v) - set(COMPILE_KEYS))
            if unknown:
                p.add(self.key, f"{self.key} has unknown key(s) {unknown}; allowed: {sorted(COMPILE_KEYS)}")
        elif v not in (None, True, False):
            p.add(self.key, f"{self.key} = {v!r}: expected true, false or a mapping of torch.compile arguments")
        p.raise_if_any()

    @property
    def options(self) -> dict[str, Any] | None:
        """None (eager) or the keyword arguments of ``torch.compile``."""
        if self.value is None or self.value is False:
            return None
        if self.value is True:
            return {}
        return {k: v for k, v in self.value.items() if v is not None}


@dataclass(frozen=True)
class ModelConfig:
    """``model``: the optimiser, ``compile`` and each head's ``net.head_bias_init`` (a number for every head, or a mapping
    ``{head: bias}`` over the heads of ``objective``: a class of :mod:`mtrank.training.objectives`, whose
    ``heads_for``, ``heads_text`` and ``bias_hint`` word the message). The network's other keys are checked
    by the network; ``scheduler.monitor`` against the metrics the run logs by :mod:`mtrank.validation`."""

    heads: tuple[str, ...]
    optimizer: OptimizerConfig | None = None
    compile: CompileConfig | None = None
    head_bias_init: Any = None
    heads_text: str = ""
    bias_hint: str = ""
    ensemble_size: Any = 1
    implied: Any = None
    implied_form: Any = "conditional"
    key: str = "model"

    def __post_init__(self) -> None:
        p = Problems()
        if not is_whole(self.ensemble_size) or not self.ensemble_size >= 1:
            k = f"{self.key}.ensemble_size"
            p.add(k, f"{k} = {self.ensemble_size!r}: expected an integer ≥ 1 (1 = the plain net)")
        if self.implied_form not in IMPLIED_FORMS:
            k = f"{self.key}.net.implied_form"
            p.add(k, f"{k} = {self.implied_form!r}: expected one of {fmt_list(IMPLIED_FORMS)}")
        try:  # the map's form, self-implications and cycles (entries naming other tasks are skipped by the net)
            implied_links(self.heads, self.implied, key=f"{self.key}.net.implied", warn=False)
        except ValueError as e:
            p.add(f"{self.key}.net.implied", str(e))
        key, init, heads = f"{self.key}.net.head_bias_init", self.head_bias_init, self.heads
        if isinstance(init, Mapping):
            for k, v in init.items():
                if str(k) not in heads:
                    hint = self.bias_hint.format(key=key)
                    p.add(
                        f"{key}.{k}",
                        f"{key}.{k}: '{k}' is not a head of this model ({self.heads_text}); allowed keys: "
                        f"{fmt_list(heads)}; {hint}",
                    )
                elif not is_number(v):
                    p.add(f"{key}.{k}", f"{key}.{k} = {v!r}: expected a finite number")
        elif init is not None and not is_number(init):
            p.add(
                key,
                f"{key} = {init!r}: expected a number (every head) or a mapping {{head: bias}} over the heads "
                f"{fmt_list(heads)}",
            )
        p.raise_if_any()

    @classmethod
    def from_mapping(
        cls, m: Mapping[str, Any], objective: Any, tasks: Sequence[str], key: str = "model"
    ) -> ModelConfig:
        """``objective``: the objective's class (its heads for ``tasks`` are the net's heads)."""
        m = dict(m)
        p = Problems()
        compile = _gather(p, CompileConfig, m.get("compile"), f"{key}.compile")
        optimizer = None
        if isinstance(m.get("optimizer"), Mapping):
            optimizer = _gather(p, OptimizerConfig.from_mapping, m["optimizer"], f"{key}.optimizer")
        net = m.get("net") if isinstance(m.get("net"), Mapping) else {}
        out = _gather(
            p,
            lambda: cls(
                heads=tuple(objective.heads_for(tasks)),
                optimizer=optimizer,
                compile=compile,
                head_bias_init=net.get("head_bias_init"),
                heads_text=objective.heads_text,
                bias_hint=objective.bias_hint,
                ensemble_size=m.get("ensemble_size", 1),
                implied=net.get("implied"),
                implied_form=net.get("implied_form", "conditional"),
                key=key,
            ),
        )
        p.raise_if_any()
        return out


@dataclass(frozen=True)
class RunConfig:
    """``seed`` (a whole number in [0, 2³²), or null) and, when the run trains, ``trainer.max_epochs`` (≥ 1, or
    -1: no limit)."""

    seed: Any = None
    max_epochs: Any = None
    trains: bool = True

    def __post_init__(self) -> None:
        p = Problems()
        seed, epochs = self.seed, self.max_epochs
        if seed is not None and not (is_whole(seed) and 0 <= seed <= SEED_MAX):
            p.add("seed", f"seed = {seed!r}: expected a whole number in [0, {SEED_MAX}] (or null for an unseeded run)")
        if self.trains and epochs is not None and not (is_whole(epochs) and (epochs >= 1 or epochs == -1)):
            p.add(
                "trainer.max_epochs",
                f"trainer.max_epochs = {epochs!r}: expected a number of epochs ≥ 1 (or -1: no limit, "
                "ended by trainer.max_steps or early stopping); to test a trained run without "
                "training it, use src/eval.py ckpt_path=<run folder>",
            )
        p.raise_if_any()


@dataclass(frozen=True)
class MonitorConfig:
    """A callback that watches a metric (``callbacks.<name>.monitor``) in a direction (``mode``: min | max);
    whether the run logs that metric is checked against its catalogue by :mod:`mtrank.validation`."""

    key: str
    monitor: str | None = None
    mode: Any = None

    def __post_init__(self) -> None:
        p = Problems()
        if self.monitor is not None and self.mode is not None:
            check_one_of(p, f"{self.key}.mode", self.mode, MONITOR_MODES)
        p.raise_if_any()


@dataclass(frozen=True)
class PerHeadSelectionConfig:
    """``callbacks.per_head_selection``: each head kept at its best ``val/<head>/<metric>`` (``mode``)."""

    metric: str = "logloss"
    mode: str = "min"
    min_delta: float = 0.0  # relative gain a head needs to leave the checkpoint's epoch (0: its own best always)
    key: str = "callbacks.per_head_selection"

    def __post_init__(self) -> None:
        p = Problems()
        check_one_of(p, f"{self.key}.mode", self.mode, MONITOR_MODES)
        if not is_number(self.min_delta) or not self.min_delta >= 0:
            p.add(f"{self.key}.min_delta", f"{self.key}.min_delta = {self.min_delta!r}: expected a number ≥ 0")
        p.raise_if_any()
