"""Benchmark (e): training samples/s on one GPU, fp32 and bf16 autocast, with and without ``torch.compile``.

Batches are streamed from processed shards as in training: the DataModule's loader (whole shuffle windows, pinned
by the DataLoader), each batch moved with a non-blocking copy; the figure is the steady-state rate after a warm-up.
One command on a GPU machine:

    python scripts/bench_gpu.py --impressions 2000000 --batch-size 8192

Without a CUDA device it says so and exits (status 0), so it is safe to run anywhere.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from mtrank.data.config import PipelineConfig
from mtrank.data.datamodule import simulated_logs
from mtrank.data.dataset import ShardStream
from mtrank.data.loader import WindowBatches, window_loader
from mtrank.data.pipeline import process
from mtrank.training.module import RankingModule
from mtrank.utils.bench import ROOT, default_pipeline


def run(module: RankingModule, loader: WindowBatches, device: torch.device, bf16: bool, epochs: int) -> float:
    opt = torch.optim.Adam(module.parameters(), lr=2e-3)
    forward = module.net
    rates = []
    for e in range(epochs + 1):  # epoch 0: warm-up (and compilation)
        loader.dataset.set_epoch(e)
        torch.cuda.synchronize()
        t0, n = time.perf_counter(), 0
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                logits = forward(batch)
            loss, _ = module.compute_loss(logits.float(), batch["labels"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += batch["labels"].shape[0]
        torch.cuda.synchronize()
        rates.append(n / (time.perf_counter() - t0))
    return max(rates[1:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--impressions", type=int, default=2_000_000)
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: benchmark (e) needs a GPU machine (nothing measured)")
        return
    device = torch.device("cuda")
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="mtrank-gpu-"))
    raw = simulated_logs({"n_impressions": args.impressions, "n_files": 8}, data_dir / "raw")
    processed = process(PipelineConfig.from_mapping(default_pipeline([str(raw)], beta=1.0)), data_dir / "processed")
    ds = ShardStream(
        processed.files("train"),
        processed.spec,
        args.batch_size,
        shuffle=True,
        seed=0,
        chunk_rows=65_536,
        with_p_true=False,
    )
    loader = window_loader(ds, pin_memory=True)
    model_cfg = OmegaConf.load(ROOT / "conf" / "model" / "shared_bottom.yaml")
    loss_cfg = OmegaConf.load(ROOT / "conf" / "loss" / "multitask.yaml")
    print(f"{torch.cuda.get_device_name()}; train rows/epoch {sum(ds.rows):,}; batch size {args.batch_size}")
    results = {}
    for compiled in (False, True):
        for bf16 in (False, True):
            torch.manual_seed(0)
            module = RankingModule(
                spec=processed.spec, net=model_cfg.net, loss=loss_cfg, optimizer=model_cfg.optimizer, compile=compiled
            ).to(device)
            module.configure_model()  # model.compile=true: what the Trainer does
            results[(compiled, bf16)] = run(module, loader, device, bf16, args.epochs)
            print(f"compile={compiled!s:5} bf16={bf16!s:5}: {results[(compiled, bf16)]:12,.0f} samples/s")
    base = results[(False, False)]
    for k, v in results.items():
        print(f"ratio to eager fp32, compile={k[0]!s:5} bf16={k[1]!s:5}: {v / base:.2f}")


if __name__ == "__main__":
    main()
