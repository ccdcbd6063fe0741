"""Benchmark (a): streamed training batches from processed shards against the raw Polars read rate.

Reference: ``pl.scan_parquet(files).select(columns).collect_batches(chunk_size)`` + ``to_torch`` on the same
files and the same columns a training batch holds (no shuffle, no batching). Ours: ``ShardStream`` as training
uses it (shuffle buffer, training batch size, batches of tensors by kind), in the main process (as
``num_workers=0``) and with spawned persistent DataLoader workers (steady-state epochs; the workers' start-up is
printed apart). The two alternate epochs so that machine load hits both alike. Prints rows/s, the ratio and
peak RSS, and the rates of the stream's two stages (reading windows, gathering them) each run alone.

Each line also says what it costs in CPU: nanoseconds of CPU time a row in its cheapest epoch (all threads, and
the workers' processes) and how many cores it kept busy. From those the script prints two bounds for this machine:
the fastest any schedule of the two stages could make with every core busy at their cheapest, and the most workers
could add to the in-process stream.

    python scripts/bench_data.py --impressions 2000000 --batch-size 2048
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import torch

from mtrank.data.config import PipelineConfig
from mtrank.data.datamodule import simulated_logs
from mtrank.data.dataset import ShardStream
from mtrank.data.loader import WindowBatches, window_loader
from mtrank.data.pipeline import process
from mtrank.data.stream_plan import take, windows
from mtrank.utils.bench import cpu_count, cpu_seconds, default_pipeline, peak_rss_mb


@dataclass
class Tally:
    """Epochs of one kind: rows, wall seconds and CPU seconds of each."""

    epochs: list[tuple[int, float, float]] = field(default_factory=list)

    def add(self, rows: int, wall: float, cpu: float) -> None:
        self.epochs.append((rows, wall, cpu))

    @property
    def best(self) -> float:
        """Rows/s of the fastest epoch."""
        return max(rows / wall for rows, wall, _ in self.epochs)

    @property
    def ns_per_row(self) -> float:
        """CPU time a row in the cheapest epoch (ns)."""
        return min(1e9 * cpu / rows for rows, _, cpu in self.epochs)

    @property
    def cores(self) -> float:
        """Cores kept busy, over all epochs."""
        return sum(e[2] for e in self.epochs) / sum(e[1] for e in self.epochs)

    def cost(self) -> str:
        return f"{self.ns_per_row:.0f} ns of CPU a row, {self.cores:.2f} cores busy"


def timed(tally: Tally, run: Callable[[], int], pids: Iterable[int] = ()) -> None:
    """Run ``run`` (which returns the rows it made) and add its rows, wall and CPU time (this process and ``pids``)
    to ``tally``."""
    pids = list(pids)
    c0, t0 = cpu_seconds(pids), time.perf_counter()
    rows = run()
    wall = time.perf_counter() - t0
    tally.add(rows, wall, cpu_seconds(pids) - c0)


def reference_epoch(files: list[Path], columns: list[str], chunk: int) -> int:
    n = 0
    for df in pl.scan_parquet(files).select(columns).collect_batches(chunk_size=chunk):
        n += df.to_torch().shape[0]
    return n


def stream_epoch(ds: ShardStream, epoch: int, loader: WindowBatches | None = None) -> int:
    ds.set_epoch(epoch)
    n = 0
    for b in loader if loader is not None else ds:
        n += b["labels"].shape[0]
    return n


def stage_epochs(ds: ShardStream, epoch: int, read: Tally, gather: Tally) -> None:
    """The stream's two stages run alone, one after the other, on one epoch's plan: reading the shuffle windows
    (Polars), and gathering read windows into batch tensors in their permuted order (at most 8 windows are kept,
    and gathered round and round, so that they stay in memory)."""
    segments, sizes = ds._plan(epoch, 0, 1)
    reads, start = [], 0
    for group in windows(sizes, ds.buffer_size):
        n = sum(group)
        reads.append(take(segments, start, start + n))
        start += n
    frames: list[pl.DataFrame] = []

    def read_all() -> int:
        rows = 0
        for i, f in enumerate(ds._frames(reads)):
            rows += f.height
            if i < 8:
                frames.append(f)
        return rows

    def gather_all() -> int:
        rng, staging, rows = torch.Generator().manual_seed(0), {}, 0
        for i in range(len(reads)):
            f = frames[i % len(frames)]
            rows += ds._tensors(f, torch.randperm(f.height, generator=rng), staging=staging)["labels"].shape[0]
        return rows

    timed(read, read_all)
    timed(gather, gather_all)


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
    workers = [c.pid for c in multiprocessing.active_children()]  # every loader's; those of idle loaders wait
    ref, ours, unshuffled, read, gather = Tally(), Tally(), Tally(), Tally(), Tally()
    ours_w = {w: Tally() for w in counts}
    for r in range(1, args.repeats + 1):
        timed(ref, lambda: reference_epoch(files, columns, args.chunk))
        timed(ours, lambda r=r: stream_epoch(ds, r))
        timed(unshuffled, lambda r=r: stream_epoch(plain, r))
        stage_epochs(ds, r, read, gather)
        for w in counts:
            timed(ours_w[w], lambda r=r, w=w: stream_epoch(ds, r, loaders[w]), workers)
    ref_best = ref.best
    print(f"train rows: {rows:,} in {len(files)} shards; columns: {len(columns)}; batch size {args.batch_size}")
    print(
        f"reference  pl.scan_parquet.collect_batches({args.chunk}) + to_torch : {ref_best / 1e6:6.2f} M rows/s; "
        f"{ref.cost()}"
    )
    print(
        f"ShardStream shuffled, main process                         : {ours.best / 1e6:6.2f} M rows/s  "
        f"ratio {ours.best / ref_best:.2f}; {ours.cost()}"
    )
    print(
        f"ShardStream not shuffled, main process                     : {unshuffled.best / 1e6:6.2f} M rows/s  "
        f"ratio {unshuffled.best / ref_best:.2f} (the batching machinery alone); {unshuffled.cost()}"
    )
    print(
        f"  its stages alone: reading windows {read.best / 1e6:.2f} M rows/s ({read.best / ref_best:.2f}x the "
        f"reference; {read.cost()}), gathering them into tensors {gather.best / 1e6:.2f} M rows/s "
        f"({gather.cost()}); one after the other {1e-6 / (1 / read.best + 1 / gather.best):.2f}"
    )
    for w in counts:
        t = ours_w[w]
        print(
            f"ShardStream shuffled, {w} persistent spawned worker(s)      : {t.best / 1e6:6.2f} M rows/s  "
            f"ratio {t.best / ref_best:.2f}, {t.best / ours.best:.2f}x the main process "
            f"(first epoch with start-up: {startup[w]:.1f} s); {t.cost()} (workers included)"
        )
    cores = cpu_count()
    bound = cores / (read.ns_per_row + gather.ns_per_row) * 1e3  # M rows/s
    print(
        f"bounds on this machine's {cores} cores: the two stages cost {read.ns_per_row + gather.ns_per_row:.0f} "
        f"ns of CPU a row alone (cheapest epochs), so no schedule of them exceeds {bound:.1f} M rows/s = "
        f"{bound * 1e6 / ref_best:.2f}x the reference; the main-process stream keeps {ours.cores:.2f} cores busy, "
        f"so workers doing the same work a row can reach at most {cores / ours.cores:.2f}x its rate"
    )
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
