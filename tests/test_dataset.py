import numpy as np
import polars as pl
import pytest
import torch

from conftest import pipeline_mapping
from mtrank.data.config import PipelineConfig
from mtrank.data.dataset import ShardStream
from mtrank.data.loader import window_loader
from mtrank.data.pipeline import process
from mtrank.data.stream_plan import (
    batch_sizes,
    plan,
    rank_batches,
    take,
    window_skips,
    windows,
    worker_skips,
)


@pytest.fixture
def processed(tmp_path, log_file):
    # tiny shards and row groups so that rows span several files and chunks
    m = pipeline_mapping(log_file, rows_per_shard=37, row_group_size=8)
    return process(PipelineConfig.from_mapping(m), tmp_path / "proc")


def _stream(processed, split="train", **kw) -> ShardStream:
    kw.setdefault("batch_size", 7)
    return ShardStream(processed.files(split), processed.spec, chunk_rows=8, buffer_size=20, **kw)


def _keys(batches) -> list[tuple[int, int]]:
    out = []
    for b in batches:
        out += list(zip(b["request_id"].tolist(), b["item_id"].tolist(), b["labels"][:, 0].tolist()))
    return out


def _all_rows(processed, split="train") -> list[tuple[int, int]]:
    df = pl.concat([pl.read_parquet(p) for p, _ in processed.files(split)])
    return list(zip(df["request_id"].to_list(), df["item_id"].to_list(), df["label__save"].cast(float).to_list()))


def test_batches_are_tensors_with_the_spec_layout(processed):
    spec = processed.spec
    b = next(iter(_stream(processed)))
    assert b["categorical"].dtype == torch.int64 and b["categorical"].shape[1] == spec.n_categorical
    assert b["numeric"].dtype == torch.float32 and b["numeric"].shape[1] == spec.n_numeric
    assert b["labels"].shape == (7, spec.n_tasks)
    assert "p_true" not in b  # the hand-made log has no p_true columns


@pytest.mark.parametrize("world,workers", [(1, 1), (2, 1), (1, 3), (3, 2)])
def test_plan_covers_every_row_once_with_equal_batches_per_rank(world, workers):
    rows = [37, 37, 5, 101]
    for shuffle in (False, True):
        seen, counts = [], []
        for r in range(world):
            n = 0
            for w in range(workers):
                segs, sizes = plan(
                    rows,
                    7,
                    shuffle=shuffle,
                    seed=3,
                    epoch=1,
                    rank=r,
                    world_size=world,
                    worker=w,
                    num_workers=workers,
                    chunk_rows=8,
                )
                assert sum(s.length for s in segs) == sum(sizes) and all(0 < s <= 7 for s in sizes)
                n += len(sizes)
                for s in segs:
                    start = sum(rows[: s.file]) + s.offset
                    seen += range(start, start + s.length)
            counts.append(n)
        assert sorted(seen) == list(range(sum(rows)))
        assert len(set(counts)) == 1 and counts[0] == rank_batches(rows, 7, world)


def test_batch_sizes_spread_rows_when_a_rank_is_one_short():
    assert batch_sizes(21, 3, 7) == [7, 7, 7]
    assert batch_sizes(14, 3, 7) == [5, 5, 4]  # 15 rows on the largest rank → 3 batches everywhere
    assert sum(batch_sizes(20, 3, 7)) == 20


def test_every_row_exactly_once_across_two_ranks_and_two_workers(processed):
    """Real DataLoader workers (spawned, as the DataModule does), two simulated DDP ranks."""
    expected = sorted(_all_rows(processed))
    got, per_rank = [], []
    for rank in range(2):
        ds = _stream(processed, shuffle=True, seed=5, rank=rank, world_size=2)
        ds.set_epoch(2)
        loader = window_loader(ds, num_workers=2, multiprocessing_context="spawn")
        batches = list(loader)
        assert all(b["labels"].is_shared() for b in batches)  # handed over through shared memory
        per_rank.append(len(batches))
        assert len(batches) == len(ds)
        got += _keys(batches)
    assert sorted(got) == expected
    assert per_rank[0] == per_rank[1]


