"""Losses of the reference post (see ``reference/equations.md``) and task-weighting strategies.

Pure functions and small ``nn.Module`` s; nothing here depends on Lightning.

* Eq. 2 (multi-task): :func:`multitask_loss` = (1/n) Σ_i Σ_t TaskWeight(t) · BCE(y_t(i), ŷ_t(i)).
  Equivalently Σ_t TaskWeight(t) · mean_i BCE_it, which is what :class:`FixedWeighting` computes from
  the per-task mean losses ``bce_per_task(...).mean(0)``.
* Eq. 1 (binary baseline): :func:`binary_importance_loss` = (1/n) Σ_i ImportanceWeight(i) · BCE(y_binary(i),
  ŷ(i)), with the rule that sets the weight of an impression with several engagement types given by
  ``rule`` ("max": the highest weight among its types; "sum": duplicate the row once per type).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mtrank.training.config import IMPORTANCE_RULES, TASK_WEIGHTING_KINDS, LossConfig

__all__ = [
    "bce_per_task",
    "multitask_loss",
    "binary_target",
    "importance_weights",
    "binary_importance_loss",
    "EqualWeighting",
    "FixedWeighting",
    "UncertaintyWeighting",
    "build_task_weighting",
    "task_weighting_of",
    "IMPORTANCE_RULES",
    "TASK_WEIGHTING_KINDS",
]


def _check_2d(name: str, x: Tensor) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} must be [B, T], got shape {tuple(x.shape)}")


def bce_per_task(logits: Tensor, labels: Tensor, pos_weight: Tensor | None = None) -> Tensor:
    """Element-wise BCE-with-logits ``[B, T]`` (no reduction). ``pos_weight`` is ``[T]`` or None."""
    _check_2d("logits", logits)
    if labels.shape != logits.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and logits {tuple(logits.shape)} differ in shape")
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), pos_weight=pos_weight, reduction="none")


def multitask_loss(logits: Tensor, labels: Tensor, task_weights: Tensor, pos_weight: Tensor | None = None) -> Tensor:
    """Eq. 2: ``(1/n) Σ_i Σ_t task_weights[t] · BCE(labels[i,t], sigmoid(logits[i,t]))`` (a scalar)."""
    bce = bce_per_task(logits, labels, pos_weight)
    w = torch.as_tensor(task_weights, dtype=bce.dtype, device=bce.device)
    if w.shape != (bce.shape[1],):
        raise ValueError(f"task_weights must be [{bce.shape[1]}], got {tuple(w.shape)}")
    return (bce * w).sum(dim=1).mean()


def binary_target(labels: Tensor) -> Tensor:
    """``y_binary[i] = 1`` if impression i had any engagement type (``labels[i, t] > 0.5`` for some t).

    The caller passes only the *positive* engagement types' columns: a negative type such as ``hide``
    must not make an impression a positive of the binary baseline, so drop its column first.
    """
    _check_2d("labels", labels)
    dtype = labels.dtype if labels.is_floating_point() else torch.get_default_dtype()
    return (labels > 0.5).any(dim=1).to(dtype)


def importance_weights(labels: Tensor, weights: Tensor, rule: str = "max") -> Tensor:
    """Eq. 1's ImportanceWeight(i), ``[B]``.

    1 for impressions with no engagement; otherwise, over the types t the impression had,
    ``rule="max"``: max_t weights[t]; ``rule="sum"``: Σ_t weights[t] (the total weight the impression
    gets when its row is duplicated once per engagement type, see :func:`binary_importance_loss`).
    Pass only the positive engagement types' columns (see :func:`binary_target`).
    """
    _check_2d("labels", labels)
    rule = str(rule).lower()
    if rule not in IMPORTANCE_RULES:
        raise ValueError(f"unknown importance-weight rule '{rule}'; allowed: {list(IMPORTANCE_RULES)}")
    dtype = labels.dtype if labels.is_floating_point() else torch.get_default_dtype()
    w = torch.as_tensor(weights, dtype=dtype, device=labels.device)
    if w.shape != (labels.shape[1],):
        raise ValueError(f"weights must be [{labels.shape[1]}], got {tuple(w.shape)}")
    pos = labels > 0.5
    any_pos = pos.any(dim=1)
    if rule == "max":
        per = torch.where(pos, w.expand_as(pos), torch.full_like(w, float("-inf")).expand_as(pos)).amax(dim=1)
    else:
        per = (pos.to(dtype) * w).sum(dim=1)
    return torch.where(any_pos, per, torch.ones_like(per))


def binary_importance_loss(logit: Tensor, labels: Tensor, weights: Tensor, rule: str = "max") -> Tensor:
    """Eq. 1: ``(1/n) Σ_i ImportanceWeight(i) · BCE(y_binary(i), sigmoid(logit[i]))``.

    ``logit`` is ``[B]`` or ``[B, 1]``; ``labels`` ``[B, T]`` holds the positive engagement types only
    (see :func:`binary_target`); ``weights`` ``[T]`` the importance weight of each type.

    * ``rule="max"``: n = B and the weight of a multi-engagement impression is its highest type weight.
    * ``rule="sum"``: the post's alternative, duplicating the row once per engagement type (each copy a
      positive weighted by its own type). The loss is computed without materialising the copies, so
      n counts the duplicated rows: ``n = Σ_i max(1, #types of i)``, and the numerator is
      ``Σ_i (Σ_{t∈types(i)} w_t) · BCE_i``. This equals, exactly, the "max"-rule (or any rule) loss on the
      explicitly duplicated batch.
    """
    _check_2d("labels", labels)
    if logit.dim() == 2:
        if logit.shape[1] != 1:
            raise ValueError(f"binary logit must be [B] or [B, 1], got {tuple(logit.shape)}")
        logit = logit[:, 0]
    if logit.dim() != 1 or logit.shape[0] != labels.shape[0]:
        raise ValueError(f"binary logit {tuple(logit.shape)} does not match labels {tuple(labels.shape)}")
    rule = str(rule).lower()
    y = binary_target(labels).to(logit.dtype)
    iw = importance_weights(labels, weights, rule).to(logit.dtype)
    bce = F.binary_cross_entropy_with_logits(logit, y, reduction="none")
    if rule == "max":
        return (iw * bce).mean()
    n_rows = (labels > 0.5).sum(dim=1).clamp(min=1).sum().to(logit.dtype)
    return (iw * bce).sum() / n_rows


# ------------------------------------------------------------------------------------------------
# Task weighting: modules mapping the per-task mean losses [T] to the total loss.
# With fixed weights, Σ_t w_t · mean_i(BCE_it) is exactly Eq. 2.
# ------------------------------------------------------------------------------------------------


def _check_per_task(per_task_loss: Tensor, n_tasks: int) -> None:
    if per_task_loss.shape != (n_tasks,):
        raise ValueError(f"per_task_loss must be [{n_tasks}], got {tuple(per_task_loss.shape)}")


class EqualWeighting(nn.Module):
    """TaskWeight(t) = 1 for every task (the post's choice): total = Σ_t L_t."""

    def __init__(self, n_tasks: int) -> None:
        super().__init__()
        self.n_tasks = int(n_tasks)

    def weights(self) -> Tensor:
        return torch.ones(self.n_tasks)

    def forward(self, per_task_loss: Tensor) -> Tensor:
        _check_per_task(per_task_loss, self.n_tasks)
        return per_task_loss.sum()


class FixedWeighting(nn.Module):
    """Fixed TaskWeight(t): total = Σ_t w_t · L_t."""

    def __init__(self, weights: Sequence[float]) -> None:
        super().__init__()
        w = torch.as_tensor([float(x) for x in weights], dtype=torch.float32)
        if w.dim() != 1 or w.numel() == 0:
            raise ValueError("FixedWeighting needs a non-empty sequence of weights")
        self.register_buffer("task_weights", w)
        self.n_tasks = int(w.numel())

    def weights(self) -> Tensor:
        return self.task_weights.detach().clone()

    def forward(self, per_task_loss: Tensor) -> Tensor:
        _check_per_task(per_task_loss, self.n_tasks)
        return (self.task_weights.to(per_task_loss.dtype) * per_task_loss).sum()


class UncertaintyWeighting(nn.Module):
    """Learned weights from homoscedastic uncertainty.

    The learned parameter is ``log_var[t] = s_t = log σ_t²`` (initialised to ``init``), which keeps σ_t
    positive for both variants:

    * ``"kendall"`` (Kendall et al. 2018, the post's form): ``Σ_t exp(−s_t)·L_t + s_t``;
      optimum σ_t² = L_t. ``weights() = exp(−s_t)``.
    * ``"liebel"`` (Liebel & Körner 2018): ``Σ_t L_t / (2σ_t²) + log(1 + σ_t²)``; the regulariser stays
      positive. ``weights() = 1 / (2σ_t²)``.

    In both, a task with a larger (noisier) loss learns a larger σ_t, i.e. a smaller weight.
    Remember to give these parameters to the optimiser (they are ordinary module parameters).
    """

    def __init__(self, n_tasks: int, variant: str = "kendall", init: float = 0.0) -> None:
        super().__init__()
        self.variant = str(variant).lower()  # one of UNCERTAINTY_VARIANTS (checked by LossConfig)
        self.n_tasks = int(n_tasks)
        self.log_var = nn.Parameter(torch.full((self.n_tasks,), float(init)))

    def sigma(self) -> Tensor:
        return torch.exp(0.5 * self.log_var).detach()

    def weights(self) -> Tensor:
        s = self.log_var.detach()
        if self.variant == "kendall":
            return torch.exp(-s)
        return 0.5 * torch.exp(-s)

    def forward(self, per_task_loss: Tensor) -> Tensor:
        _check_per_task(per_task_loss, self.n_tasks)
        s = self.log_var.to(per_task_loss.dtype)
        if self.variant == "kendall":
            return (torch.exp(-s) * per_task_loss + s).sum()
        var = torch.exp(s)
        return (per_task_loss / (2.0 * var) + torch.log1p(var)).sum()


def build_task_weighting(
    kind: str,
    tasks: Sequence[str],
    weights: Mapping[str, float] | None = None,
    variant: str = "kendall",
    init: float = 0.0,
) -> nn.Module:
    """Build the task-weighting module named by config ``loss.task_weighting``.

    ``kind``: ``equal`` | ``fixed`` | ``uncertainty``. For ``fixed``, ``weights`` (config
    ``loss.task_weights``) must name exactly the tasks; the module's weights follow ``tasks`` order. The settings
    are checked by :class:`~mtrank.training.config.LossConfig`.
    """
    cfg = LossConfig(tuple(tasks), task_weighting=kind, task_weights=weights, uncertainty_variant=variant)
    return task_weighting_of(cfg, init)


def task_weighting_of(cfg: LossConfig, init: float = 0.0) -> nn.Module:
    """The task-weighting module of a multi-task :class:`~mtrank.training.config.LossConfig`."""
    if cfg.task_weighting == "equal":
        return EqualWeighting(len(cfg.tasks))
    if cfg.task_weighting == "uncertainty":
        return UncertaintyWeighting(len(cfg.tasks), variant=cfg.uncertainty_variant, init=init)
    return FixedWeighting(cfg.per_task("task_weights", None))
