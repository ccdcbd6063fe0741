"""Streaming batches of tensors from processed Parquet shards.

:class:`ShardStream` is an ``IterableDataset`` that yields whole batches (dicts of tensors, see
:mod:`mtrank.data.spec`) built from Polars frames: no per-row Python work.

How rows are divided, every epoch:

1. the shards are cut into chunks of ``chunk_rows`` rows (aligned with the Parquet row groups);
2. for training the chunk order is permuted with a generator seeded by (seed, epoch);
3. the concatenated row stream is cut into ``world_size`` contiguous, near-equal ranges, one per DDP rank;
4. each rank's range is cut into the same number of batches on every rank (so no rank waits at a collective
   for a batch that never comes), and those batches are dealt in contiguous blocks to the DataLoader workers;
5. each worker reads its rows in windows of about ``buffer_size`` rows and, for training, permutes every window
   (a shuffle buffer) before slicing its batches.

So every row is read exactly once per epoch across all ranks and workers, and the order is a function of
(seed, epoch, world size, number of workers) alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import polars as pl
import torch
from torch.utils.data import IterableDataset, get_worker_info

from mtrank.data.spec import CAT_PREFIX, ITEM_COL, LABEL_PREFIX, NUM_PREFIX, PTRUE_PREFIX, REQUEST_COL, FeatureSpec


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
        self._cat = [CAT_PREFIX + f.name for f in spec.categorical]
        self._num = [NUM_PREFIX + n for n in spec.numeric]
        self._lab = [LABEL_PREFIX + t for t in spec.tasks]
        # p_true is for evaluation against the truth; training batches can leave it out
        self._pt = [PTRUE_PREFIX + t for t in spec.tasks] if spec.has_p_true and with_p_true else []
        self._columns = [REQUEST_COL, ITEM_COL, *self._cat, *self._num, *self._lab, *self._pt]

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = int(epoch)

    def set_distributed(self, rank: int, world_size: int) -> None:
        self.rank, self.world_size = int(rank), int(world_size)

    def __len__(self) -> int:
        return rank_batches(self.rows, self.batch_size, self.world_size)

    def _read(self, seg: Segment) -> pl.DataFrame:
        return pl.scan_parquet(self.paths[seg.file]).select(self._columns).slice(seg.offset, seg.length).collect()

    def _tensors(self, df: pl.DataFrame) -> dict[str, torch.Tensor]:
        n = df.height
        out = {
            "categorical": _matrix(df, self._cat, np.int64, n),
            "numeric": _matrix(df, self._num, np.float32, n),
            "labels": _matrix(df, self._lab, np.float32, n),
            "request_id": torch.from_numpy(df[REQUEST_COL].to_numpy(writable=True).astype(np.int64, copy=False)),
            "item_id": torch.from_numpy(df[ITEM_COL].to_numpy(writable=True).astype(np.int64, copy=False)),
        }
        if self._pt:
            out["p_true"] = _matrix(df, self._pt, np.float32, n)
        return out

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.epoch
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
        carry: pl.DataFrame | None = None
        pending: list[pl.DataFrame] = []
        pending_rows = 0
        queue = list(sizes)
        for i, seg in enumerate(segments):
            pending.append(self._read(seg))
            pending_rows += seg.length
            last = i == len(segments) - 1
            if pending_rows < self.buffer_size and not last:
                continue
            # one window: concatenate, permute (the shuffle buffer), convert to tensors once, slice batches
            window = pl.concat(([carry] if carry is not None else []) + pending, rechunk=False)
            pending, pending_rows = [], 0
            if self.shuffle:
                window = window[rng.permutation(window.height)]
            tensors = self._tensors(window)
            n, pos = window.height, 0
            while queue and n - pos >= queue[0]:
                size = queue.pop(0)
                yield {k: v[pos : pos + size] for k, v in tensors.items()}
                pos += size
            carry = window.slice(pos) if pos < n else None
        if queue:
            raise RuntimeError(f"internal error: {len(queue)} batches left unfilled")


def _matrix(df: pl.DataFrame, cols: list[str], dtype, n: int) -> torch.Tensor:
    if not cols:
        return torch.empty((n, 0), dtype=torch.from_numpy(np.empty(0, dtype=dtype)).dtype)
    arr = np.ascontiguousarray(df.select(cols).to_numpy().astype(dtype, copy=False))
    return torch.from_numpy(arr)
