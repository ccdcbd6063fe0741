"""Streaming batches of tensors from processed Parquet shards.

:class:`ShardStream` is an ``IterableDataset`` that yields whole batches (dicts of tensors, see
:mod:`mtrank.data.spec`) built from Polars frames: no per-row Python work.

How rows are divided, every epoch:

1. the shards are cut into chunks of ``chunk_rows`` rows (aligned with the Parquet row groups);
2. for training the chunk order is permuted with a generator seeded by (seed, epoch);
3. the concatenated row stream is cut into ``world_size`` contiguous, near-equal ranges, one per DDP rank;
4. each rank's range is cut into the same number of batches on every rank (so no rank waits at a collective
   for a batch that never comes), and those batches are dealt in contiguous blocks to the DataLoader workers;
5. each worker reads its rows in windows of whole batches, at least ``buffer_size`` rows each, and, for
   training, permutes every window (a shuffle buffer) as it gathers the rows into the batch tensors.

So every row is read exactly once per epoch across all ranks and workers, and the order is a function of
(seed, epoch, world size, number of workers) alone.

Resuming mid-epoch: :meth:`ShardStream.resume_at` sets the epoch and the number of batches the DataLoader had
already delivered in it (Lightning's count of completed batches, kept by the DataModule in the checkpoint); the
stream then replays the same plan and shuffle windows and leaves out exactly those batches, so a resumed epoch
yields the batches the interrupted one had not yet trained on, in the same order (:func:`worker_skips` maps the
DataLoader's round-robin over workers back onto each worker's own batches).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch.utils.data import IterableDataset, get_worker_info

from mtrank.data.spec import (
    CAT_PREFIX,
    ITEM_COL,
    LABEL_PREFIX,
    NUM_PREFIX,
    PTRUE_PREFIX,
    REQUEST_COL,
    FeatureSpec,
)

PREFETCH = 1  # windows read and converted ahead of the consumer, each in its own thread


@dataclass(frozen=True)
class Segment:
    file: int
    offset: int
    length: int


def _chunks(rows: Sequence[int], chunk_rows: int) -> list[Segment]:
    out = []
    for f, n in enumerate(rows):
        for off in range(0, n, chunk_rows):
            out.append(Segment(f, off, min(chunk_rows, n - off)))
    return out


def _take(segments: Sequence[Segment], start: int, stop: int) -> list[Segment]:
    """The parts of the concatenated segments that cover stream rows [start, stop)."""
    out, pos = [], 0
    for s in segments:
        a, b = max(start, pos), min(stop, pos + s.length)
        if a < b:
            out.append(Segment(s.file, s.offset + a - pos, b - a))
        pos += s.length
        if pos >= stop:
            break
    return out


def batch_sizes(n_rows: int, n_batches: int, batch_size: int) -> list[int]:
    """``n_batches`` batch sizes, each at most ``batch_size``, that add up to ``n_rows`` (full batches first)."""
    if n_batches == 0:
        return []
    full = [batch_size] * (n_batches - 1)
    last = n_rows - batch_size * (n_batches - 1)
    if last > 0:
        return full + [last]
    # this rank holds one row less than the largest rank and that fell on a batch boundary: spread its rows
    if n_rows < n_batches:
        raise ValueError(
            f"cannot cut {n_rows} rows into {n_batches} non-empty batches: use a batch size of at least 2 "
            "or fewer ranks than rows"
        )
    base, extra = divmod(n_rows, n_batches)
    return [base + 1] * extra + [base] * (n_batches - extra)


def plan(
    rows: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    worker: int = 0,
    num_workers: int = 1,
    chunk_rows: int = 16_384,
) -> tuple[list[Segment], list[int]]:
    """The segments one worker of one rank reads in an epoch, and the sizes of the batches it yields."""
    chunks = _chunks(rows, chunk_rows)
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(len(chunks))
        chunks = [chunks[i] for i in order]
    total = sum(rows)
    if total < world_size:
        raise ValueError(f"{total} rows cannot be divided among {world_size} ranks")
    bounds = [r * total // world_size for r in range(world_size + 1)]
    largest = max(bounds[r + 1] - bounds[r] for r in range(world_size))
    n_batches = -(-largest // batch_size)
    rank_rows = bounds[rank + 1] - bounds[rank]
    sizes = batch_sizes(rank_rows, n_batches, batch_size)
    # contiguous blocks of batches per worker
    per = [len(sizes) * w // num_workers for w in range(num_workers + 1)]
    mine = sizes[per[worker] : per[worker + 1]]
    start = bounds[rank] + sum(sizes[: per[worker]])
    return _take(chunks, start, start + sum(mine)), mine


def rank_batches(rows: Sequence[int], batch_size: int, world_size: int) -> int:
    """How many batches every rank yields in an epoch."""
    total = sum(rows)
    largest = max((r + 1) * total // world_size - r * total // world_size for r in range(world_size))
    return -(-largest // batch_size)


def worker_skips(batches_per_worker: Sequence[int], skip: int) -> tuple[list[int], int]:
    """Where each DataLoader worker resumes after the loader delivered its first ``skip`` batches of an epoch.

    The loader takes one batch from each worker in turn (0, 1, ..., skipping workers that are done). Returns how
    many of its own batches each worker had delivered, and the worker that delivers the next batch: a resumed
    loader starts its turns at worker 0 again, so the stream rotates the workers' roles by that much."""
    left = list(batches_per_worker)
    out = [0] * len(left)
    if skip > sum(left):
        raise ValueError(f"cannot skip {skip} batches of an epoch that has {sum(left)}")
    pos = 0
    while skip > 0:
        w = pos % len(left)
        if left[w] > 0:
            left[w] -= 1
            out[w] += 1
            skip -= 1
        pos += 1
    while any(left) and left[pos % len(left)] == 0:
        pos += 1
    return out, pos % len(left)


