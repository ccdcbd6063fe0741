"""How the rows of processed shards are divided into batches, every epoch (see :mod:`mtrank.data.dataset`).

Pure functions of (row counts, batch size, seed, epoch, rank, world size, worker, number of workers): which
segments of which files each DataLoader worker of each DDP rank reads, the sizes of its batches, how batches are
grouped into shuffle windows, and where each worker resumes after a loader delivered part of an epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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


def take(segments: Sequence[Segment], start: int, stop: int) -> list[Segment]:
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
    return take(chunks, start, start + sum(mine)), mine


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


def window_skips(windows_per_worker: Sequence[Sequence[int]], skip: int) -> tuple[list[int], int]:
    """:func:`worker_skips` for a loader that takes whole windows from its workers in turn (one item per window):
    ``windows_per_worker`` holds the number of batches in each of every worker's windows. Returns how many of its
    own batches each worker had delivered after the first ``skip`` batches of the epoch, and the worker that
    delivers next (the one whose window was cut short, if any: it delivers the rest of that window first)."""
    left = [list(w) for w in windows_per_worker]
    nxt = [0] * len(left)  # each worker's next window
    out = [0] * len(left)
    total = sum(sum(w) for w in left)
    if skip > total:
        raise ValueError(f"cannot skip {skip} batches of an epoch that has {total}")
    pos = 0
    while skip > 0:
        w = pos % len(left)
        if nxt[w] < len(left[w]):
            k = left[w][nxt[w]]
            if skip < k:  # cut short inside this window: its worker goes on with the rest of it
                out[w] += skip
                return out, w
            nxt[w] += 1
            out[w] += k
            skip -= k
        pos += 1
    while any(nxt[w] < len(left[w]) for w in range(len(left))) and nxt[pos % len(left)] >= len(left[pos % len(left)]):
        pos += 1
    return out, pos % len(left)
