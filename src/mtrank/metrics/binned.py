"""Constant-memory classification metrics: AUROC and PR-AUC on a fixed threshold grid, streaming ECE.

The figures are torchmetrics' (binned ``BinaryAUROC`` / ``BinaryAveragePrecision``, ``BinaryCalibrationError``)
computed from smaller states. torchmetrics has no public function from a binned confusion matrix to its figure,
so :func:`auroc_from_confmat` and :func:`average_precision_from_confmat` restate its formulas (the same tensor
operations, so the same numbers), and :func:`check_binary_inputs` / :func:`as_probabilities` its input checks and
logit handling; ``tests/test_metrics.py`` holds them to torchmetrics' public functions.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

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
        values = torch.as_tensor(
            thresholds if isinstance(thresholds, Tensor) else list(thresholds), dtype=torch.float32
        )
    except (TypeError, ValueError):
        values = None
    if values is None or values.dim() != 1 or values.numel() < 2 or bool(((values < 0) | (values > 1)).any()):
        raise ValueError(
            f"model.metrics.thresholds = {thresholds!r}: expected null (exact), an integer ≥ 2 or a list "
            "of at least 2 thresholds in [0, 1]"
        )
    return values.sort().values


def binned_counts(preds: Tensor, target: Tensor, thresholds: Tensor) -> Tensor:
    """``[K + 1, 2]``: row r counts the negatives (column 0) and positives (column 1) whose score reaches exactly r of
    the K ascending ``thresholds`` (``preds >= thresholds[i]`` for i < r). One ``searchsorted`` and two histograms:
    O(B log K) time, O(B + K) memory."""
    k = thresholds.numel()
    reached = torch.searchsorted(thresholds, preds.contiguous(), right=True)
    pos = target == 1
    return torch.stack(
        [torch.bincount(reached[~pos], minlength=k + 1), torch.bincount(reached[pos], minlength=k + 1)], 1
    )


def confmat_from_counts(counts: Tensor) -> Tensor:
    """:func:`binned_counts` → ``[K, 2, 2]`` counts ``[i, target, preds >= thresholds[i]]``, torchmetrics' binned
    precision-recall state."""
    above = counts.flip(0).cumsum(0).flip(0)[1:]  # [K, 2]: rows reaching threshold i, negatives / positives
    total = counts.sum(0)
    out = torch.empty((counts.shape[0] - 1, 2, 2), dtype=torch.long, device=counts.device)
    out[:, 0, 1], out[:, 1, 1] = above[:, 0], above[:, 1]
    out[:, 0, 0], out[:, 1, 0] = total[0] - above[:, 0], total[1] - above[:, 1]
    return out


def check_binary_inputs(preds: Tensor, target: Tensor, float_target: bool = False) -> None:
    """torchmetrics' checks of binary inputs: the same shape, floating-point scores, labels in {0, 1} (and, unless
    ``float_target``, an integer label tensor)."""
    if preds.shape != target.shape:
        raise RuntimeError(
            f"Predictions and targets are expected to have the same shape, but got {preds.shape} and {target.shape}."
        )
    if not float_target and target.is_floating_point():
        raise ValueError(
            "Expected argument `target` to be an int or long tensor with ground truth labels but got "
            f"tensor with dtype {target.dtype}"
        )
    if not preds.is_floating_point():
        raise ValueError(
            "Expected argument `preds` to be an floating tensor with probability/logit scores, but got "
            f"tensor with dtype {preds.dtype}"
        )
    values = torch.unique(target)
    if torch.any((values != 0) & (values != 1)):
        raise RuntimeError(
            f"Detected the following values in `target`: {values} but expected only the following values [0, 1]."
        )


def as_probabilities(preds: Tensor) -> Tensor:
    """Flat scores; torchmetrics' rule for logits: scores outside [0, 1] are all passed through the sigmoid."""
    preds = preds.flatten()
    return torch.where(((preds < 0) | (preds > 1)).any(), preds.sigmoid(), preds)


