"""Benchmark (a): streamed training batches from processed shards against the raw Polars read rate.

Reference: ``pl.scan_parquet(files).select(columns).collect_batches(chunk_size)`` + ``to_torch`` on the same
files and the same columns a training batch holds (no shuffle, no batching). Ours: ``ShardStream`` as training
uses it (shuffle buffer, training batch size, batches of tensors by kind), in the main process (as
``num_workers=0``) and with spawned persistent DataLoader workers (steady-state epochs; the workers' start-up is
printed apart). The two alternate epochs so that machine load hits both alike. Prints rows/s, the ratio and
peak RSS, and the rates of the stream's two stages (reading windows, gathering them) each run alone.

    python scripts/bench_data.py --impressions 2000000 --batch-size 2048
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

from mtrank.data.config import PipelineConfig
from mtrank.data.datamodule import simulated_logs
from mtrank.data.dataset import ShardStream
from mtrank.data.loader import WindowBatches, window_loader
from mtrank.data.pipeline import process
from mtrank.data.stream_plan import take, windows
from mtrank.utils.bench import default_pipeline, peak_rss_mb


def reference_epoch(files: list[Path], columns: list[str], chunk: int) -> float:
    t0, n = time.perf_counter(), 0
    for df in pl.scan_parquet(files).select(columns).collect_batches(chunk_size=chunk):
        n += df.to_torch().shape[0]
    return n / (time.perf_counter() - t0)


def stream_epoch(ds: ShardStream, epoch: int, loader: WindowBatches | None = None) -> float:
    ds.set_epoch(epoch)
    t0, n = time.perf_counter(), 0
    for b in loader if loader is not None else ds:
        n += b["labels"].shape[0]
    return n / (time.perf_counter() - t0)


def stage_rates(ds: ShardStream, epoch: int) -> tuple[float, float]:
    """Rows/s of the stream's two stages run alone, one after the other, on one epoch's plan: reading the shuffle
    windows (Polars), and gathering read windows into batch tensors in their permuted order (the windows are read
    first; at most 8 are gathered, round and round, so that they stay in memory)."""
    segments, sizes = ds._plan(epoch, 0, 1)
    reads, start = [], 0
    for group in windows(sizes, ds.buffer_size):
        n = sum(group)
        reads.append(take(segments, start, start + n))
        start += n
    t0 = time.perf_counter()
    frames = [f for i, f in enumerate(ds._frames(reads)) if i < 8]
    read = sum(sizes) / (time.perf_counter() - t0)
    rng, staging, n = torch.Generator().manual_seed(0), {}, 0
    t0 = time.perf_counter()
    for i in range(len(reads)):
        f = frames[i % len(frames)]
        n += ds._tensors(f, torch.randperm(f.height, generator=rng), staging=staging)["labels"].shape[0]
    return read, n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--impressions", type=int, default=2_000_000)
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--chunk", type=int, default=65_536, help="collect_batches chunk size of the reference")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--workers", default="1,2,4", help="comma-separated numbers of DataLoader workers to measure (0: none)"
    )
    p.add_argument("--data-dir", default=None, help="cache folder (default: a temporary one)")
    args = p.parse_args()
    torch.set_num_threads(1)
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="mtrank-bench-"))
    raw = simulated_logs({"n_impressions": args.impressions, "n_files": 8}, data_dir / "raw")
    # beta = 1: every impression is a training row, so the files are as large as the log
    processed = process(PipelineConfig.from_mapping(default_pipeline([str(raw)], beta=1.0)), data_dir / "processed")
    files = [f for f, _ in processed.files("train")]
    rows = processed.rows("train")

    def stream(shuffle: bool) -> ShardStream:  # as training reads: no p_true, 64k-row chunks and shuffle windows
        return ShardStream(
            processed.files("train"),
            processed.spec,
            args.batch_size,
            shuffle=shuffle,
            buffer_size=65_536,
            seed=0,
            chunk_rows=65_536,
            with_p_true=False,
        )

    ds, plain = stream(shuffle=True), stream(shuffle=False)
    columns = ds._columns
    counts = [int(w) for w in args.workers.split(",") if int(w) > 0]
    loaders, startup = {}, {}
    for w in counts:  # the DataModule's loader: spawned, persistent workers handing over whole windows
        loaders[w] = window_loader(ds, num_workers=w, multiprocessing_context="spawn", persistent_workers=True)
        t0 = time.perf_counter()
        stream_epoch(ds, 0, loaders[w])  # the first epoch pays the workers' start-up
        startup[w] = time.perf_counter() - t0
    ref, ours0, unshuffled, stages = [], [], [], []
    ours_w: dict[int, list[float]] = {w: [] for w in counts}
    for r in range(1, args.repeats + 1):
        ref.append(reference_epoch(files, columns, args.chunk))
        ours0.append(stream_epoch(ds, r))
        unshuffled.append(stream_epoch(plain, r))
        stages.append(stage_rates(ds, r))
        for w in counts:
            ours_w[w].append(stream_epoch(ds, r, loaders[w]))
    ref_best = max(ref)
    print(f"train rows: {rows:,} in {len(files)} shards; columns: {len(columns)}; batch size {args.batch_size}")
    print(
        f"reference  pl.scan_parquet.collect_batches({args.chunk}) + to_torch : {ref_best / 1e6:6.2f} M rows/s "
        f"(epochs {', '.join(f'{x / 1e6:.2f}' for x in ref)})"
    )
    print(
        f"ShardStream shuffled, main process                         : {max(ours0) / 1e6:6.2f} M rows/s  "
        f"ratio {max(ours0) / ref_best:.2f} (epochs {', '.join(f'{x / 1e6:.2f}' for x in ours0)})"
    )
    print(
        f"ShardStream not shuffled, main process                     : {max(unshuffled) / 1e6:6.2f} M rows/s  "
        f"ratio {max(unshuffled) / ref_best:.2f} (the batching machinery alone)"
    )
    read, gather = max(s[0] for s in stages), max(s[1] for s in stages)
    print(
        f"  its stages alone: reading windows {read / 1e6:.2f} M rows/s ({read / ref_best:.2f}x the reference), "
        f"gathering them into tensors {gather / 1e6:.2f} M rows/s; one after the other {1e-6 / (1 / read + 1 / gather):.2f}"
    )
    for w in counts:
        best = max(ours_w[w])
        print(
            f"ShardStream shuffled, {w} persistent spawned worker(s)      : {best / 1e6:6.2f} M rows/s  "
            f"ratio {best / ref_best:.2f}, {best / max(ours0):.2f}x the main process "
            f"(first epoch with start-up: {startup[w]:.1f} s)"
        )
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