@pytest.mark.parametrize("rank", [0, 1])
def test_shuffled_batches_are_the_planned_rows_in_each_windows_permutation(processed, rank):
    """What the stream delivers, rebuilt the plain way: the plan's segments, read whole with Polars, cut into
    windows, each window's rows in the order of a permutation drawn from (seed, epoch, rank, worker). Windows cut
    chunks in two here (chunks of 8 rows, windows of 21), which the stream reads as one run."""
    ds = _stream(processed, shuffle=True, seed=4, rank=rank, world_size=2)
    ds.set_epoch(1)
    files = [pl.read_parquet(p) for p, _ in processed.files("train")]
    segments, sizes = plan(
        ds.rows, 7, shuffle=True, seed=4, epoch=1, rank=rank, world_size=2, worker=0, num_workers=1, chunk_rows=8
    )
    rng = np.random.default_rng([4, 1, rank, 0])
    expected, start, spans = [], 0, []
    for group in windows(sizes, 20):
        n = sum(group)
        parts = take(segments, start, start + n)
        spans.append(len(parts))
        rows = pl.concat([files[s.file].slice(s.offset, s.length) for s in parts])[rng.permutation(n)]
        expected += list(zip(rows["request_id"], rows["item_id"], rows["label__save"].cast(float)))
        start += n
    assert max(spans) > 1  # windows that span chunks
    assert _keys(list(ds)) == expected


def test_shuffle_is_deterministic_per_seed_and_changes_with_epoch(processed):
    def order(seed, epoch):
        ds = _stream(processed, shuffle=True, seed=seed)
        ds.set_epoch(epoch)
        return _keys(list(ds))

    a = order(1, 0)
    assert a == order(1, 0)
    assert a != order(1, 1)
    assert a != order(2, 0)
    assert sorted(a) == sorted(order(1, 1)) == sorted(_all_rows(processed))
    plain = _keys(list(_stream(processed)))
    assert plain == _all_rows(processed)  # no shuffle: file order


def test_worker_skips_follow_the_loaders_round_robin():
    # the loader takes one batch per worker in turn, skipping workers that are done
    # (batches each worker had delivered, the worker whose turn is next)
    assert worker_skips([3, 3], 0) == ([0, 0], 0)
    assert worker_skips([3, 3], 3) == ([2, 1], 1)
    assert worker_skips([2, 3], 4) == ([2, 2], 1)
    assert worker_skips([1, 2, 2], 4) == ([1, 2, 1], 2)
    assert worker_skips([1, 2, 2], 3) == ([1, 1, 1], 1)  # worker 0 is done: worker 1's turn
    with pytest.raises(ValueError, match="cannot skip 6 batches of an epoch that has 5"):
        worker_skips([2, 3], 6)


def test_window_skips_follow_the_loaders_round_robin_over_windows():
    # each worker's windows (batches per window); the loader takes one window per worker in turn
    ws = [[3, 2], [3, 1]]
    assert window_skips(ws, 0) == ([0, 0], 0)
    assert window_skips(ws, 3) == ([3, 0], 1)  # worker 0's first window delivered: worker 1's turn
    assert window_skips(ws, 4) == ([3, 1], 1)  # inside worker 1's first window: it goes on with the rest
    assert window_skips(ws, 6) == ([3, 3], 0)
    assert window_skips(ws, 8) == ([5, 3], 1)
    assert window_skips([[2], [3, 1]], 5) == ([2, 3], 1)  # worker 0 is done: worker 1 again
    with pytest.raises(ValueError, match="cannot skip 10 batches of an epoch that has 9"):
        window_skips(ws, 10)


def test_windows_hold_whole_batches_of_at_least_the_buffer():
    assert windows([7, 7, 7, 7, 3], 20) == [[7, 7, 7], [7, 3]]
    assert windows([7, 7], 7) == [[7], [7]]


