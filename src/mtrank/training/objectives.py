"""The task objective (config ``loss``): what the model's heads are, how it is trained, how its scores are read.

* :class:`MultiTaskObjective` (``loss.objective: multitask``, Eq. 2): one head per task, the weighted sum of the
  per-task BCEs (``task_weighting``, ``task_weights``, ``uncertainty_variant``, ``pos_weight``); head t scores
  type t; Eq. 3 corrects head t with its own β_t (the effective keep rate of its task).
* :class:`BinaryObjective` (``loss.objective: binary``, Eq. 1): one head, ``engagement``, trained on "any
  engagement" with importance weights (``importance_weights``, ``rule``); its one score stands for every type,
  corrected with the train split's β.

:func:`build_objective` builds the objective named by a ``loss`` config; :func:`objective_class` looks a name up
without building anything (config checks). The objective is an ``nn.Module`` (its task weighting may learn);
:class:`~mtrank.training.module.RankingModule` keeps its tensors under the checkpoint keys of older versions
(``task_weighting.*``, ``pos_weight``, ``importance``), see :func:`checkpoint_keys`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mtrank.calibration.downsampling import per_task_betas, shared_beta
from mtrank.training.config import OBJECTIVES, LossConfig
from mtrank.training.losses import UncertaintyWeighting, bce_per_task, binary_importance_loss, task_weighting_of

__all__ = [
    "OBJECTIVES",
    "BINARY_HEAD",
    "TaskObjective",
    "MultiTaskObjective",
    "BinaryObjective",
    "objective_class",
    "build_objective",
]

BINARY_HEAD = "engagement"


def per_task_tensor(values: Sequence[float] | None) -> Tensor | None:
    """A per-task setting of :class:`~mtrank.training.config.LossConfig` (already in task order) as ``[T]``."""
    return None if values is None else torch.tensor(values)


class TaskObjective(nn.Module):
    """One task objective over the engagement types ``tasks`` (the columns of the labels)."""

    name: ClassVar[str]
    supports_reweight: ClassVar[bool]  # calibration.downsampling=reweight: the loss weights the sampled rows
    heads_text: ClassVar[str]  # what the heads are, for config messages
    bias_hint: ClassVar[str]  # how to give model.net.head_bias_init, for config messages ({key}: the key)

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        self.tasks = [str(t) for t in tasks]

    @classmethod
    def heads_for(cls, tasks: Sequence[str]) -> list[str]:
        """The network's heads for these tasks."""
        raise NotImplementedError

    @property
    def heads(self) -> list[str]:
        return self.heads_for(self.tasks)

    @classmethod
    def train_task_metrics(cls, uncertainty: bool) -> tuple[str, ...]:
        """The ``<metric>`` of the ``train/<task>/<metric>`` figures it logs (``uncertainty``: learned weights)."""
        raise NotImplementedError

    @classmethod
    def task_betas(cls, beta: float, effective_beta: Mapping[str, float], tasks: Sequence[str]) -> dict[str, float]:
        """The keep rate β that Eq. 3 applies to each task's score, from the train split's β and the effective β
        of each task."""
        raise NotImplementedError

    def head_betas(self, betas: Mapping[str, float], beta: float) -> list[float]:
        """β per head, in head order, from the β per task (``betas``) and the train split's β."""
        raise NotImplementedError

    def per_type(self, head_scores: Tensor) -> Tensor:
        """Scores per head ``[B, n_heads]`` → scores per engagement type ``[B, T]``."""
        raise NotImplementedError

    def loss(self, logits: Tensor, labels: Tensor, row_weights: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The training loss and, where there is one, the per-task mean BCE ``[T]``."""
        raise NotImplementedError

    def train_figures(self, per_task: Tensor | None) -> dict[str, Tensor]:
        """``<task>/<metric>`` → value: the per-task figures of a training step (:meth:`train_task_metrics`)."""
        return {}


class MultiTaskObjective(TaskObjective):
    """Eq. 2: one head per task, ``task_weighting`` of the per-task mean BCEs."""

    name = "multitask"
    supports_reweight = True
    heads_text = "the heads are the tasks of tasks.names"
    bias_hint = "with a single task give the number itself, e.g. {key}=-2.74"

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__(cfg.tasks)
        self.task_weighting = task_weighting_of(cfg)
        self.register_buffer("pos_weight", per_task_tensor(cfg.per_task("pos_weight", 1.0)))

    @classmethod
    def heads_for(cls, tasks: Sequence[str]) -> list[str]:
        return [str(t) for t in tasks]

    @classmethod
    def train_task_metrics(cls, uncertainty: bool) -> tuple[str, ...]:
        return ("loss",) + (("task_weight",) if uncertainty else ())

    @classmethod
    def task_betas(cls, beta: float, effective_beta: Mapping[str, float], tasks: Sequence[str]) -> dict[str, float]:
        return per_task_betas(beta, effective_beta, tasks)

    def head_betas(self, betas: Mapping[str, float], beta: float) -> list[float]:
        return [float(betas[t]) for t in self.tasks]

    def per_type(self, head_scores: Tensor) -> Tensor:
        return head_scores

    def loss(self, logits: Tensor, labels: Tensor, row_weights: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``row_weights`` [B]: a weighted mean over rows instead of the plain mean."""
        bce = bce_per_task(logits, labels, self.pos_weight)
        if row_weights is None:
            per_task = bce.mean(dim=0)
        else:
            w = row_weights.to(bce.dtype).reshape(-1, 1)
            per_task = (bce * w).sum(dim=0) / w.sum().clamp_min(1e-12)
        return self.task_weighting(per_task), per_task

    def train_figures(self, per_task: Tensor | None) -> dict[str, Tensor]:
        if per_task is None:
            return {}
        learned = isinstance(self.task_weighting, UncertaintyWeighting)
        w = self.task_weighting.weights()
        out: dict[str, Tensor] = {}
        for i, t in enumerate(self.tasks):
            out[f"{t}/loss"] = per_task[i]
            if learned:
                out[f"{t}/task_weight"] = w[i]
        return out


class BinaryObjective(TaskObjective):
    """Eq. 1: one head (``engagement``), importance-weighted BCE of "any engagement"."""

    name = "binary"
    supports_reweight = False
    heads_text = f"loss.objective = binary has the one head '{BINARY_HEAD}'"
    bias_hint = "give one number, e.g. {key}=-3.0"

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__(cfg.tasks)
        self.register_buffer("importance", per_task_tensor(cfg.per_task("importance_weights", None)))
        self.rule = cfg.rule

    @classmethod
    def heads_for(cls, tasks: Sequence[str]) -> list[str]:
        return [BINARY_HEAD]

    @classmethod
    def train_task_metrics(cls, uncertainty: bool) -> tuple[str, ...]:
        return ()

    @classmethod
    def task_betas(cls, beta: float, effective_beta: Mapping[str, float], tasks: Sequence[str]) -> dict[str, float]:
        return shared_beta(beta, effective_beta, tasks)

    def head_betas(self, betas: Mapping[str, float], beta: float) -> list[float]:
        return [float(beta)]

    def per_type(self, head_scores: Tensor) -> Tensor:
        return head_scores.expand(-1, len(self.tasks))

    def loss(self, logits: Tensor, labels: Tensor, row_weights: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if row_weights is not None:
            raise ValueError("row_weights need loss.objective=multitask")
        return binary_importance_loss(logits[:, 0], labels, self.importance, self.rule), None


_CLASSES: dict[str, type[TaskObjective]] = {c.name: c for c in (MultiTaskObjective, BinaryObjective)}
assert tuple(_CLASSES) == OBJECTIVES, "a class for each loss.objective of mtrank.training.config"


def objective_class(name: str, default: type[TaskObjective] | None = None) -> type[TaskObjective]:
    """The class of ``loss.objective = name`` (one of :data:`~mtrank.training.config.OBJECTIVES`, which
    :class:`~mtrank.training.config.LossConfig` checks); ``default`` for any other name."""
    return _CLASSES[str(name)] if default is None else _CLASSES.get(str(name), default)


def build_objective(loss: Mapping[str, Any] | LossConfig, tasks: Sequence[str]) -> TaskObjective:
    """The objective of a ``loss`` config (``objective`` defaults to multitask) over ``tasks``; a mapping is read
    (and checked) as a :class:`~mtrank.training.config.LossConfig`."""
    cfg = loss if isinstance(loss, LossConfig) else LossConfig.from_mapping(loss, tasks)
    return _CLASSES[cfg.objective](cfg)


def checkpoint_keys(objective: TaskObjective) -> list[str]:
    """The objective's state-dict keys, relative to the objective (``task_weighting.log_var``, ``pos_weight``,
    ``importance``…): checkpoints keep them at the top of the model's state dict, where they were before the
    objective became a module of its own."""
    return list(objective.state_dict().keys())
