"""Benchmark (c): samples/s of the Lightning training loop against a bare PyTorch loop.

Same network, loss, optimiser and batches (ShardStream over the same processed shards, main process). The
Lightning loop is one ``Trainer.fit`` over all epochs, timed per epoch by a callback (the steady-state loop:
Trainer construction and set-up are printed apart); the bare loop runs the same epochs before and after it, so
that a change in machine load shows. Prints samples/s per epoch and the ratio of the best epochs.

    python scripts/bench_training.py --impressions 5000000 --epochs 3
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from mtrank.data.config import PipelineConfig
from mtrank.data.datamodule import simulated_logs
from mtrank.data.dataset import ShardStream
from mtrank.data.pipeline import process
from mtrank.training.module import RankingModule
from mtrank.utils.bench import ROOT, default_pipeline, peak_rss_mb


def make_module(spec) -> RankingModule:
    model_cfg = OmegaConf.load(ROOT / "conf" / "model" / "shared_bottom.yaml")
    loss_cfg = OmegaConf.load(ROOT / "conf" / "loss" / "multitask.yaml")
    return RankingModule(spec=spec, net=model_cfg.net, loss=loss_cfg, optimizer=model_cfg.optimizer)


def bare_epoch(module: RankingModule, opt, ds: ShardStream, epoch: int) -> float:
    module.train()
    ds.set_epoch(epoch)
    t0, n = time.perf_counter(), 0
    for batch in ds:
        logits = module(batch)
        loss, _ = module.compute_loss(logits, batch["labels"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += batch["labels"].shape[0]
    return n / (time.perf_counter() - t0)


class _Loader(pl.LightningDataModule):
    def __init__(self, ds):
        super().__init__()
        self.ds = ds

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.ds, batch_size=None)


class _EpochTimer(pl.Callback):
    def __init__(self, rows: int):
        self.rows, self.rates, self._t0 = rows, [], 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.rates.append(self.rows / (time.perf_counter() - self._t0))


def lightning_fit(module: RankingModule, ds: ShardStream, epochs: int) -> tuple[list[float], float]:
    """Per-epoch samples/s of one fit over ``epochs`` epochs, and the wall time of the whole fit."""
    timer = _EpochTimer(sum(ds.rows))
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=_Loader(ds))
    return timer.rates, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--impressions", type=int, default=1_000_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="mtrank-bench-"))
    raw = simulated_logs({"n_impressions": args.impressions, "n_files": 8}, data_dir / "raw")
    processed = process(PipelineConfig.from_mapping(default_pipeline([str(raw)])), data_dir / "processed")
    ds = ShardStream(
        processed.files("train"),
        processed.spec,
        args.batch_size,
        shuffle=True,
        seed=0,
        chunk_rows=65_536,
        with_p_true=False,
    )
    torch.manual_seed(0)
    bare_module = make_module(processed.spec)
    opt = bare_module.configure_optimizers()
    light_module = make_module(processed.spec)
    bare = [bare_epoch(bare_module, opt, ds, e) for e in range(args.epochs + 1)]  # epoch 0 warms up
    light, fit_seconds = lightning_fit(light_module, ds, args.epochs + 1)
    bare += [bare_epoch(bare_module, opt, ds, e) for e in range(args.epochs + 1, 2 * args.epochs + 1)]
    b, lt = max(bare[1:]), max(light[1:])
    steady = sum(ds.rows) * (args.epochs + 1) / fit_seconds
    print(
        f"train rows per epoch: {sum(ds.rows):,}; batch size {args.batch_size}; torch threads {torch.get_num_threads()}"
    )
    print(f"bare PyTorch loop : {b:10,.0f} samples/s (epochs: {', '.join(f'{x:,.0f}' for x in bare[1:])})")
    print(f"Lightning loop    : {lt:10,.0f} samples/s (epochs: {', '.join(f'{x:,.0f}' for x in light[1:])})")
    print(
        f"ratio Lightning / bare: {lt / b:.2f}  (whole fit incl. Trainer set-up and warm-up epoch: "
        f"{steady:,.0f} samples/s)"
    )
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