def _rate(num: Tensor, denom: Tensor, zero: float) -> Tensor:
    """``num / denom`` in floating point, ``zero`` where ``denom`` is 0."""
    num, denom = num.float(), denom.float()
    return torch.where(denom != 0, num / denom, torch.full((), zero, dtype=num.dtype, device=num.device))


@torch.no_grad()
def auroc_from_confmat(confmat: Tensor) -> Tensor:
    """AUROC of a binned confusion matrix ``[K, 2, 2]`` (:func:`confmat_from_counts`, thresholds ascending): the
    trapezoidal area under the ROC points (FPR, TPR) of the K thresholds, a rate with an empty denominator being 0
    (torchmetrics' binned ``binary_auroc``)."""
    tps, fps, fns, tns = confmat[:, 1, 1], confmat[:, 0, 1], confmat[:, 1, 0], confmat[:, 0, 0]
    tpr = _rate(tps, tps + fns, 0.0).flip(0)
    fpr = _rate(fps, fps + tns, 0.0).flip(0)
    return torch.trapz(tpr, fpr)


@torch.no_grad()
def average_precision_from_confmat(confmat: Tensor) -> Tensor:
    """Average precision of a binned confusion matrix ``[K, 2, 2]``: ``−Σ_i (R_{i+1} − R_i) · P_i`` over the K
    thresholds (ascending) and a final point (P = 1, R = 0), an undefined precision or recall counting 0
    (torchmetrics' binned ``binary_average_precision``)."""
    tps, fps, fns = confmat[:, 1, 1], confmat[:, 0, 1], confmat[:, 1, 0]
    one = torch.ones(1, device=confmat.device)
    precision = torch.cat([_rate(tps, tps + fps, float("nan")), one])
    recall = torch.cat([_rate(tps, tps + fns, float("nan")), one - 1])
    precision = torch.where(torch.isnan(precision), torch.zeros_like(precision), precision)
    recall = torch.where(torch.isnan(recall), torch.zeros_like(recall), recall)
    return -torch.sum((recall[1:] - recall[:-1]) * precision[:-1])


def binned_confmat(preds: Tensor, target: Tensor, thresholds: Tensor) -> Tensor:
    """``[K, 2, 2]`` counts ``[i, target, preds >= thresholds[i]]`` (torchmetrics' binned state) in O(B log K)."""
    return confmat_from_counts(binned_counts(preds, target, thresholds))


class _BinnedCurve(Metric):
    """Per threshold, how many positives and negatives reach it (:func:`binned_counts`, summed over updates and
    across processes); the subclass turns the confusion matrix into its figure."""

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
            check_binary_inputs(preds, target)
        preds, target = as_probabilities(preds), target.flatten()  # flat; logits → σ
        self.counts += binned_counts(preds, target, self.thresholds)

    def compute(self) -> Tensor:
        return self._figure(confmat_from_counts(self.counts))


class BinnedAUROC(_BinnedCurve):
    """torchmetrics' binned ``BinaryAUROC`` in O(B log K) per update and ``[K + 1, 2]`` counts of state."""

    _figure = staticmethod(auroc_from_confmat)


class BinnedAveragePrecision(_BinnedCurve):
    """torchmetrics' binned ``BinaryAveragePrecision`` in O(B log K) per update and ``[K + 1, 2]`` counts of state."""

    _figure = staticmethod(average_precision_from_confmat)


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
            check_binary_inputs(preds, target, float_target=True)
        preds, target = as_probabilities(preds), target.flatten()
        edges = torch.linspace(0, 1, self.n_bins + 1, dtype=preds.dtype, device=preds.device)
        idx = torch.bucketize(preds.contiguous(), edges, right=True) - 1
        self.count += torch.bincount(idx, minlength=self.n_bins + 1).to(self.count.dtype)
        self.conf_sum += torch.bincount(idx, weights=preds.double(), minlength=self.n_bins + 1)
        self.acc_sum += torch.bincount(idx, weights=target.double(), minlength=self.n_bins + 1)

    def compute(self) -> Tensor:
        n = self.count.sum()
        return ((self.acc_sum - self.conf_sum).abs().sum() / n).float() if n > 0 else torch.tensor(0.0)
