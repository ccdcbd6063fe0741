"""Benchmark (a): streamed training batches from processed shards against the raw Polars read rate.

Reference: ``pl.scan_parquet(files).collect_batches(chunk_size)`` + ``to_torch`` on the same files (no shuffle,
no batching). Ours: ``ShardStream`` with shuffle, shuffle buffer and the training batch size, in the main
process (as `num_workers=0`) and with spawned DataLoader workers. Prints rows/s, the ratio and peak RSS.

    python scripts/bench_data.py --impressions 2000000 --batch-size 2048
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import polars as pl
import torch
from torch.utils.data import DataLoader

from mtrank.data.config import PipelineConfig
from mtrank.data.datamodule import simulated_logs
from mtrank.data.dataset import ShardStream
from mtrank.data.pipeline import process
from mtrank.utils.bench import default_pipeline, peak_rss_mb


def reference_epoch(files: list[Path], chunk: int) -> float:
    t0, n = time.perf_counter(), 0
    for df in pl.scan_parquet(files).collect_batches(chunk_size=chunk):
        n += df.to_torch().shape[0]
    return n / (time.perf_counter() - t0)


def stream_epoch(ds: ShardStream, epoch: int, workers: int) -> float:
    ds.set_epoch(epoch)
    t0, n = time.perf_counter(), 0
    it = ds if workers == 0 else DataLoader(ds, batch_size=None, num_workers=workers, multiprocessing_context="spawn")
    for b in it:
        n += b["labels"].shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--impressions", type=int, default=2_000_000)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--chunk", type=int, default=65_536, help="collect_batches chunk size of the reference")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--data-dir", default=None, help="cache folder (default: a temporary one)")
    args = p.parse_args()
    torch.set_num_threads(1)
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="mtrank-bench-"))
    raw = simulated_logs({"n_impressions": args.impressions, "n_files": 8}, data_dir / "raw")
    # beta = 1: every impression is a training row, so the files are as large as the log
    processed = process(PipelineConfig.from_mapping(default_pipeline([str(raw)], beta=1.0)), data_dir / "processed")
    files = [f for f, _ in processed.files("train")]
    rows = processed.rows("train")
    ds = ShardStream(processed.files("train"), processed.spec, args.batch_size, shuffle=True, buffer_size=65_536,
                     seed=0, chunk_rows=65_536)
    # alternate the two so that load from other processes hits both alike; best epoch of each
    ref = ours0 = 0.0
    for r in range(args.repeats):
        ref = max(ref, reference_epoch(files, args.chunk))
        ours0 = max(ours0, stream_epoch(ds, r, 0))
    # workers are spawned per epoch here (start-up included), as a run's first epoch pays it
    ours_w = max(stream_epoch(ds, r, args.workers) for r in range(2)) if args.workers else float("nan")
    print(f"train rows: {rows:,} in {len(files)} shards; batch size {args.batch_size}")
    print(f"reference  pl.scan_parquet.collect_batches({args.chunk}) + to_torch : {ref / 1e6:6.2f} M rows/s")
    print(f"ShardStream shuffled, main process                         : {ours0 / 1e6:6.2f} M rows/s  ratio {ours0 / ref:.2f}")
    if args.workers:
        print(f"ShardStream shuffled, {args.workers} spawned workers (start-up incl.)  : {ours_w / 1e6:6.2f} M rows/s  ratio {ours_w / ref:.2f}")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
