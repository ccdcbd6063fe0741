"""Calibration figures that :mod:`mtrank.metrics` does not hold.

* :class:`RawScoreMetrics`: ``ece``, ``brier`` and ``logloss`` of the model's *raw* head scores (on the
  downsampled scale, before Eq. 3), logged by the Trainer next to the corrected figures as
  ``"{stage}/{task}/{metric}_raw"``.
* :func:`ece_true` and :func:`mae_true`: calibration against the simulator's true probabilities
  (``p_true_<task>``) instead of the 0/1 labels, for the evaluation report; :class:`TrueCalibration` gives
  both from batches, in constant memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, MeanSquaredError

from mtrank.metrics.binned import StreamingCalibrationError

__all__ = ["RAW_SUFFIX", "RAW_METRIC_NAMES", "RawScoreMetrics", "TrueCalibration", "ece_true", "mae_true"]

RAW_SUFFIX = "_raw"
RAW_METRIC_NAMES = ("ece", "brier", "logloss")
EPS = 1e-7


class RawScoreMetrics(nn.Module):
    """Per task: ece, brier, logloss of one kind of score; keys ``"{stage}/{task}/{metric}{suffix}"``.

    Same definitions as :class:`mtrank.metrics.heads.HeadMetrics` (ECE with ``ece_bins`` uniform bins, L1), so the
    raw and corrected figures compare one to one. ``suffix``: ``_raw`` (raw scores) or ``_corrected`` (after
    Eq. 3, before a post-hoc calibrator). Constant memory (per-bin and running sums).
    """

    def __init__(
        self,
        tasks: Sequence[str],
        stage: str,
        ece_bins: int = 15,
        suffix: str = RAW_SUFFIX,
        sync_on_compute: bool = True,
    ) -> None:
        super().__init__()
        kw = {"sync_on_compute": sync_on_compute}  # False for local figures (a report written by one rank)
        self.tasks = tuple(tasks)
        self.stage = stage
        self.suffix = suffix
        self.heads = nn.ModuleDict(
            {
                t: nn.ModuleDict(
                    {
                        "ece": StreamingCalibrationError(n_bins=ece_bins, **kw),
                        "brier": MeanSquaredError(**kw),
                        "logloss": MeanMetric(**kw),
                    }
                )
                for t in self.tasks
            }
        )

    @torch.no_grad()
    def update(self, probs: Tensor, labels: Tensor) -> None:
        """``probs`` and ``labels``: ``[B, T]`` with columns in ``tasks`` order."""
        if probs.shape != labels.shape or probs.dim() != 2 or probs.shape[1] != len(self.tasks):
            raise ValueError(
                f"probs {tuple(probs.shape)} and labels {tuple(labels.shape)} must be [B, {len(self.tasks)}]"
            )
        if probs.shape[0] == 0:
            return
        probs = probs.detach().float()
        y = labels.detach().float()
        for j, t in enumerate(self.tasks):
            m = self.heads[t]
            p, yj = probs[:, j], y[:, j]
            m["ece"].update(p, (yj > 0.5).long())
            m["brier"].update(p, yj)
            m["logloss"].update(F.binary_cross_entropy(p.clamp(EPS, 1 - EPS), yj, reduction="none"))

    def compute(self) -> dict[str, Tensor]:
        out = {}
        prefix = f"{self.stage}/" if self.stage else ""
        for t in self.tasks:
            for name, metric in self.heads[t].items():
                out[f"{prefix}{t}/{name}{self.suffix}"] = metric.compute().float()
        return out

    def reset(self) -> None:
        for head in self.heads.values():
            for metric in head.values():
                metric.reset()


def _uniform_bins(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index of each score with ``n_bins`` equal bins on [0, 1] (left-closed, as torchmetrics' ECE)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)


class TrueCalibration:
    """``ece_true`` and ``mae_true`` over every row given to :meth:`update`, from running sums (constant memory):
    per bin Σp and Σp_true, and Σ|p − p_true|."""

    def __init__(self, n_bins: int = 15) -> None:
        self.n_bins = int(n_bins)
        self.p_sum = np.zeros(self.n_bins)
        self.q_sum = np.zeros(self.n_bins)
        self.abs_sum = 0.0
        self.rows = 0

    def update(self, p, p_true) -> TrueCalibration:
        p = np.asarray(p, dtype=np.float64).reshape(-1)
        q = np.asarray(p_true, dtype=np.float64).reshape(-1)
        if p.shape != q.shape:
            raise ValueError(f"p {p.shape} and p_true {q.shape} differ in shape")
        b = _uniform_bins(p, self.n_bins)
        self.p_sum += np.bincount(b, weights=p, minlength=self.n_bins)
        self.q_sum += np.bincount(b, weights=q, minlength=self.n_bins)
        self.abs_sum += float(np.abs(p - q).sum())
        self.rows += p.size
        return self

    def ece(self) -> float:
        """Σ_b (n_b / n)·|mean_b p − mean_b p_true| = Σ_b |Σp − Σq| / n."""
        return float(np.abs(self.p_sum - self.q_sum).sum() / self.rows) if self.rows else float("nan")

    def mae(self) -> float:
        """Mean |p − p_true| over rows."""
        return self.abs_sum / self.rows if self.rows else float("nan")


def ece_true(p, p_true, n_bins: int = 15) -> float:
    """Σ_b (n_b / n)·|mean_b p − mean_b p_true| over ``n_bins`` uniform bins of p: ECE against the truth."""
    return TrueCalibration(n_bins).update(p, p_true).ece()


def mae_true(p, p_true) -> float:
    """Mean |p − p_true| over rows."""
    return TrueCalibration(1).update(p, p_true).mae()
