"""Checkpoints for resuming a training run that died (preemption, OOM, SIGKILL).

* :class:`ResumeCheckpoint` writes ``<run>/checkpoints/last.ckpt`` every ``every_n_train_steps`` optimizer
  steps and at the end of every epoch, so a killed run loses at most that many steps.
* :class:`AtomicCheckpointIO` (``trainer.plugins``) writes every checkpoint to a temporary file in the same
  folder and renames it into place, so a kill during the write leaves the previous file intact (Lightning's own
  writer stages in the system temp folder and *moves* the file, which is a copy, not a rename, whenever that
  folder is on another file system).
* The checkpoint holds the model, optimizer, loop counters, callback states (best checkpoint, early
  stopping), the DataModule's position in the train stream (:meth:`RankingDataModule.state_dict`) and the
  random number generators (:meth:`RankingModule.on_save_checkpoint`): a run resumed from it trains on the
  same remaining batches in the same order as the uninterrupted run, so it ends with the same weights and
  metrics (mid-epoch exact; ``tests/test_resume.py`` kills a run with SIGKILL to check it).
* ``ckpt_path=last`` resumes the unfinished run of the task name whose config matches, in that run's own folder
  (:func:`mtrank.training.resume.resume_run_dir` is the ``hydra.run.dir`` resolver; it refuses when no run or
  several runs could be meant), so its checkpoints, logs and metrics stay in one place; ``ckpt_path=auto`` resumes from the run folder's own ``last.ckpt`` when there is one (requeued SLURM
  jobs, relaunched multirun jobs) and starts afresh otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint

from mtrank.training.resume import resume_run_dir, select_run
from mtrank.utils.io import atomic_write

LAST = "last.ckpt"
RNG_KEY = "mtrank_rng_states"


class ResumeCheckpoint(Checkpoint):
    """Save ``<dirpath>/last.ckpt`` every ``every_n_train_steps`` steps (0: never mid-epoch) and at the end of
    every training epoch (after its validation)."""

    def __init__(self, dirpath: str | Path, every_n_train_steps: int = 200, filename: str = LAST):
        super().__init__()
        if int(every_n_train_steps) < 0:
            raise ValueError(
                f"callbacks.resume_checkpoint.every_n_train_steps must be ≥ 0 (0: only after validation), "
                f"got {every_n_train_steps}"
            )
        self.dirpath = Path(dirpath)
        self.every_n_train_steps = int(every_n_train_steps)
        self.filename = filename

    @property
    def path(self) -> Path:
        return self.dirpath / self.filename

    @property
    def state_key(self) -> str:
        return self._generate_state_key(every_n_train_steps=self.every_n_train_steps)

    def _save(self, trainer: pl.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        trainer.save_checkpoint(self.path)  # every rank calls it; rank 0 writes

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        n = self.every_n_train_steps
        if n and trainer.global_step % n == 0:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        # after the epoch's validation (as ModelCheckpoint): the loops then restart cleanly at the next epoch
        self._save(trainer)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint I/O, with a same-folder temporary file and rename for every save."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


def rng_states() -> dict[str, torch.Tensor]:
    """The states of the generators a training step draws from (dropout: torch's CPU and CUDA generators);
    the data stream seeds its own. Plain tensors, so the checkpoint loads with ``weights_only=True``."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


def find_last(runs_dir: str | Path) -> Path | None:
    """The newest ``<runs_dir>/*/checkpoints/last.ckpt``, if any."""
    found = sorted(Path(runs_dir).glob(f"*/checkpoints/{LAST}"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def resolve_ckpt_path(
    ckpt_path: str | None,
    log_dir: str | Path,
    task_name: str,
    output_dir: str | Path | None = None,
    cfg: Any = None,
) -> str | None:
    """``"last"``: the ``last.ckpt`` of the run this config resumes (:func:`mtrank.training.resume.select_run`: the
    unfinished run with the same config; the run folder ``src/train.py`` continues in, when it is that run);
    ``"auto"``: this run folder's own ``last.ckpt`` if there is one, else start from scratch (a SLURM job
    requeued after preemption, or a multirun job relaunched into its fixed ``hydra.sweep.dir``);
    any other value is a checkpoint path."""
    if ckpt_path == "auto":
        own = Path(output_dir or ".", "checkpoints", LAST)
        return str(own) if own.is_file() else None
    if ckpt_path != "last":
        if ckpt_path and not Path(ckpt_path).exists():
            raise FileNotFoundError(f"ckpt_path={ckpt_path} does not exist")
        return ckpt_path
    runs_dir = Path(log_dir, task_name, "runs")
    if output_dir is not None:
        own = Path(output_dir, "checkpoints", LAST)
        if own.is_file() and Path(output_dir).resolve().parent == runs_dir.resolve():
            return str(own)  # the resolver of hydra.run.dir chose this run
    if cfg is None:
        raise ValueError("ckpt_path=last needs the run's config to find the run with the same config")
    chosen = select_run(runs_dir, cfg)
    if chosen is None:
        raise FileNotFoundError(f"ckpt_path=last: no {runs_dir}/*/checkpoints/{LAST} to resume from")
    return str(chosen / "checkpoints" / LAST)


__all__ = [
    "LAST",
    "RNG_KEY",
    "ResumeCheckpoint",
    "AtomicCheckpointIO",
    "rng_states",
    "set_rng_states",
    "find_last",
    "resolve_ckpt_path",
    "resume_run_dir",
]
