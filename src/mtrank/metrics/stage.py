"""Everything one evaluation stage (``val`` or ``test``) of the Trainer accumulates, as one module.

* ``calibrated``: :class:`~mtrank.metrics.heads.MultiHeadMetrics` of the calibrated probabilities (the plain
  names: ``<stage>/<task>/auroc``, ``ece``…, ``<stage>/mean/…``);
* ``raw``: :class:`~mtrank.metrics.calibration.RawScoreMetrics` of the raw head scores (``…/ece_raw``…);
* ``corrected``: the same after Eq. 3 alone (``…/ece_corrected``…), fed and logged only while post-hoc
  calibrators are attached;
* ``loss``: the mean loss over rows (``<stage>/loss``).

The metric states are not persistent: these modules add nothing to a checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchmetrics import MeanMetric

from mtrank.metrics.calibration import RawScoreMetrics
from mtrank.metrics.heads import MultiHeadMetrics

__all__ = ["StageMetrics", "stage_metrics"]


class StageMetrics(nn.Module):
    """The metrics of one stage; keys ``"{stage}/…"``."""

    def __init__(self, tasks: Sequence[str], stage: str, has_p_true: bool, thresholds=None, ece_bins: int = 15) -> None:
        super().__init__()
        self.stage = str(stage)
        self.calibrated = MultiHeadMetrics(
            tasks, stage, has_p_true=has_p_true, thresholds=thresholds, ece_bins=ece_bins
        )
        self.raw = RawScoreMetrics(tasks, stage, ece_bins=ece_bins)
        # after Eq. 3 but before the post-hoc calibrators: logged only while calibrators are attached
        self.corrected = RawScoreMetrics(tasks, stage, ece_bins=ece_bins, suffix="_corrected")
        self.loss = MeanMetric()

    def update(
        self,
        loss: Tensor,
        labels: Tensor,
        calibrated: Tensor,
        raw: Tensor,
        corrected: Tensor | None,
        p_true: Tensor | None = None,
    ) -> None:
        """One batch: its mean ``loss`` (weighted by its rows), the ``[B, T]`` scores of each kind; ``corrected``
        None while no post-hoc calibrator is attached."""
        self.loss.update(loss, weight=labels.shape[0])
        self.calibrated.update(calibrated, labels, p_true)
        self.raw.update(raw, labels)
        if corrected is not None:
            self.corrected.update(corrected, labels)

    def compute(self, with_corrected: bool) -> dict[str, Tensor]:
        """The stage's figures (``with_corrected``: also the ``_corrected`` ones)."""
        values = self.calibrated.compute()
        values.update(self.raw.compute())
        if with_corrected:
            values.update(self.corrected.compute())
        values[f"{self.stage}/loss"] = self.loss.compute()
        return values

    def reset(self) -> None:
        for m in (self.calibrated, self.raw, self.corrected, self.loss):
            m.reset()


def stage_metrics(
    tasks: Sequence[str], has_p_true: bool, thresholds=None, ece_bins: int = 15, stages: Sequence[str] = ("val", "test")
) -> nn.ModuleDict:
    """One :class:`StageMetrics` per evaluation stage, keyed by stage."""
    return nn.ModuleDict({s: StageMetrics(tasks, s, has_p_true, thresholds, ece_bins) for s in stages})
