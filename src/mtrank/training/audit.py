"""A callback that records what each rank saw, to check data division and metric sync under DDP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytorch_lightning as pl


class RowAudit(pl.Callback):
    """Writes ``<out_dir>/rows_rank<r>_epoch<e>.npy`` (request_id, item_id of every training row seen) and
    ``<out_dir>/val_metrics_rank<r>.json`` (the validation metrics as this rank computed them)."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self._rows: list[np.ndarray] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._rows.append(np.stack([batch["request_id"].cpu().numpy(), batch["item_id"].cpu().numpy()], axis=1))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        rows = np.concatenate(self._rows) if self._rows else np.empty((0, 2), dtype=np.int64)
        np.save(self.out_dir / f"rows_rank{trainer.global_rank}_epoch{trainer.current_epoch}.npy", rows)

    def on_validation_end(self, trainer, pl_module) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        path = self.out_dir / f"val_metrics_rank{trainer.global_rank}.json"
        path.write_text(json.dumps(metrics, sort_keys=True))
