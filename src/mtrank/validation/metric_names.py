"""The metric names a training run logs, derived from its config before anything runs.

Built from the constants of the code that logs them (:data:`mtrank.metrics.heads.HEAD_METRIC_NAMES`,
:data:`mtrank.metrics.calibration.RAW_METRIC_NAMES`, …) and :class:`mtrank.training.module.RankingModule`'s
naming (``<stage>/<task>/<metric>``). ``tests/test_corpus_predict.py`` trains a run and checks that this set
equals what the run logged, so the two cannot drift apart.

* :attr:`MetricCatalog.fit_names`: what ModelCheckpoint, EarlyStopping and a LR scheduler can monitor
  (``train/…`` and ``val/…``, known while fitting);
* :attr:`MetricCatalog.run_names`: every key of the run's ``metrics.json`` (also ``test/…`` and
  ``time/fit_seconds``): what ``optimized_metric`` and the Ax sweeper's objective and outcome constraints
  can name.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mtrank.metrics.calibration import RAW_METRIC_NAMES, RAW_SUFFIX
from mtrank.metrics.heads import HEAD_METRIC_NAMES
from mtrank.training.objectives import BinaryObjective, objective_class
from mtrank.utils.config import plain

__all__ = ["MetricCatalog", "catalog_for_train_config", "GATE_CALLBACK"]

# keys RankingModule logs besides the per-head metrics (see mtrank.training.module and mtrank.metrics)
MEAN_METRIC_NAMES = ("auroc", "pr_auc")  # "<stage>/mean/<metric>": MultiHeadMetrics' means over heads
ORACLE_METRIC = "oracle_auroc"  # when the data has the simulator's true probabilities
CORRECTED_SUFFIX = "_corrected"  # after Eq. 3 alone, logged while post-hoc calibrators are attached (test)
FIT_SECONDS = "time/fit_seconds"  # mtrank.jobs.train adds it to metrics.json
GATE_CALLBACK = "mtrank.training.callbacks.GateStatistics"


@dataclass(frozen=True)
class MetricCatalog:
    """What a run of a given config logs. ``gates``: head → expert names of the gate statistics callback."""

    tasks: tuple[str, ...]
    objective: str = "multitask"
    has_p_true: bool = False
    uncertainty: bool = False  # loss.task_weighting=uncertainty: train/<task>/task_weight (multi-task)
    calibrated: bool = False  # post-hoc calibrators fitted after training: test/<task>/<metric>_corrected
    trained: bool = True  # train=true: train/ and val/ figures and time/fit_seconds
    tested: bool = True  # test=true: test/ figures
    gates: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    gate_prefix: str = "gates"
    gate_stages: tuple[str, ...] = ()
    gate_entropy: bool = True

    # ------------------------------------------------------------------ per stage
    def head_metrics(self, stage: str) -> tuple[str, ...]:
        """The ``<metric>`` part of ``<stage>/<task>/<metric>``."""
        names = list(HEAD_METRIC_NAMES) + ([ORACLE_METRIC] if self.has_p_true else [])
        names += [m + RAW_SUFFIX for m in RAW_METRIC_NAMES]
        if stage == "test" and self.calibrated:
            names += [m + CORRECTED_SUFFIX for m in RAW_METRIC_NAMES]
        return tuple(names)

    def train_task_metrics(self) -> tuple[str, ...]:
        # an unknown objective is reported by the loss check; its catalogue is that of the single-head objective
        return objective_class(self.objective, default=BinaryObjective).train_task_metrics(self.uncertainty)

    def gate_names(self, stage: str) -> list[str]:
        if stage not in self.gate_stages:
            return []
        out = []
        for head, experts in self.gates.items():
            out += [f"{stage}/{self.gate_prefix}/{head}/{e}" for e in experts]
            if self.gate_entropy:
                out.append(f"{stage}/{self.gate_prefix}/{head}/entropy")
        return out

    def stage_names(self, stage: str) -> set[str]:
        if stage == "train":
            return {"train/loss"} | {f"train/{t}/{m}" for t in self.tasks for m in self.train_task_metrics()}
        out = {f"{stage}/loss"} | {f"{stage}/mean/{m}" for m in MEAN_METRIC_NAMES}
        out |= {f"{stage}/{t}/{m}" for t in self.tasks for m in self.head_metrics(stage)}
        return out | set(self.gate_names(stage))

    # ------------------------------------------------------------------ the two sets
    @property
    def fit_names(self) -> frozenset[str]:
        """Known while fitting: what callbacks and LR schedulers can monitor."""
        if not self.trained:
            return frozenset()
        return frozenset(self.stage_names("train") | self.stage_names("val"))

    @property
    def run_names(self) -> frozenset[str]:
        """Every key of the run's metrics.json: what optimized_metric and sweeps can name."""
        out = set(self.fit_names) | ({FIT_SECONDS} if self.trained else set())
        if self.tested:
            out |= self.stage_names("test")
        return frozenset(out)

    # ------------------------------------------------------------------ messages
    def describe(self, fit_only: bool) -> str:
        """The allowed names as patterns, short enough for an error message."""
        stages = [
            s
            for s in ("train", "val", "test")
            if (s != "test" or (self.tested and not fit_only)) and (s == "test" or self.trained)
        ]
        parts = []
        tasks = "<task> in " + "[" + ", ".join(self.tasks) + "]"
        for s in stages:
            if s == "train":
                parts.append("train/loss")
                if self.train_task_metrics():
                    parts.append("train/<task>/" + _alts(self.train_task_metrics()))
                continue
            parts.append(f"{s}/loss")
            parts.append(f"{s}/mean/" + _alts(MEAN_METRIC_NAMES))
            parts.append(f"{s}/<task>/" + _alts(self.head_metrics(s)))
            if s in self.gate_stages and self.gates:
                experts = next(iter(self.gates.values()))
                parts.append(f"{s}/{self.gate_prefix}/<head>/" + _alts(list(experts) + ["entropy"] * self.gate_entropy))
        if not fit_only and self.trained:
            parts.append(FIT_SECONDS)
        if not parts:
            return "none (train=false and test=false log nothing)"
        return ", ".join(parts) + f" with {tasks}" + (f", <head> in [{', '.join(self.gates)}]" if self.gates else "")


