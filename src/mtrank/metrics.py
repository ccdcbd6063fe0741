"""Per-head evaluation metrics built on torchmetrics, in memory that does not grow with the evaluated rows.

:class:`MultiHeadMetrics` holds one :class:`HeadMetrics` per task; all child metrics are registered
modules, so they follow the LightningModule across devices and torchmetrics synchronises their states
across processes when ``compute()`` is called. Inputs are *probabilities* (apply ``sigmoid`` to logits
first), labels are 0/1.

Keys of ``MultiHeadMetrics.compute()``: ``"{stage}/{task}/{metric}"`` for metric in
``auroc, pr_auc, ece, brier, logloss, n_pos`` (+ ``oracle_auroc``, the AUROC of the simulator's true
probability on the same rows, when ``has_p_true``), and ``"{stage}/mean/auroc"``,
``"{stage}/mean/pr_auc"``: the means over heads.

Memory. ``thresholds`` (``model.metrics.thresholds``) chooses how AUROC and PR-AUC are computed:

* an int K (the configs' default, 40 000): binned, in constant memory (:class:`BinnedAUROC`,
  :class:`BinnedAveragePrecision`: per metric the positives and negatives reaching each of the thresholds,
  ``[K + 1, 2]`` counts, 0.6 MB at K = 40 000 (36 508 distinct in float32), twice that with torchmetrics' reset
  copy; the figures are torchmetrics' binned ones, computed by its own functions from the confusion matrix those
  counts give). The thresholds are :func:`binned_thresholds`: K/2 evenly spaced on [0, 1] and K/2 evenly spaced on the logit scale.
  torchmetrics' own ``thresholds=K`` (all on [0, 1]) resolves rare heads badly: on scores with a 0.04% base rate
  its AUROC is 7.6e-5 off at K = 40 000, the mixed grid's 5e-6; the logit half keeps rare heads resolved, the
  linear half the PR-AUC of common heads (decided among the high scores). Measured on the val and test splits of
  1M- and 10M-impression simulated runs (100k and 1M rows): |Δ| ≤ 1e-5 (AUROC) and ≤ 4.1e-5 (PR-AUC, which
  binning lowers slightly) from the exact figures; docs/calibration.md has the table. The update is one
  ``searchsorted`` and two histograms per batch, O(B log K) (torchmetrics' binned update holds a B × K matrix:
  5 GB for 16 384 rows at K = 40 000). A list of thresholds is used as given;
* ``None``: exact, from every prediction kept in memory (12 bytes per row, metric and head: 1M rows × 4 heads ×
  3 rank metrics is ~150 MB, and as much again while computing).

The ECE is exact either way and in constant memory (:class:`StreamingCalibrationError`: per-bin sums, the
same figure as torchmetrics' ``BinaryCalibrationError``, which keeps every prediction).

Degenerate heads: when a head has no positives or no negatives in the evaluated rows, AUROC and
average precision are undefined; they are reported as NaN (not torchmetrics' 0 with a warning) and the
``mean`` keys average over the heads where they are defined (NaN if none is). ``n_pos`` tells how many
positives each head's figures rest on.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, MeanSquaredError, Metric, SumMetric
from torchmetrics.classification import BinaryAUROC, BinaryAveragePrecision
from torchmetrics.functional.classification.auroc import _binary_auroc_compute
from torchmetrics.functional.classification.average_precision import _binary_average_precision_compute
from torchmetrics.functional.classification.calibration_error import _binary_calibration_error_tensor_validation
from torchmetrics.functional.classification.confusion_matrix import _binary_confusion_matrix_format
from torchmetrics.functional.classification.precision_recall_curve import (
    _binary_precision_recall_curve_format,
    _binary_precision_recall_curve_tensor_validation,
)

__all__ = [
    "HeadMetrics",
    "MultiHeadMetrics",
    "compute_head_metrics",
    "HEAD_METRIC_NAMES",
    "binned_confmat",
    "binned_counts",
    "binned_thresholds",
    "BinnedAUROC",
    "BinnedAveragePrecision",
    "StreamingCalibrationError",
]

HEAD_METRIC_NAMES = ("auroc", "pr_auc", "ece", "brier", "logloss", "n_pos")
_RANK_METRICS = ("auroc", "pr_auc", "oracle_auroc")
_EPS = 1e-7


_LOGIT_RANGE = 16.118  # logit(1 - 1e-7)


def binned_thresholds(k: int) -> Tensor:
    """``k`` thresholds for binned AUROC / PR-AUC: ``k // 2`` evenly spaced on [0, 1] and the rest evenly spaced on
    the logit scale over [σ(−16.1), σ(16.1)] = [1e-7, 1 − 1e-7]; sorted, duplicates (in float32) merged."""
    k = int(k)
    if k < 2:
        raise ValueError(f"model.metrics.thresholds = {k}: expected an integer ≥ 2 (or null for exact metrics)")
    linear = torch.linspace(0.0, 1.0, k // 2)
    logit = torch.sigmoid(torch.linspace(-_LOGIT_RANGE, _LOGIT_RANGE, k - k // 2))
    return torch.unique(torch.cat([linear, logit]))


def _thresholds_arg(thresholds):
    """``model.metrics.thresholds`` → torchmetrics' ``thresholds``: None, an int (→ :func:`binned_thresholds`) or
    a list / tensor of thresholds in [0, 1] (sorted here)."""
    if thresholds is None:
        return None
    if isinstance(thresholds, (int, float)) and not isinstance(thresholds, bool) and float(thresholds).is_integer():
        return binned_thresholds(int(thresholds))
    try:
        values = torch.as_tensor(thresholds if isinstance(thresholds, Tensor) else list(thresholds), dtype=torch.float32)
    except (TypeError, ValueError):
        values = None
    if values is None or values.dim() != 1 or values.numel() < 2 or bool(((values < 0) | (values > 1)).any()):
        raise ValueError(f"model.metrics.thresholds = {thresholds!r}: expected null (exact), an integer ≥ 2 or a list "
                         "of at least 2 thresholds in [0, 1]")
    return values.sort().values


def binned_counts(preds: Tensor, target: Tensor, thresholds: Tensor) -> Tensor:
    """``[K + 1, 2]``: row r counts the negatives (column 0) and positives (column 1) whose score reaches exactly r of
    the K ascending ``thresholds`` (``preds >= thresholds[i]`` for i < r). One ``searchsorted`` and two histograms:
    O(B log K) time, O(B + K) memory."""
    k = thresholds.numel()
    reached = torch.searchsorted(thresholds, preds.contiguous(), right=True)
    pos = target == 1
    return torch.stack([torch.bincount(reached[~pos], minlength=k + 1), torch.bincount(reached[pos], minlength=k + 1)], 1)


def confmat_from_counts(counts: Tensor) -> Tensor:
    """:func:`binned_counts` → ``[K, 2, 2]`` counts ``[i, target, preds >= thresholds[i]]``, torchmetrics' binned
    precision-recall state."""
    above = counts.flip(0).cumsum(0).flip(0)[1:]  # [K, 2]: rows reaching threshold i, negatives / positives
    total = counts.sum(0)
    out = torch.empty((counts.shape[0] - 1, 2, 2), dtype=torch.long, device=counts.device)
    out[:, 0, 1], out[:, 1, 1] = above[:, 0], above[:, 1]
    out[:, 0, 0], out[:, 1, 0] = total[0] - above[:, 0], total[1] - above[:, 1]
    return out


def binned_confmat(preds: Tensor, target: Tensor, thresholds: Tensor) -> Tensor:
    """``[K, 2, 2]`` counts ``[i, target, preds >= thresholds[i]]`` (torchmetrics' binned state) in O(B log K)."""
    return confmat_from_counts(binned_counts(preds, target, thresholds))


class _BinnedCurve(Metric):
    """Per threshold, how many positives and negatives reach it (:func:`binned_counts`, summed over updates and
    across processes); the subclass turns the confusion matrix into its figure with torchmetrics' function."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, thresholds, validate_args: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        thresholds = _thresholds_arg(thresholds)
        if thresholds is None:
            raise ValueError("binned metrics need thresholds (model.metrics.thresholds: an integer or a list)")
        self.validate_args = validate_args
        self.register_buffer("thresholds", thresholds, persistent=False)
        self.add_state("counts", default=torch.zeros(thresholds.numel() + 1, 2, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        if self.validate_args:
            _binary_precision_recall_curve_tensor_validation(preds, target, None)
        preds, target, _ = _binary_precision_recall_curve_format(preds, target, None, None)  # flat; logits → σ
        self.counts += binned_counts(preds, target, self.thresholds)

    def compute(self) -> Tensor:
        return self._figure(confmat_from_counts(self.counts), self.thresholds)


class BinnedAUROC(_BinnedCurve):
    """torchmetrics' binned ``BinaryAUROC`` in O(B log K) per update and ``[K + 1, 2]`` counts of state."""

    @staticmethod
    def _figure(confmat: Tensor, thresholds: Tensor) -> Tensor:
        return _binary_auroc_compute(confmat, thresholds)


class BinnedAveragePrecision(_BinnedCurve):
    """torchmetrics' binned ``BinaryAveragePrecision`` in O(B log K) per update and ``[K + 1, 2]`` counts of state."""

    @staticmethod
    def _figure(confmat: Tensor, thresholds: Tensor) -> Tensor:
        return _binary_average_precision_compute(confmat, thresholds)


class StreamingCalibrationError(Metric):
    """The L1 expected calibration error of torchmetrics' ``BinaryCalibrationError(n_bins, norm="l1")``, kept as
    per-bin sums (rows, Σ confidence, Σ label) instead of every prediction: exact, in constant memory.

    Bins as torchmetrics': boundaries ``linspace(0, 1, n_bins + 1)``, bin = ``bucketize(p, right=True) − 1``
    (p = 1 gets a bin of its own); ``ECE = Σ_b |Σ_b y − Σ_b p| / n``. Sums in float64.
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, n_bins: int = 15, validate_args: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        if not isinstance(n_bins, int) or n_bins < 1:
            raise ValueError(f"n_bins must be an integer ≥ 1, got {n_bins!r}")
        self.n_bins = n_bins
        self.validate_args = validate_args
        for name in ("count", "conf_sum", "acc_sum"):
            self.add_state(name, default=torch.zeros(n_bins + 1, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        if self.validate_args:
            _binary_calibration_error_tensor_validation(preds, target, None)
        preds, target = _binary_confusion_matrix_format(preds, target, threshold=0.0, convert_to_labels=False)
        edges = torch.linspace(0, 1, self.n_bins + 1, dtype=preds.dtype, device=preds.device)
        idx = torch.bucketize(preds.contiguous(), edges, right=True) - 1
        self.count += torch.bincount(idx, minlength=self.n_bins + 1).to(self.count.dtype)
        self.conf_sum += torch.bincount(idx, weights=preds.double(), minlength=self.n_bins + 1)
        self.acc_sum += torch.bincount(idx, weights=target.double(), minlength=self.n_bins + 1)

    def compute(self) -> Tensor:
        n = self.count.sum()
        return ((self.acc_sum - self.conf_sum).abs().sum() / n).float() if n > 0 else torch.tensor(0.0)


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
        thresholds = _thresholds_arg(thresholds)

        def auroc(**kw) -> Metric:
            return BinaryAUROC(**kw) if thresholds is None else BinnedAUROC(thresholds, **kw)

        m = nn.ModuleDict(
            {
                "auroc": auroc(**kw),
                "pr_auc": BinaryAveragePrecision(**kw) if thresholds is None else BinnedAveragePrecision(thresholds, **kw),
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
        m["logloss"].update(F.binary_cross_entropy(probs.clamp(_EPS, 1 - _EPS), y, reduction="none"))
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
        self.heads = nn.ModuleDict(
            {
                t: HeadMetrics(has_p_true=has_p_true, thresholds=thresholds, ece_bins=ece_bins,
                               sync_on_compute=sync_on_compute)
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
            out[self._key("mean", name)] = torch.stack(vals).nanmean()
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
        tasks, stage=prefix.rstrip("/"), has_p_true=p_true is not None, thresholds=thresholds, ece_bins=ece_bins,
        sync_on_compute=False,
    ).to(probs.device)
    m.update(probs, labels, p_true)
    return {k: float(v) for k, v in m.compute().items()}