def test_the_loader_yields_the_streams_batches_in_order(processed):
    ds = _stream(processed, shuffle=True, seed=4)
    ds.set_epoch(1)
    direct = [_keys([b]) for b in ds]
    via = [_keys([b]) for b in window_loader(ds)]
    assert via == direct and len(via) == len(window_loader(ds))


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_epoch_yields_exactly_the_batches_not_yet_delivered(processed, workers):
    """A stream resumed after k batches of an epoch yields the interrupted epoch's batches k, k+1, ... in order
    (through the DataModule's loader with spawned workers, whose round-robin over windows the skip has to follow)."""

    def epoch_batches(ds):
        ctx = "spawn" if workers else None
        return [_keys([b]) for b in window_loader(ds, num_workers=workers, multiprocessing_context=ctx)]

    full_ds = _stream(processed, shuffle=True, seed=3)
    full_ds.set_epoch(1)
    full = epoch_batches(full_ds)
    assert len(full) == len(full_ds) >= 5
    # in-process every position; with spawned workers (slow to start) one that rotates the workers' turns
    for k in range(1, len(full)) if workers == 0 else (3, 4):
        ds = _stream(processed, shuffle=True, seed=3)
        ds.resume_at(epoch=1, batches_done=k)
        assert epoch_batches(ds) == full[k:]
        ds.set_epoch(1)  # the epoch-start hook of the same epoch keeps the position
        assert ds.skip == k
        ds.set_epoch(2)  # the next epoch starts from its first batch
        assert ds.skip == 0
    # a position at the end of an epoch is the start of the next one
    ds = _stream(processed, shuffle=True, seed=3)
    ds.resume_at(epoch=0, batches_done=len(full))
    assert (ds.epoch, ds.skip) == (1, 0)
    if workers == 0:
        assert epoch_batches(ds) == full


def test_shuffled_order_is_far_from_file_order_and_from_the_last_epoch(processed):
    """Order statistics of the shuffle: stream positions are uncorrelated with file positions and with the
    previous epoch's positions, and a batch draws its rows from several read chunks."""
    file_pos = {k: i for i, k in enumerate(_all_rows(processed))}

    def positions(epoch):
        ds = _stream(processed, shuffle=True, seed=0)
        ds.set_epoch(epoch)
        batches = list(ds)
        order = [file_pos[k] for k in _keys(batches)]
        chunks_per_batch = [len({file_pos[k] // 8 for k in _keys([b])}) for b in batches]
        return order, chunks_per_batch

    def corr(a, b):
        return float(torch.corrcoef(torch.tensor([a, b], dtype=torch.float64))[0, 1])

    e0, chunks0 = positions(0)
    e1, _ = positions(1)
    by_row0 = [p for _, p in sorted(zip(e0, range(len(e0))))]  # stream position of each file row, epoch 0
    by_row1 = [p for _, p in sorted(zip(e1, range(len(e1))))]
    assert abs(corr(list(range(len(e0))), e0)) < 0.3
    assert abs(corr(by_row0, by_row1)) < 0.3
    assert sum(chunks0) / len(chunks0) >= 2  # a batch of 7 rows mixes rows of at least two 8-row chunks


def test_batches_kept_by_the_consumer_are_never_overwritten_by_later_windows(processed):
    """Spawned workers reuse their ring's buffers only once the main process released them: batches a consumer
    holds on to keep their values while the workers go on (here: through a whole second epoch)."""
    ds = _stream(processed, shuffle=True, seed=2)
    loader = window_loader(ds, num_workers=2, multiprocessing_context="spawn", persistent_workers=True)
    ds.set_epoch(0)
    kept = list(loader)
    copies = [{k: v.clone() for k, v in b.items()} for b in kept]
    for epoch in (1, 2):
        ds.set_epoch(epoch)
        second = [_keys([b]) for b in loader]  # not kept: their slots are released and reused
        assert sorted(k for b in second for k in b) == sorted(_keys(copies))
    assert all(torch.equal(b[k], c[k]) for b, c in zip(kept, copies) for k in b)
