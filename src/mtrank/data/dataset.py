"""Streaming batches of tensors from processed Parquet shards.

:class:`ShardStream` is an ``IterableDataset`` that yields whole batches (dicts of tensors, see
:mod:`mtrank.data.spec`) built from Polars frames: no per-row Python work.

How rows are divided, every epoch (:mod:`mtrank.data.stream_plan`):

1. the shards are cut into chunks of ``chunk_rows`` rows (aligned with the Parquet row groups);
2. for training the chunk order is permuted with a generator seeded by (seed, epoch);
3. the concatenated row stream is cut into ``world_size`` contiguous, near-equal ranges, one per DDP rank;
4. each rank's range is cut into the same number of batches on every rank (so no rank waits at a collective
   for a batch that never comes), and those batches are dealt in contiguous blocks to the DataLoader workers;
5. each worker reads its rows in windows of whole batches, at least ``buffer_size`` rows each, and, for
   training, permutes every window (a shuffle buffer) as it gathers the rows into the batch tensors.

So every row is read exactly once per epoch across all ranks and workers, and the order is a function of
(seed, epoch, world size, number of workers) alone. Train shards are also shuffled once at processing, so a
window's chunks hold rows from all over the log, and the window permutation mixes them within each batch.

How a window is made: one thread reads windows (Polars, on its own threads, several windows per call, see
:meth:`ShardStream._frames`), another draws each window's permutation and gathers its rows in that order into one
matrix per kind of column (categorical, numeric, labels, ids), laid out column by column (see
:meth:`ShardStream._tensors`), and the consumer cuts the window into batches (views). DataLoader workers gather whole
windows into shared-memory buffers the main process made, and hand over only where a window lies in them
(:mod:`mtrank.data.loader`, :mod:`mtrank.data.shared_ring`).

Resuming mid-epoch: :meth:`ShardStream.resume_at` sets the epoch and the number of batches the DataLoader had
already delivered in it (Lightning's count of completed batches, kept by the DataModule in the checkpoint); the
stream then replays the same plan and shuffle windows and leaves out exactly those batches, so a resumed epoch
yields the batches the interrupted one had not yet trained on, in the same order (:func:`worker_skips` /
:func:`window_skips` map the loader's round-robin over workers back onto each worker's own batches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch.utils.data import IterableDataset, get_worker_info

from mtrank.data.shared_ring import SharedRing, aligned
from mtrank.data.spec import (
    CAT_PREFIX,
    ITEM_COL,
    LABEL_PREFIX,
    NUM_PREFIX,
    PTRUE_PREFIX,
    REQUEST_COL,
    FeatureSpec,
)
from mtrank.data.stream_plan import Segment, plan, rank_batches, take, window_skips, windows, worker_skips

READ_GROUP = 4  # windows read by one Polars call
READ_AHEAD = READ_GROUP + 1  # windows read ahead of the consumer (by one thread, in order): the next group is read
# while the current one is gathered
GATHER_AHEAD = 1  # windows gathered into tensors ahead of the consumer (by another thread, in order)


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

    def _kinds(self) -> list[tuple[str, list[str], torch.dtype]]:
        """(name, columns, dtype) of each matrix of a batch."""
        kinds = [
            ("categorical", self._cat, torch.int64),
            ("numeric", self._num, torch.float32),
            ("labels", self._lab, torch.float32),
            ("request_id", [REQUEST_COL], torch.int64),
            ("item_id", [ITEM_COL], torch.int64),
        ]
        return kinds + ([("p_true", self._pt, torch.float32)] if self._pt else [])

    def window_bytes(self, rows: int | None = None) -> int:
        """Bytes of a window of ``rows`` rows (default: the largest window, ``buffer_size`` + a batch) as tensors,
        each aligned as in a :class:`~mtrank.data.shared_ring.SharedRing` slot."""
        rows = self.buffer_size + self.batch_size if rows is None else rows
        return sum(aligned(rows * len(cols) * dt.itemsize) for _, cols, dt in self._kinds())

    def _tensors(
        self,
        df: pl.DataFrame,
        rows: torch.Tensor | None,
        alloc: Alloc | None = None,
        staging: dict[str, np.ndarray] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The window's rows ``rows`` (all, in order, if None) as batch tensors, one matrix per kind of column.

        Each matrix is laid out column by column: a C-contiguous ``[k, n]`` tensor, handed on as its ``[n, k]``
        transpose, so a batch (a slice of rows) is a view whose columns are contiguous runs. That makes the gather
        one pass per column: the column's Polars chunks are joined into a reused staging vector (a sequential
        copy), then ``index_select`` takes its values in the order ``rows``, from a source that fits in the core's
        cache, straight into the column of the matrix; a column whose dtype differs (ids of categories in int32,
        labels in uint8) is gathered in its own dtype and cast by a sequential copy. ``alloc(name, shape, dtype)``
        gives the ``[k, n]`` matrices (default: new tensors), in the order of :meth:`_kinds`; ``staging`` keeps
        the staging vectors for the next window."""
        alloc = alloc or _new_tensor
        staging = {} if staging is None else staging
        n = df.height if rows is None else len(rows)
        out = {}
        for name, cols, dtype in self._kinds():
            dest = alloc(name, (len(cols), n), dtype)
            for j, c in enumerate(cols):
                _column_into(df.get_column(c), rows, dest[j], staging)
            out[name] = dest.T
        # the ids as [n, 1] matrices: their column is a contiguous view, in the same (possibly shared) storage
        out["request_id"], out["item_id"] = out["request_id"][:, 0], out["item_id"][:, 0]
        return out

    def _frames(self, reads: Sequence[list[Segment]]) -> Iterator[pl.DataFrame]:
        """One DataFrame per entry of ``reads`` (the segments of one window, in order).

        Windows are cut from the row stream without regard to chunks, so a chunk often ends in one window and goes
        on in the next. Reading each window's segments on their own would decode the Parquet row group at every
        such cut twice, and pay a collect's set-up (about a millisecond: query plan, Parquet footer) per segment.
        So the segments of all windows are first joined into runs (a segment that continues the previous one in
        the same file extends it), runs are read whole, ``READ_GROUP`` windows' worth of rows by one
        ``pl.collect_all`` on Polars' own threads, and each window's frame is cut from the runs without a copy.
        A run is dropped once the last window that needs it is made."""
        group_rows = READ_GROUP * max(self.buffer_size, 1)
        runs: list[list[int]] = []  # [file, offset, length]
        parts: list[list[tuple[int, int, int]]] = []  # per window: (run, offset in the run, length) per segment
        for segments in reads:
            parts.append([])
            for seg in segments:
                offset, length = seg.offset, seg.length
                while length:
                    last = runs[-1] if runs else None
                    if last and last[0] == seg.file and last[1] + last[2] == offset and last[2] < group_rows:
                        take_n = min(length, group_rows - last[2])
                        last[2] += take_n
                    else:
                        take_n = min(length, group_rows)
                        runs.append([seg.file, offset, take_n])
                    parts[-1].append((len(runs) - 1, runs[-1][2] - take_n, take_n))
                    offset, length = offset + take_n, length - take_n
        last_use = {run: w for w, window in enumerate(parts) for run, _, _ in window}
        scans: dict[int, pl.LazyFrame] = {}

        def lazy(file: int, offset: int, length: int) -> pl.LazyFrame:
            if file not in scans:
                scans[file] = pl.scan_parquet(self.paths[file]).select(self._columns)
            return scans[file].slice(offset, length)

        loaded: dict[int, pl.DataFrame] = {}
        next_run = 0
        for w, window in enumerate(parts):
            while window and window[-1][0] >= next_run:  # runs are read in order: the last one is read last
                group, rows = [], 0
                while next_run < len(runs) and (not group or rows + runs[next_run][2] <= group_rows):
                    group.append(next_run)
                    rows += runs[next_run][2]
                    next_run += 1
                loaded.update(zip(group, pl.collect_all([lazy(*runs[r]) for r in group])))
            frames = [loaded[r].slice(o, n) for r, o, n in window]
            for r, _, _ in window:
                if last_use[r] == w:
                    loaded.pop(r, None)
            yield pl.concat(frames, rechunk=False) if len(frames) > 1 else frames[0]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for tensors, sizes, _ in self.iter_windows():
            pos = 0
            for size in sizes:
                yield {k: v[pos : pos + size] for k, v in tensors.items()}
                pos += size

    def _plan(self, epoch: int, worker: int, num_workers: int) -> tuple[list[Segment], list[int]]:
        return plan(
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

    def iter_windows(
        self, *, by_window: bool = False, ring: SharedRing | None = None
    ) -> Iterator[tuple[dict[str, torch.Tensor], list[int], int]]:
        """This worker's shuffle windows of the epoch: the tensors of the rows each still has to deliver, the
        sizes of the batches they make, and the slot of ``ring`` they live in (-1: none).

        ``by_window``: a DataLoader takes whole windows from its workers in turn (rather than batches), which is
        how a resume position is mapped back onto the workers. ``ring`` (in a DataLoader worker): the tensors are
        gathered into this worker's slots of the loader's shared-memory ring (:mod:`mtrank.data.shared_ring`), so
        that handing a window to the main process copies nothing; the main process releases the slot. A window
        that finds no free slot gets fresh shared-memory tensors."""
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.epoch
        skip = self.skip
        if skip:
            if by_window:
                batches = [
                    [len(g) for g in windows(self._plan(epoch, w, num_workers)[1], self.buffer_size)]
                    for w in range(num_workers)
                ]
                skips, first = window_skips(batches, skip)
            else:
                n = len(self)  # the workers hold contiguous blocks of the rank's batches, as in plan()
                counts = [n * (w + 1) // num_workers - n * w // num_workers for w in range(num_workers)]
                skips, first = worker_skips(counts, skip)
            worker = (worker + first) % num_workers  # this loader's first turn is the interrupted one's next
            skip = skips[worker]
        segments, sizes = self._plan(epoch, worker, num_workers)
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker])
        # the windows still to deliver: (segments to read, batch sizes, batches already delivered, rows, first row
        # to deliver). Each window's permutation is the next draw of ``rng``, in window order: windows delivered
        # whole before a restart draw theirs here, the others in the gather thread, which takes them in order
        work, start = [], 0
        for group in windows(sizes, self.buffer_size):
            n = sum(group)
            done = min(skip, len(group))  # batches of this window delivered before a restart
            skip -= done
            first = sum(group[:done])
            if done == len(group):
                if self.shuffle:
                    rng.permutation(n)  # keep the draws of the windows after it as they were
            elif self.shuffle:  # a shuffled window is read whole: its permutation decides which rows were delivered
                work.append((take(segments, start, start + n), group, done, n, first))
            else:  # an unshuffled one from its first undelivered row
                work.append((take(segments, start + first, start + n), group, done, n - first, 0))
            start += n
        reads = [w[0] for w in work]

        def rows_of(i: int) -> torch.Tensor | None:
            """The rows of window i still to deliver, in the order they are delivered (all, in order, if None)."""
            _, _, _, n, first = work[i]
            return torch.from_numpy(rng.permutation(n)[first:]) if self.shuffle else None

        frames = self._frames(reads)
        staging: dict[str, np.ndarray] = {}  # the gather thread's staging vectors, reused window after window
        # a three-stage pipeline: one thread reads windows (READ_AHEAD windows ahead), one
        # gathers them into tensors (GATHER_AHEAD windows ahead), and the consumer trains on the current one.
        # Polars, NumPy and torch release the GIL, so the stages can overlap (on README "Performance"'s 2-core machine
        # they hardly do: each slows the other); each stage is one thread, so windows keep their order and the stream
        # is the same as a sequential one.
        n = len(work)

        def gather(i: int, frame: pl.DataFrame) -> tuple[dict[str, torch.Tensor], int]:
            if ring is None:
                return self._tensors(frame, rows_of(i), staging=staging), -1
            wid = info.id if info is not None else 0
            n_rows = work[i][3] - work[i][4]
            slot = ring.claim(wid, self.window_bytes(n_rows))
            if slot < 0:  # fresh tensors, handed over the ordinary way
                return self._tensors(frame, rows_of(i), _shared_tensor, staging), -1
            offset = [0]

            def alloc(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
                t = ring.view(wid, slot, offset[0], shape, dtype)
                offset[0] += aligned(t.numel() * t.element_size())
                return t

            return self._tensors(frame, rows_of(i), alloc, staging), slot

        read: list = [None] * n
        made: list = [None] * n
        with ThreadPoolExecutor(max_workers=1) as reader, ThreadPoolExecutor(max_workers=1) as gatherer:

            def read_ahead(i: int) -> None:
                if i < n and read[i] is None:
                    read[i] = reader.submit(next, frames)

            def gather_read(i: int) -> tuple[dict[str, torch.Tensor], int]:
                frame = read[i].result()
                read[i] = None  # release the frame once gathered
                return gather(i, frame)

            for i in range(READ_AHEAD):
                read_ahead(i)
            for i in range(min(GATHER_AHEAD, n)):
                made[i] = gatherer.submit(gather_read, i)
            for i, (_, group, done, _, _) in enumerate(work):
                read_ahead(i + READ_AHEAD)
                if i + GATHER_AHEAD < n:
                    made[i + GATHER_AHEAD] = gatherer.submit(gather_read, i + GATHER_AHEAD)
                tensors, slot = made[i].result()
                made[i] = None  # release it once handed on
                yield tensors, group[done:], slot


Alloc = Callable[[str, tuple[int, ...], torch.dtype], torch.Tensor]


def _new_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype)


