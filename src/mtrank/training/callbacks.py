"""Lightning callbacks of mtrank.

:class:`GateStatistics` logs, for a mixture-of-experts network (:mod:`mtrank.models.mmoe`), how each head's
gate spreads its weight over the experts, so a user can see whether the tasks specialise:

* ``<stage>/gates/<head>/<expert>``: the mean gate weight the head gives that expert over the epoch's
  rows (for each head these sum to 1); expert names come from the net's ``gate_expert_names(head)``
  (``expert_<i>``, and ``own_<j>`` for PLE's per-head experts);
* ``<stage>/gates/<head>/entropy``: the mean over rows of the gate's entropy divided by ``log(n_experts)``
  (1 = uniform weights on every row, 0 = each row sent to one expert). A low entropy with spread-out
  mean weights means the gate routes different rows to different experts.

It finds the gates as the ``gates`` ModuleDict (head -> module returning ``[B, n_experts]`` weights) of
``pl_module.net`` and reads their outputs with forward hooks during validation / test epochs only, so
the network itself keeps no state. Networks without gates (shared bottom) are skipped with one warning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

__all__ = ["GateStatistics", "summarise_gates"]

log = logging.getLogger(__name__)
STAGES = ("val", "test")


def summarise_gates(weight_sum: Tensor, entropy_sum: Tensor, n_rows: Tensor) -> tuple[Tensor, Tensor]:
    """Mean weight per expert ``weight_sum / n`` and mean normalised entropy ``entropy_sum / n``
    (NaN when no rows were seen)."""
    n = n_rows.to(weight_sum.dtype)
    if float(n) <= 0:
        nan = torch.full_like(weight_sum, float("nan"))
        return nan, nan[0]
    return weight_sum / n, entropy_sum / n


def _normalised_entropy(w: Tensor) -> Tensor:
    """Per-row entropy of gate weights ``[B, E]`` divided by log(E) (0 for E = 1), summed over rows."""
    e = w.shape[-1]
    if e < 2:
        return w.new_zeros(())
    h = -(w * torch.log(w.clamp_min(1e-12))).sum(dim=-1)
    return (h / math.log(e)).sum()


class GateStatistics(pl.Callback):
    """Log the mean gate weight per expert per head (and the gate entropy) at the end of val/test epochs.

    Args:
        stages: which evaluation stages to log (``val``, ``test``).
        prefix: the metric-name segment after the stage, ``<stage>/<prefix>/<head>/<expert>``.
        entropy: also log ``<stage>/<prefix>/<head>/entropy``.
    """

    def __init__(self, stages: Sequence[str] = STAGES, prefix: str = "gates", entropy: bool = True) -> None:
        super().__init__()
        stages = tuple(str(s) for s in stages)
        unknown = sorted(set(stages) - set(STAGES))
        if unknown:
            raise ValueError(f"GateStatistics stages {unknown} unknown; allowed: {list(STAGES)}")
        self.stages = stages
        self.prefix = str(prefix)
        self.entropy = bool(entropy)
        self._handles: list = []
        self._sums: dict[str, list[Tensor]] = {}
        self._warned = False

    # ------------------------------------------------------------------ finding the gates
    def _gates(self, pl_module: pl.LightningModule) -> nn.ModuleDict | None:
        gates = getattr(getattr(pl_module, "net", None), "gates", None)
        if isinstance(gates, nn.ModuleDict) and len(gates) > 0:
            return gates
        if not self._warned:
            log.warning("GateStatistics: %s.net has no `gates`; nothing to log", type(pl_module).__name__)
            self._warned = True
        return None

    def _hook(self, head: str):
        def hook(module: nn.Module, inputs, output: Tensor) -> None:
            w = output.detach().float()
            acc = self._sums.get(head)
            if acc is None:
                acc = [w.new_zeros(w.shape[-1]), w.new_zeros(()), w.new_zeros(())]
                self._sums[head] = acc
            acc[0] += w.sum(dim=0)
            acc[1] += _normalised_entropy(w)
            acc[2] += w.shape[0]

        return hook

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._remove_hooks()
        self._sums = {}
        if stage not in self.stages or trainer.sanity_checking:
            return
        gates = self._gates(pl_module)
        if gates is None:
            return
        self._handles = [gate.register_forward_hook(self._hook(head)) for head, gate in gates.items()]

    def _end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self._handles:
            return
        self._remove_hooks()
        net = pl_module.net
        names_of = getattr(net, "gate_expert_names", None)
        values: dict[str, Tensor] = {}
        for head, (w_sum, h_sum, n) in self._sums.items():
            # sums over all ranks (a no-op on one process), then the means
            packed = trainer.strategy.reduce(torch.cat([w_sum, h_sum[None], n[None]]), reduce_op="sum")
            mean_w, mean_h = summarise_gates(packed[:-2], packed[-2], packed[-1])
            names = names_of(head) if callable(names_of) else [f"expert_{i}" for i in range(mean_w.numel())]
            for name, v in zip(names, mean_w):
                values[f"{stage}/{self.prefix}/{head}/{name}"] = v
            if self.entropy:
                values[f"{stage}/{self.prefix}/{head}/entropy"] = mean_h
        self._sums = {}
        if values:
            pl_module.log_dict(values, on_step=False, on_epoch=True)

    def _remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # ------------------------------------------------------------------ Lightning hooks
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "val")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "test")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._end(trainer, pl_module, "test")
