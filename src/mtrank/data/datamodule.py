"""The LightningDataModule: raw logs (or the built-in simulator) → processed shards → streamed batches."""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn

from mtrank.data.config import PipelineConfig
from mtrank.data.dataset import ShardStream
from mtrank.data.loader import WindowBatches, window_loader
from mtrank.data.pipeline import ProcessedData, process
from mtrank.data.spec import FeatureSpec

log = logging.getLogger(__name__)

# ShardStream divides rows among workers itself (mtrank.data.dataset), so its __len__ is exact.
warnings.filterwarnings("ignore", message=r".*`IterableDataset` has `__len__` defined.*")


def simulated_logs(simulator: Mapping[str, Any], raw_root: Path | str) -> Path:
    """Generate (or reuse) the simulator's raw logs under ``raw_root/simulated-<config hash>``."""
    from mtrank.data.simulator import generate_logs
    from mtrank.data.simulator_config import SIMULATOR_VERSION, SimulatorConfig

    sim_cfg = SimulatorConfig.from_mapping(dict(simulator))
    payload = {"version": SIMULATOR_VERSION, "config": sim_cfg.to_dict()}
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]
    out = Path(raw_root) / f"simulated-{digest}"
    generate_logs(sim_cfg, out)
    return out


def _round_to(n: int, unit: int) -> int:
    """``n`` rounded up to a whole number of ``unit`` (reads then start and end on Parquet row groups)."""
    return max(unit, -(-n // unit) * unit)


class RankingDataModule(pl.LightningDataModule):
    def __init__(
        self,
        pipeline: Mapping[str, Any],
        processed_dir: str,
        simulator: Mapping[str, Any] | None = None,
        raw_dir: str | None = None,
        batch_size: int = 2048,
        eval_batch_size: int = 16384,
        shuffle_buffer: int = 65536,
        read_chunk_rows: int = 65536,
        num_workers: int = 0,
        pin_memory: bool | str = "auto",
        multiprocessing_context: str | None = "spawn",
        seed: int = 0,
    ):
        super().__init__()
        self.pipeline_cfg = dict(pipeline)
        self.processed_dir = Path(processed_dir)
        self.simulator = dict(simulator) if simulator else None
        self.raw_dir = raw_dir
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.shuffle_buffer = shuffle_buffer
        self.read_chunk_rows = read_chunk_rows
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.multiprocessing_context = multiprocessing_context
        self.seed = seed
        self.processed: ProcessedData | None = None
        self.datasets: dict[str, ShardStream] = {}
        self._resume: dict[str, int] | None = None

    def _config(self) -> PipelineConfig:
        cfg = dict(self.pipeline_cfg)
        if self.simulator is not None and not cfg.get("inputs") and not cfg.get("split_inputs"):
            if not self.raw_dir:
                raise ValueError("data.raw_dir must be set when data.simulator generates the logs")
            cfg["inputs"] = [str(simulated_logs(self.simulator, self.raw_dir))]
        return PipelineConfig.from_mapping(cfg)

    def prepare_data(self) -> None:
        self.processed = process(self._config(), self.processed_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.processed is None:
            self.prepare_data()

    @property
    def spec(self) -> FeatureSpec:
        if self.processed is None:
            self.setup()
        return self.processed.spec

    @property
    def metadata(self) -> Mapping[str, Any]:
        if self.processed is None:
            self.setup()
        return self.processed.metadata

    def _dist(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def dataset(self, split: str, shuffle: bool | None = None) -> ShardStream:
        if self.processed is None:
            self.setup()
        shuffle = (split == "train") if shuffle is None else shuffle
        rank, world = self._dist()
        ds = ShardStream(
            self.processed.files(split),
            self.processed.spec,
            self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            buffer_size=self.shuffle_buffer,
            seed=self.seed,
            chunk_rows=_round_to(self.read_chunk_rows, int(self.processed.metadata["config"]["row_group_size"])),
            rank=rank,
            world_size=world,
            with_p_true=split != "train",
        )
        if split == "train" and self._resume is not None:
            ds.resume_at(self._resume["epoch"], self._resume["batches_done"])
            log.info(
                "Resuming the train stream at epoch %d after %d of its %d batches",
                self._resume["epoch"],
                self._resume["batches_done"],
                len(ds),
            )
            self._resume = None
        self.datasets[split] = ds
        return ds

    # ------------------------------------------------------------------ mid-epoch resume
    # Lightning restores the loops' counters from a checkpoint but re-iterates a plain DataLoader from its
    # first batch. The DataModule's state (saved in every checkpoint) records where the train stream was:
    # the epoch and the batches of it the training loop had processed; on load the next train stream
    # starts there, so a run resumed from a mid-epoch checkpoint sees exactly the batches the interrupted
    # run had not trained on yet.

    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "trainer", None)
        if trainer is None or trainer.state.fn != TrainerFn.FITTING:
            return {}
        # current_epoch (epochs completed) is the running epoch both within it and at its end hook
        return {
            "epoch": int(trainer.current_epoch),
            "batches_done": int(trainer.fit_loop.epoch_loop.batch_progress.current.processed),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        trainer = getattr(self, "trainer", None)
        fitting = trainer is not None and trainer.state.fn == TrainerFn.FITTING
        if fitting and "epoch" in state_dict:  # validate/test from a checkpoint do not move the train stream
            self._resume = {"epoch": int(state_dict["epoch"]), "batches_done": int(state_dict["batches_done"])}

    def _loader(self, split: str) -> WindowBatches:
        # Polars is not fork-safe (a forked worker can deadlock on the parent's thread pool), so workers are
        # spawned, once: they persist across epochs and read the epoch from the dataset's shared memory.
        workers = self.num_workers > 0
        return window_loader(
            self.dataset(split),
            num_workers=self.num_workers,
            pin_memory=self._pin(),
            persistent_workers=workers,
            multiprocessing_context=self.multiprocessing_context if workers else None,
            # the loader's own seed source: creating an iterator then leaves torch's global generator (dropout)
            # alone, so a run resumed from a checkpoint draws the same random numbers as the uninterrupted one
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _pin(self) -> bool:
        """``data.pin_memory``: true | false | auto (pin when the Trainer trains on a CUDA device, whose
        host-to-device copies Lightning then makes non-blocking)."""
        if self.pin_memory != "auto":
            return bool(self.pin_memory)
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self) -> WindowBatches:
        return self._loader("train")

    def val_dataloader(self) -> WindowBatches:
        return self._loader("val")

    def test_dataloader(self) -> WindowBatches:
        return self._loader("test")

    def predict_dataloader(self) -> WindowBatches:
        return self._loader("test")
