"""Write processed splits as Parquet shards: val/test in input order, train shuffled bucket by bucket."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from mtrank.data.config import PipelineConfig
from mtrank.data.spec import (
    CAT_PREFIX,
    LABEL_PREFIX,
    ROW_INDEX,
)
from mtrank.data.splits import SPLIT_CODE, SPLITS, split_code

SHUFFLE_KEY = "__shuffle_key"


SHUFFLE_ROWS = 2_000_000  # train rows held in memory at once while shuffling (one bucket)


SHUFFLE_SALT = 0x6D7472616E6B2D73


def sink_by_split(plan: pl.LazyFrame, work: Path, splits: Sequence[str], row_group_size: int) -> dict[str, list[Path]]:
    """Write the rows of ``plan`` to ``work/__split=<code>/*.parquet`` by their ``__split`` (dropped), in order.

    One streaming pass with Polars' partitioned sink where this Polars has it, else one pass per split.
    """
    opts = dict(compression="lz4", statistics=False, row_group_size=row_group_size)
    folders = {s: work / f"{SPLIT_CODE}={SPLITS.index(s)}" for s in splits}
    if hasattr(pl, "PartitionBy"):
        target = pl.PartitionBy(work, key=SPLIT_CODE, include_key=False, approximate_bytes_per_file=None)
        plan.sink_parquet(target, mkdir=True, **opts)
    else:
        for d in folders.values():
            d.mkdir(parents=True)
        pl.collect_all(
            [
                plan.filter(pl.col(SPLIT_CODE) == split_code(s))
                .drop(SPLIT_CODE)
                .sink_parquet(d / "part.parquet", lazy=True, **opts)
                for s, d in folders.items()
            ],
            engine="streaming",
        )
    return {s: sorted(d.glob("*.parquet")) if d.is_dir() else [] for s, d in folders.items()}


def shuffle_into(writer: ShardWriter, files: list[Path], rows: int, schema: Mapping[str, pl.DataType]) -> None:
    """Write the rows of ``files`` (the columns of ``schema``) in the order of their shuffle key (ties: row number),
    holding one bucket of at most about SHUFFLE_ROWS rows at a time: bucket b holds the keys in the b-th of equal
    ranges of the 64-bit key space, so the order (and the shards) do not depend on the number of buckets."""
    order = [SHUFFLE_KEY, ROW_INDEX]
    if not files:  # no train row kept
        writer.add(pl.DataFrame(schema=dict(schema)))
        return
    buckets = max(1, -(-rows // SHUFFLE_ROWS))
    step = 2**64 // buckets
    for b in range(buckets):
        lf = pl.scan_parquet(files)
        if buckets > 1:
            cond = pl.col(SHUFFLE_KEY) >= pl.lit(b * step, dtype=pl.UInt64)
            if b < buckets - 1:
                cond = cond & (pl.col(SHUFFLE_KEY) < pl.lit((b + 1) * step, dtype=pl.UInt64))
            lf = lf.filter(cond)
        writer.add(lf.collect(engine="streaming").sort(order).select(list(schema)))


class ShardWriter:
    """Cuts the frames it is given, in order, into shards of exactly ``rows_per_shard`` rows (the last one shorter;
    one empty shard when no row comes) and tallies rows, positives and out-of-vocabulary values."""

    def __init__(self, directory: Path, root: Path, cfg: PipelineConfig):
        self.directory, self.root, self.cfg = directory, root, cfg
        directory.mkdir(parents=True, exist_ok=True)
        self.pending: pl.DataFrame | None = None
        self.files: list[dict] = []
        self.rows = 0
        self.positives = {t: 0 for t in cfg.tasks}
        self.oov = {c: 0 for c in cfg.categorical}

    def add(self, df: pl.DataFrame) -> None:
        buf = df if self.pending is None else pl.concat([self.pending, df])
        n, off = self.cfg.rows_per_shard, 0
        while buf.height - off >= n:
            self._write(buf.slice(off, n))
            off += n
        self.pending = buf.slice(off)

    def close(self) -> dict:
        if self.pending is not None and (self.pending.height or not self.files):
            self._write(self.pending)
        self.pending = None
        return {"rows": self.rows, "positives": self.positives, "oov": self.oov, "files": self.files}

    def _write(self, part: pl.DataFrame) -> None:
        path = self.directory / f"part-{len(self.files):05d}.parquet"
        part.write_parquet(path, compression="lz4", row_group_size=self.cfg.row_group_size, statistics=False)
        self.files.append({"path": str(path.relative_to(self.root)), "rows": part.height})
        self.rows += part.height
        tally = (
            part.select(
                [pl.col(LABEL_PREFIX + t).cast(pl.Int64).sum().alias(t) for t in self.cfg.tasks]
                + [(pl.col(CAT_PREFIX + c) == 0).sum().alias(c) for c in self.cfg.categorical]
            ).row(0, named=True)
            if part.height
            else {}
        )
        for t in self.cfg.tasks:
            self.positives[t] += int(tally.get(t) or 0)
        for c in self.cfg.categorical:
            self.oov[c] += int(tally.get(c) or 0)
