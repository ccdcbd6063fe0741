"""Per-head metric collections (AUROC, PR-AUC, calibration, Brier, log-loss, positives) and their means."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, MeanSquaredError, Metric, SumMetric
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision

from mtrank.metrics.binned import (
    EPS,
    BinnedAUROC,
    BinnedAveragePrecision,
    StreamingCalibrationError,
    thresholds_arg,
)

log = logging.getLogger(__name__)

HEAD_METRIC_NAMES = ("auroc", "pr_auc", "ece", "brier", "logloss", "n_pos")


_RANK_METRICS = ("auroc", "pr_auc", "oracle_auroc")


class HeadMetrics(nn.Module):
    """The metrics of one binary head: auroc, pr_auc, ece, brier, logloss, n_pos (+ oracle_auroc).

    ``thresholds``: None (exact AUROC / PR-AUC, memory grows with the rows), an int K (binned at
    :func:`binned_thresholds`, constant memory) or a list of thresholds; see the module docstring.
    """

    def __init__(
        self, has_p_true: bool = False, thresholds: int | None = None, ece_bins: int = 15, sync_on_compute: bool = True
    ) -> None:
        super().__init__()
        self.has_p_true = bool(has_p_true)
        kw = {"sync_on_compute": sync_on_compute}  # False: local figures, no collective even under DDP
        thresholds = thresholds_arg(thresholds)

        def auroc(**kw) -> Metric:
            return BinaryAUROC(**kw) if thresholds is None else BinnedAUROC(thresholds, **kw)

        m = nn.ModuleDict(
            {
                "auroc": auroc(**kw),
                "pr_auc": BinaryAveragePrecision(**kw)
                if thresholds is None
                else BinnedAveragePrecision(thresholds, **kw),
                "ece": StreamingCalibrationError(n_bins=ece_bins, **kw),
                "brier": MeanSquaredError(**kw),
                "logloss": MeanMetric(**kw),
                "n_pos": SumMetric(**kw),
                "n_rows": SumMetric(**kw),  # internal: to detect an empty or single-class head
            }
        )
        if self.has_p_true:
            m["oracle_auroc"] = auroc(**kw)
        self.metrics = m

    @property
    def names(self) -> tuple[str, ...]:
        return HEAD_METRIC_NAMES + (("oracle_auroc",) if self.has_p_true else ())

    @torch.no_grad()
    def update(self, probs: Tensor, labels: Tensor, p_true: Tensor | None = None) -> None:
        """``probs``, ``labels`` (and ``p_true``): 1-D tensors of one head over the same rows."""
        probs = probs.detach().float().reshape(-1)
        y = labels.detach().float().reshape(-1)
        if probs.shape != y.shape:
            raise ValueError(f"probs {tuple(probs.shape)} and labels {tuple(y.shape)} differ in shape")
        if probs.numel() == 0:
            return
        y_int = (y > 0.5).long()
        m = self.metrics
        m["auroc"].update(probs, y_int)
        m["pr_auc"].update(probs, y_int)
        m["ece"].update(probs, y_int)
        m["brier"].update(probs, y)
        m["logloss"].update(F.binary_cross_entropy(probs.clamp(EPS, 1 - EPS), y, reduction="none"))
        m["n_pos"].update(y_int.sum().float())
        m["n_rows"].update(torch.tensor(float(y.numel()), device=y.device))
        if self.has_p_true:
            if p_true is None:
                raise ValueError("this HeadMetrics was built with has_p_true=True but update got no p_true")
            pt = p_true.detach().float().reshape(-1)
            if pt.shape != y.shape:
                raise ValueError(f"p_true {tuple(pt.shape)} and labels {tuple(y.shape)} differ in shape")
            m["oracle_auroc"].update(pt, y_int)

    def compute(self) -> dict[str, Tensor]:
        m = self.metrics
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
            n_pos = m["n_pos"].compute().float()
            n_rows = m["n_rows"].compute().float()
        nan = torch.tensor(float("nan"), device=n_pos.device)
        out: dict[str, Tensor] = {}
        if n_rows.item() == 0:
            for name in self.names:
                out[name] = nan.clone()
            out["n_pos"] = n_pos
            return out
        degenerate = n_pos.item() == 0 or n_pos.item() == n_rows.item()
        for name in self.names:
            if name == "n_pos":
                out[name] = n_pos
                continue
            if name in _RANK_METRICS and degenerate:
                with warnings.catch_warnings():  # still compute: keeps the DDP collectives in step
                    warnings.simplefilter("ignore")
                    m[name].compute()
                out[name] = nan.clone()
                continue
            out[name] = m[name].compute().float()
        return out

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()


class MultiHeadMetrics(nn.Module):
    """One :class:`HeadMetrics` per task; keys ``"{stage}/{task}/{metric}"`` and ``"{stage}/mean/..."``.

    An empty ``stage`` gives keys without the stage prefix (``"{task}/{metric}"``).
    """

    def __init__(
        self,
        tasks: Sequence[str],
        stage: str,
        has_p_true: bool,
        thresholds: int | None = None,
        ece_bins: int = 15,
        sync_on_compute: bool = True,
    ) -> None:
        super().__init__()
        self.tasks = tuple(str(t) for t in tasks)
        if not self.tasks:
            raise ValueError("MultiHeadMetrics needs at least one task")
        if "mean" in self.tasks:
            raise ValueError("'mean' is reserved for the averages over heads and cannot be a task name")
        self.stage = str(stage)
        self.has_p_true = bool(has_p_true)
        self._warned: set[tuple[str, tuple[str, ...]]] = set()  # (metric, undefined heads) already warned about
        self.heads = nn.ModuleDict(
            {
                t: HeadMetrics(
                    has_p_true=has_p_true, thresholds=thresholds, ece_bins=ece_bins, sync_on_compute=sync_on_compute
                )
                for t in self.tasks
            }
        )

    def _key(self, *parts: str) -> str:
        return "/".join(([self.stage] if self.stage else []) + list(parts))

    @torch.no_grad()
    def update(self, probs: Tensor, labels: Tensor, p_true: Tensor | None = None) -> None:
        """``probs``, ``labels`` (and ``p_true``): ``[B, T]`` with columns in ``tasks`` order."""
        T = len(self.tasks)
        for name, x in (("probs", probs), ("labels", labels)):
            if x.dim() != 2 or x.shape[1] != T:
                raise ValueError(f"{name} must be [B, {T}] (tasks {list(self.tasks)}), got {tuple(x.shape)}")
        if probs.shape != labels.shape:
            raise ValueError(f"probs {tuple(probs.shape)} and labels {tuple(labels.shape)} differ in shape")
        if self.has_p_true:
            if p_true is None:
                raise ValueError("MultiHeadMetrics was built with has_p_true=True but update got no p_true")
            if p_true.shape != labels.shape:
                raise ValueError(f"p_true {tuple(p_true.shape)} and labels {tuple(labels.shape)} differ in shape")
        for j, t in enumerate(self.tasks):
            self.heads[t].update(probs[:, j], labels[:, j], p_true[:, j] if self.has_p_true else None)

    def compute(self) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        per_metric: dict[str, list[Tensor]] = {"auroc": [], "pr_auc": []}
        for t in self.tasks:
            res = self.heads[t].compute()
            for name, v in res.items():
                out[self._key(t, name)] = v
            for name in per_metric:
                per_metric[name].append(res[name])
        for name, vals in per_metric.items():
            stacked = torch.stack(vals)
            out[self._key("mean", name)] = stacked.nanmean()
            undefined = tuple(t for t, v in zip(self.tasks, stacked.tolist()) if v != v)
            if undefined and (name, undefined) not in self._warned:
                self._warned.add((name, undefined))
                defined = [t for t in self.tasks if t not in undefined]
                log.warning(
                    "%s averages %d of %d heads: %s is undefined (NaN) for %s (no positive or no negative label, or "
                    "no row), so the mean is over %s only%s",
                    self._key("mean", name),
                    len(defined),
                    len(self.tasks),
                    name,
                    list(undefined),
                    defined or "no head",
                    " and is NaN" if not defined else "",
                )
        return out

    def reset(self) -> None:
        for head in self.heads.values():
            head.reset()


def compute_head_metrics(
    probs: Tensor,
    labels: Tensor,
    tasks: Sequence[str],
    p_true: Tensor | None = None,
    prefix: str = "",
    thresholds: int | None = None,
    ece_bins: int = 15,
) -> dict[str, float]:
    """Functional twin of :class:`MultiHeadMetrics` for arrays outside a Trainer.

    Keys are ``"{prefix}/{task}/{metric}"`` (``"{task}/{metric}"`` when ``prefix`` is empty), values
    Python floats; ``oracle_auroc`` is included when ``p_true`` is given. The figures are of the arrays
    given: nothing is synchronised across DDP ranks, so it is safe to call on one rank.
    """
    probs = torch.as_tensor(probs)
    labels = torch.as_tensor(labels)
    if p_true is not None:
        p_true = torch.as_tensor(p_true)
    m = MultiHeadMetrics(
        tasks,
        stage=prefix.rstrip("/"),
        has_p_true=p_true is not None,
        thresholds=thresholds,
        ece_bins=ece_bins,
        sync_on_compute=False,
    ).to(probs.device)
    m.update(probs, labels, p_true)
    return {k: float(v) for k, v in m.compute().items()}