def _shared_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype).share_memory_()


def _column_into(
    series: pl.Series, rows: torch.Tensor | None, out: torch.Tensor, staging: dict[str, np.ndarray]
) -> None:
    """``out[i] = series[rows[i]]`` (``out[:] = series`` if ``rows`` is None), cast to ``out``'s dtype. A window's
    frame holds one chunk per Parquet row group read; converting a chunk to NumPy copies nothing."""
    chunks = [c.to_numpy() for c in series.get_chunks()] or [series.to_numpy()]
    if rows is None:  # in file order: the chunks copied (and cast) into place
        np.concatenate(chunks, out=out.numpy())
        return
    source = _scratch(staging, "source", chunks[0].dtype, len(series))  # the whole column in one piece
    np.concatenate(chunks, out=source)
    if source.dtype == out.numpy().dtype:
        torch.index_select(torch.from_numpy(source), 0, rows, out=out)
    else:  # gathered in the column's own dtype (fewer bytes to fetch), then cast
        taken = torch.from_numpy(_scratch(staging, "taken", source.dtype, len(rows)))
        torch.index_select(torch.from_numpy(source), 0, rows, out=taken)
        out.copy_(taken)


def _scratch(staging: dict[str, np.ndarray], use: str, dtype: np.dtype, n: int) -> np.ndarray:
    """A vector of ``n`` values of ``dtype`` for ``use``, reusing (a prefix of) the one an earlier column had."""
    key = f"{use}:{np.dtype(dtype).str}"
    buf = staging.get(key)
    if buf is None or buf.size < n:
        buf = staging[key] = np.empty(max(n, 1), dtype=dtype)
    return buf[:n]