class ShardStream(IterableDataset):
    """Batches from processed shards; see the module docstring for how rows are divided."""

    def __init__(
        self,
        files: Sequence[tuple[Path, int]],
        spec: FeatureSpec,
        batch_size: int,
        *,
        shuffle: bool = False,
        buffer_size: int = 65_536,
        seed: int = 0,
        chunk_rows: int = 16_384,
        rank: int = 0,
        world_size: int = 1,
        with_p_true: bool = True,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.paths = [str(p) for p, _ in files]
        self.rows = [int(n) for _, n in files]
        self.spec = spec
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.buffer_size = int(buffer_size)
        self.seed = int(seed)
        self.chunk_rows = int(chunk_rows)
        self.rank = rank
        self.world_size = world_size
        # shared memory: persistent (spawned) DataLoader workers see set_epoch() of the main process
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        # batches of the current epoch already delivered before a restart (see resume_at)
        self._skip = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._cat = [CAT_PREFIX + f.name for f in spec.categorical]
        self._num = [NUM_PREFIX + n for n in spec.numeric]
        self._lab = [LABEL_PREFIX + t for t in spec.tasks]
        # p_true is for evaluation against the truth; training batches can leave it out
        self._pt = [PTRUE_PREFIX + t for t in spec.tasks] if spec.has_p_true and with_p_true else []
        self._columns = [REQUEST_COL, ITEM_COL, *self._cat, *self._num, *self._lab, *self._pt]

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    @property
    def skip(self) -> int:
        return int(self._skip[0])

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its first batch (a resume position set for this same epoch is kept)."""
        if int(epoch) != self.epoch:
            self._skip[0] = 0
        self._epoch[0] = int(epoch)

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Continue ``epoch`` after the first ``batches_done`` batches the DataLoader delivered; a position at or
        past the end of the epoch means the start of the next one."""
        if batches_done >= len(self):
            epoch, batches_done = epoch + 1, 0
        self._epoch[0] = int(epoch)
        self._skip[0] = int(batches_done)

    def set_distributed(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = int(rank), int(world_size)

    def __len__(self) -> int:
        return rank_batches(self.rows, self.batch_size, self.world_size)

    def _read(self, seg: Segment, scans: dict[int, pl.LazyFrame]) -> pl.DataFrame:
        if seg.file not in scans:  # one scan per file and iteration: its Parquet metadata is read once
            scans[seg.file] = pl.scan_parquet(self.paths[seg.file]).select(self._columns)
        return scans[seg.file].slice(seg.offset, seg.length).collect()

    def _read_window(self, segments: Sequence[Segment], scans: dict[int, pl.LazyFrame]) -> pl.DataFrame:
        return pl.concat([self._read(seg, scans) for seg in segments], rechunk=False)

    def _tensors(self, df: pl.DataFrame, rows: np.ndarray | None) -> dict[str, torch.Tensor]:
        """The window's rows ``rows`` (all, in order, if None) as batch tensors: each column is gathered and
        converted straight into its place in a C-contiguous matrix (one pass over the data, no Polars gather)."""
        out = {
            "categorical": _gather(df, self._cat, np.int64, rows),
            "numeric": _gather(df, self._num, np.float32, rows),
            "labels": _gather(df, self._lab, np.float32, rows),
            "request_id": _gather(df, [REQUEST_COL], np.int64, rows)[:, 0],
            "item_id": _gather(df, [ITEM_COL], np.int64, rows)[:, 0],
        }
        if self._pt:
            out["p_true"] = _gather(df, self._pt, np.float32, rows)
        return out

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.epoch
        skip = self.skip
        if skip:
            n = len(self)  # the workers hold contiguous blocks of the rank's batches, as in plan()
            counts = [n * (w + 1) // num_workers - n * w // num_workers for w in range(num_workers)]
            skips, first = worker_skips(counts, skip)
            worker = (worker + first) % num_workers  # this loader's first turn is the interrupted one's next
            skip = skips[worker]
        segments, sizes = plan(
            self.rows,
            self.batch_size,
            shuffle=self.shuffle,
            seed=self.seed,
            epoch=epoch,
            rank=self.rank,
            world_size=self.world_size,
            worker=worker,
            num_workers=num_workers,
            chunk_rows=self.chunk_rows,
        )
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker])
        # which windows to read, and the rows of each: drawn up front, in order, for skipped windows too (so that
        # a resumed stream permutes the windows it reads exactly as the interrupted one did)
        work, start = [], 0
        for group in windows(sizes, self.buffer_size):
            n = sum(group)
            perm = rng.permutation(n) if self.shuffle else None  # the shuffle buffer: the window's rows permuted
            done = min(skip, len(group))  # batches of this window delivered before a restart
            skip -= done
            if done < len(group):
                work.append((_take(segments, start, start + n), group, done, perm))
            start += n
        scans: dict[int, pl.LazyFrame] = {}
        # windows are read and gathered into tensors ahead, in PREFETCH threads (Polars and NumPy release the GIL),
        # while the consumer trains on the current one; results are taken in order, so the stream is unchanged
        with ThreadPoolExecutor(max_workers=PREFETCH) as pool:
            futures = [pool.submit(self._window_tensors, w, scans) for w in work[:PREFETCH]]
            for i, (_, group, done, _) in enumerate(work):
                tensors = futures[i].result()
                futures[i] = None  # release it once consumed
                if i + PREFETCH < len(work):
                    futures.append(pool.submit(self._window_tensors, work[i + PREFETCH], scans))
                pos = 0
                for size in group[done:]:
                    yield {k: v[pos : pos + size] for k, v in tensors.items()}
                    pos += size

    def _window_tensors(self, item, scans: dict[int, pl.LazyFrame]) -> dict[str, torch.Tensor]:
        """Read one window and gather the rows still to be delivered, in their shuffled order, into tensors."""
        segments, group, done, perm = item
        frame = self._read_window(segments, scans)
        first = sum(group[:done])
        rows = perm[first:] if perm is not None else None
        if rows is None and first:
            frame = frame.slice(first)
        return self._tensors(frame, rows)


def windows(sizes: Sequence[int], buffer_size: int) -> list[list[int]]:
    """Consecutive groups of the batch sizes, each of at least ``buffer_size`` rows but the last: a shuffle
    window always holds whole batches."""
    out: list[list[int]] = []
    group: list[int] = []
    rows = 0
    for size in sizes:
        group.append(size)
        rows += size
        if rows >= buffer_size:
            out.append(group)
            group, rows = [], 0
    if group:
        out.append(group)
    return out


def _gather(df: pl.DataFrame, cols: list[str], dtype, rows: np.ndarray | None) -> torch.Tensor:
    n = df.height if rows is None else len(rows)
    out = np.empty((n, len(cols)), dtype=dtype)
    for j, c in enumerate(cols):
        values = df.get_column(c).to_numpy()  # no copy for a single-chunk column without nulls
        out[:, j] = values if rows is None else values[rows]
    return torch.from_numpy(out)
