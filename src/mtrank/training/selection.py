"""Per-head model selection: each head scored with the weights of its own best validation epoch.

One early-stopping point for many heads keeps the epoch that is best for the loss summed over heads, which the
frequent heads dominate; a rare head that overfits in its first epoch is kept at a later, worse one.
:class:`PerHeadSelection` (a callback, ``callbacks.per_head_selection``, its settings a
:class:`~mtrank.training.config.PerHeadSelectionConfig`) watches ``val/<head>/<metric>`` at every validation epoch
(``metric: logloss``, lower is better, by default) and keeps a CPU copy of the net's weights at each head's best
epoch. After fitting, :meth:`PerHeadSelection.finalize` (called by :func:`mtrank.jobs.train.train`) replaces the
module's net by a :class:`~mtrank.models.selection.PerHeadNet`, which holds one copy of the net per distinct best
epoch and scores head h with the copy of h's epoch, and saves it as ``checkpoints/per_head.ckpt``; that checkpoint
is then validated, calibrated and tested instead of the single best one. When every head's best epoch is the same,
nothing changes.

``min_delta`` (relative, default 0): a head leaves the epoch the checkpoint keeps (the best of the
``ModelCheckpoint``'s monitor, e.g. ``val/loss``) only when its own best epoch beats its figure at that epoch by more
than ``min_delta`` × that figure; a frequent head's log-loss moves by less than 0.1% between neighbouring epochs, so
its "own best" epoch is noise, while a rare head that overfits moves by several per cent.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytorch_lightning as pl
from torch import Tensor

from mtrank.models.selection import PerHeadNet
from mtrank.training.config import PerHeadSelectionConfig

__all__ = ["PerHeadSelection"]

log = logging.getLogger(__name__)


class PerHeadSelection(pl.Callback):
    """Keeps each head's weights at its best val epoch (``val/<head>/<metric>``; ``mode`` min or max)."""

    def __init__(self, metric: str = "logloss", mode: str = "min", min_delta: float = 0.0) -> None:
        cfg = PerHeadSelectionConfig(str(metric), mode, min_delta)
        self.metric, self.mode, self.min_delta = cfg.metric, cfg.mode, float(cfg.min_delta)
        self.best: dict[str, tuple[float, int]] = {}  # head -> (value, epoch)
        self.states: dict[int, dict[str, Tensor]] = {}  # epoch -> net state (CPU)
        self.values: dict[int, dict[str, float]] = {}  # epoch -> head -> value (for min_delta)
        self.kept: tuple[float, int] | None = None  # (monitor value, epoch) of the checkpoint's best epoch

    def _kept_epoch(self, trainer: pl.Trainer, epoch: int) -> bool:
        """Track the epoch the checkpoint keeps (its monitor's best); True when it is this one."""
        ckpt = getattr(trainer, "checkpoint_callback", None)
        monitor = getattr(ckpt, "monitor", None)
        if not monitor or monitor not in trainer.callback_metrics:
            raise KeyError(
                "callbacks.per_head_selection.min_delta needs the model checkpoint's monitored metric "
                f"(callbacks.model_checkpoint.monitor = {monitor!r}) to be logged at every validation"
            )
        value = float(trainer.callback_metrics[monitor])
        lower = getattr(ckpt, "mode", "min") == "min"
        if self.kept is None or (value < self.kept[0] if lower else value > self.kept[0]):
            self.kept = (value, epoch)
            return True
        return False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after the module has logged its epoch figures (as ModelCheckpoint does)
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        epoch = int(trainer.current_epoch)
        improved = False
        for head in pl_module.heads:
            key = f"val/{head}/{self.metric}"
            if key not in trainer.callback_metrics:
                raise KeyError(
                    f"callbacks.per_head_selection: {key} is not logged; metrics: "
                    f"{sorted(k for k in trainer.callback_metrics if k.startswith('val/'))[:12]}…"
                )
            value = float(trainer.callback_metrics[key])
            old = self.best.get(head)
            better = old is None or (value < old[0] if self.mode == "min" else value > old[0])
            if better and value == value:  # not NaN
                self.best[head] = (value, epoch)
                improved = True
        if self.min_delta > 0:
            self.values[epoch] = {h: float(trainer.callback_metrics[f"val/{h}/{self.metric}"]) for h in pl_module.heads}
            improved = self._kept_epoch(trainer, epoch) or improved
        if improved:
            self.states[epoch] = {k: v.detach().cpu().clone() for k, v in pl_module.net.state_dict().items()}
        used = {e for _, e in self.best.values()} | ({self.kept[1]} if self.kept else set())
        self.states = {e: s for e, s in self.states.items() if e in used}

    def epochs(self) -> dict[str, int]:
        """Each head's epoch: its own best, or with ``min_delta`` the kept epoch unless its own best beats its
        figure there by more than ``min_delta`` (relative)."""
        out = {h: e for h, (_, e) in self.best.items()}
        if self.min_delta <= 0 or self.kept is None:
            return out
        kept = self.kept[1]
        for h, (best, _) in self.best.items():
            at_kept = self.values[kept][h]
            gain = at_kept - best if self.mode == "min" else best - at_kept
            if not gain > self.min_delta * abs(at_kept):
                out[h] = kept
        return out

    def finalize(self, pl_module: pl.LightningModule, trainer: pl.Trainer, directory: Path | str) -> str | None:
        """Swap in a :class:`PerHeadNet` and save it; returns its checkpoint path, or None when one epoch is
        best for every head (or nothing was recorded)."""
        epochs = self.epochs()
        if not epochs or len(set(epochs.values())) == 1 or set(epochs) != set(pl_module.heads):
            return None
        order = sorted(set(epochs.values()))
        base = copy.deepcopy(dict(pl_module.hparams["net"]))
        cfg = {
            "_target_": f"{PerHeadNet.__module__}.PerHeadNet",
            "_recursive_": False,
            "base": base,
            "head_copy": [order.index(epochs[h]) for h in pl_module.heads],
            "n_copies": len(order),
        }
        net = PerHeadNet(pl_module.spec, pl_module.heads, base, cfg["head_copy"], cfg["n_copies"])
        for i, e in enumerate(order):
            net.copies[i].load_state_dict(self.states[e])
        pl_module.net = net.to(pl_module.device).train(pl_module.training)
        pl_module.hparams["net"] = cfg
        path = Path(directory) / "per_head.ckpt"
        path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(str(path), weights_only=True)
        log.info("Per-head selection: best val epoch per head %s → %s", epochs, path)
        return str(path)
