"""Constant-memory classification metrics: AUROC and PR-AUC on a fixed threshold grid, streaming ECE."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification.auroc import _binary_auroc_compute
from torchmetrics.functional.classification.average_precision import (
    _binary_average_precision_compute,
)
from torchmetrics.functional.classification.calibration_error import (
    _binary_calibration_error_tensor_validation,
)
from torchmetrics.functional.classification.confusion_matrix import (
    _binary_confusion_matrix_format,
)
from torchmetrics.functional.classification.precision_recall_curve import (
    _binary_precision_recall_curve_format,
    _binary_precision_recall_curve_tensor_validation,
)

EPS = 1e-7


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


def thresholds_arg(thresholds):
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
        thresholds = thresholds_arg(thresholds)
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