def _alts(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else "{" + ", ".join(names) + "}"


# ---------------------------------------------------------------------------------------------- from a config


def _get(node: Any, key: str, default: Any = None) -> Any:
    try:
        v = OmegaConf.select(node, key, default=default) if isinstance(node, DictConfig) else node.get(key, default)
    except Exception:  # noqa: BLE001 - an unresolvable value is reported by the checks that own that key
        return default
    return default if v is None else v


def _expert_names(net_cfg: Mapping[str, Any]) -> tuple[str, ...] | None:
    """``expert_<i>`` (shared) then ``own_<j>`` (per head) of a mixture-of-experts net; None for a net without
    gates. Counts come from the config, defaults from the class signature."""
    target = net_cfg.get("_target_")
    if not target:
        return None
    try:
        import hydra

        cls = hydra.utils.get_class(str(target))
    except Exception:  # noqa: BLE001 - the model check reports an unknown target
        return None
    if not callable(getattr(cls, "gate_expert_names", None)):
        return None
    params = inspect.signature(cls.__init__).parameters

    def count(name: str) -> int:
        if name in net_cfg and net_cfg[name] is not None:
            return int(net_cfg[name])
        p = params.get(name)
        return int(p.default) if p is not None and isinstance(p.default, int) else 0

    return tuple(
        [f"expert_{i}" for i in range(count("n_experts"))] + [f"own_{j}" for j in range(count("n_task_experts"))]
    )


def catalog_for_train_config(cfg: DictConfig, tasks: Sequence[str] | None = None) -> MetricCatalog:
    """The :class:`MetricCatalog` of a ``conf/train.yaml`` config (``tasks`` overrides ``tasks.names``)."""
    tasks = tuple(str(t) for t in (tasks if tasks is not None else (plain(_get(cfg, "tasks.names", [])) or [])))
    loss = plain(_get(cfg, "loss", {})) or {}
    objective = str(loss.get("objective", "multitask"))
    weighting = str(loss.get("task_weighting", "equal")).lower()
    method = str(_get(cfg, "calibration.method", "none") or "none")
    heads = tuple(objective_class(objective, default=BinaryObjective).heads_for(tasks))
    gates: dict[str, tuple[str, ...]] = {}
    gate_prefix, gate_stages, gate_entropy = "gates", (), True
    callbacks = _get(cfg, "callbacks", {}) or {}
    for name in list(callbacks.keys()) if hasattr(callbacks, "keys") else []:
        cb = _get(callbacks, str(name))
        if not hasattr(cb, "get") or _get(cb, "_target_") != GATE_CALLBACK:
            continue
        experts = _expert_names(plain(_get(cfg, "model.net", {})) or {})
        if experts is None:
            continue  # GateStatistics warns and logs nothing for a net without gates
        gates = {h: experts for h in heads}
        gate_prefix = str(_get(cb, "prefix", "gates"))
        gate_stages = tuple(str(s) for s in (plain(_get(cb, "stages", ["val", "test"])) or []))
        gate_entropy = bool(_get(cb, "entropy", True))
    return MetricCatalog(
        tasks=tasks,
        objective=objective,
        has_p_true=bool(_get(cfg, "data.pipeline.columns.p_true_prefix")),
        uncertainty=weighting == "uncertainty",
        calibrated=method != "none",
        trained=bool(_get(cfg, "train", True)),
        tested=bool(_get(cfg, "test", True)),
        gates=gates,
        gate_prefix=gate_prefix,
        gate_stages=gate_stages,
        gate_entropy=gate_entropy,
    )
