"""Raw engagement logs → processed shards + ``metadata.json``, with Polars.

Steps:

1. resolve and scan the raw files (Parquet or CSV) and check each one: columns, dtypes, labels in {0, 1},
   no null ids, whole numbers in float-coded categoricals, the NaN policy for numerics; give every categorical
   column one dtype across all files and splits; put the time column on one scale (epochs with a unit and a time
   zone, dates, datetimes, ISO strings); find duplicated impressions (``data.duplicates``: repeats of an earlier
   row's key, every column by default) and keep, drop or refuse them, never silently
   (:mod:`mtrank.data.reading`, :mod:`mtrank.data.validation`);
2. left-join the side tables (user / item features), counting impressions without a matching row;
3. split train / val / test by time (whole requests, in time order; by fractions or at cut points
   ``split.val_start`` / ``test_start``), by request hash, or per row; or take explicit split files
   (``data.split_inputs``, all of them or only val / test beside ``data.inputs``); no request is in two splits;
   no split may be empty, and every task needs a positive label in train;
4. fit the feature encoder on train only (no categorical vocabulary may be empty) and encode all splits
   (:mod:`mtrank.data.encoding`);
5. derive one label per configured task;
6. downsample, in the train split only, the impressions with no engagement of any configured task, keeping a
   fraction β (a hash of the row number with ``downsample.seed`` draws them), and record per-task kept/total
   counts (the calibration stage derives each head's effective β_t from them);
7. write shuffled train shards and time-ordered val/test shards plus ``metadata.json``; log the
   out-of-vocabulary fraction of every categorical column in val / test (an error above
   ``encoding.max_oov_fraction``).

Memory does not grow with the number of impressions: every step is a lazy Polars plan over the raw files, run
by the streaming engine (a pass: the summary counts, the vocabularies, the numeric statistics, the encoded
rows). What is held is small: one row per request for time splits, the vocabularies, the numeric train columns
for their statistics (8 bytes per row and column, a few columns at a time), and one bucket of train rows while
shuffling. The encoded rows go to intermediate Parquet files in the build folder (``_work``, removed before the
rename); train is shuffled by sorting on a hash of the row number, bucket by bucket over ranges of that hash, so
the result is the same whatever the bucket size: the same config and inputs give byte-identical shards.

The result is cached under ``<processed_dir>/<name>-<key>/`` where the key hashes the config, the schema
version and the content of every input file: the same inputs and config never reprocess. It is built in a
temporary folder that is renamed into place only when complete, so a crash never leaves a half-written data
set that a later run could load as good.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import polars as pl

from mtrank.data import reading, sources
from mtrank.data.config import PipelineConfig
from mtrank.data.encoding import FeatureEncoder
from mtrank.data.errors import DataValidationError
from mtrank.data.reading import TIME_COL
from mtrank.data.spec import (
    CAT_PREFIX,
    ITEM_COL,
    LABEL_PREFIX,
    NUM_PREFIX,
    PTRUE_PREFIX,
    REQUEST_COL,
    FeatureSpec,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
METADATA_FILE = "metadata.json"
_ROW = "__row"
_SPLIT = "__split"  # UInt8: the index in SPLITS
_SHUFFLE_KEY = "__shuffle_key"
_WORK = "_work"  # intermediate files, inside the temporary build folder
_SHUFFLE_ROWS = 2_000_000  # train rows held in memory at once while shuffling (one bucket)
_DOWNSAMPLE_SALT = 0x6D7472616E6B2D64
_SHUFFLE_SALT = 0x6D7472616E6B2D73


@dataclass(frozen=True)
class ProcessedData:
    """A processed data set on disk."""

    directory: Path
    metadata: Mapping[str, Any]

    @property
    def spec(self) -> FeatureSpec:
        return FeatureSpec.from_metadata(self.metadata)

    def files(self, split: str) -> list[tuple[Path, int]]:
        """(path, rows) of each shard of a split, in order."""
        return [(self.directory / f["path"], int(f["rows"])) for f in self.metadata["splits"][split]["files"]]

    def rows(self, split: str) -> int:
        return int(self.metadata["splits"][split]["rows"])

    def encoder(self) -> FeatureEncoder:
        return FeatureEncoder.load(self.directory, self.metadata["features"])

    @classmethod
    def load(cls, directory: Path | str) -> "ProcessedData":
        directory = Path(directory)
        meta_path = directory / METADATA_FILE
        if not meta_path.exists():
            raise DataValidationError(f"{directory} is not a processed data set: {METADATA_FILE} is missing")
        meta = json.loads(meta_path.read_text())
        if meta.get("schema_version") != SCHEMA_VERSION:
            raise DataValidationError(
                f"{meta_path} has schema_version {meta.get('schema_version')}; this mtrank reads {SCHEMA_VERSION}"
            )
        return cls(directory, meta)


def cache_key(cfg: PipelineConfig, content_hash: str) -> str:
    payload = json.dumps(
        {"schema_version": SCHEMA_VERSION, "config": dataclasses.asdict(cfg), "inputs": content_hash},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def process(cfg: PipelineConfig, processed_root: Path | str, force: bool = False) -> ProcessedData:
    """Process the raw logs of ``cfg`` (or reuse the cached result) and return the processed data set."""
    processed_root = Path(processed_root)
    split_files = _resolve_split_files(cfg)
    side_files = [sources.resolve_inputs([t.path], f"{t.key}.path")[0] for t in cfg.side_tables]
    all_files = [f for fs in split_files.values() for f in fs] + side_files
    content_hash = sources.fingerprint(all_files)
    key = cache_key(cfg, content_hash)
    final = processed_root / f"{cfg.name}-{key}"
    if (final / METADATA_FILE).exists() and not force:
        log.info("Reusing processed data %s", final)
        return ProcessedData.load(final)
    processed_root.mkdir(parents=True, exist_ok=True)
    tmp = processed_root / f".tmp-{cfg.name}-{key}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        meta = _build(cfg, split_files, side_files, tmp)
        meta["key"] = key
        meta["source"] = {
            "files": {s: [str(f) for f in fs] for s, fs in split_files.items()},
            "side_tables": [str(f) for f in side_files],
            "content_sha256": content_hash,  # of every input file, in order (the data fingerprint)
        }
        _write_json(tmp / METADATA_FILE, meta)
        if final.exists():  # forced rebuild, or a concurrent run finished first
            if force:
                shutil.rmtree(final)
            else:
                shutil.rmtree(tmp)
                return ProcessedData.load(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("Processed data written to %s", final)
    return ProcessedData.load(final)


def _resolve_split_files(cfg: PipelineConfig) -> dict[str, list[Path]]:
    """``{"all": data.inputs}`` (split by data.split) and/or ``{split: data.split_inputs.<split>}``.

    With a train file in ``split_inputs`` the explicit files are the whole data set (``inputs`` is ignored);
    without one, ``inputs`` is split into train and the splits ``split_inputs`` does not give.
    """
    given = dict(cfg.split_inputs or {})
    out: dict[str, list[Path]] = {}
    if "train" not in given:
        out["all"] = sources.resolve_inputs(cfg.inputs, "data.inputs")
    elif cfg.inputs:
        log.info("data.split_inputs.train is set: data.inputs is not used")
    for s in SPLITS:
        if s in given:
            out[s] = sources.resolve_inputs(given[s], f"data.split_inputs.{s}")
    return out


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default))


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


# --------------------------------------------------------------------------------------------- splitting


def _code(split: str) -> pl.Expr:
    """The ``__split`` value of a split (its index in SPLITS, UInt8)."""
    return pl.lit(SPLITS.index(split), dtype=pl.UInt8)


def _uniform_from_hash(expr: pl.Expr, seed: int) -> pl.Expr:
    return (expr.hash(seed=seed) % 1_000_003).cast(pl.Float64) / 1_000_003.0


def _uniform(expr: pl.Expr, seed: int, salt: int) -> pl.Expr:
    """A uniform draw in [0, 1) (53 bits) per value of ``expr``; ``salt`` keeps draws for different purposes
    independent when they share a seed."""
    return (expr.hash(seed=seed).hash(seed=salt) // 2048).cast(pl.Float64) / 2.0**53


def _by_fraction(q: pl.Expr, v: float, t: float) -> pl.Expr:
    return pl.when(q < 1.0 - v - t).then(_code("train")).when(q < 1.0 - t).then(_code("val")).otherwise(_code("test"))


def _by_cut_points(first: pl.Expr, cuts: Mapping[str, int]) -> pl.Expr:
    split = _code("train")
    if "val" in cuts:
        split = pl.when(first >= cuts["val"]).then(_code("val")).otherwise(split)
    if "test" in cuts:
        split = pl.when(first >= cuts["test"]).then(_code("test")).otherwise(split)
    return split


def _fractions(cfg: PipelineConfig) -> tuple[float, float]:
    produced = cfg.produced_splits
    return (
        cfg.split.val_fraction if "val" in produced else 0.0,
        cfg.split.test_fraction if "test" in produced else 0.0,
    )


def _rank_cut(n: int, threshold: float) -> int:
    """How many ranks r in [0, n) have r / n < threshold (a prefix: r / n grows with r)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if mid / n < threshold:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _assign_splits(cfg: PipelineConfig, lf: pl.LazyFrame, cuts: Mapping[str, int] | None = None) -> pl.LazyFrame:
    """Add ``__split`` (the index in SPLITS of the split each row goes to, among ``cfg.produced_splits``); whole
    requests stay together. Time splits first collect one small row per request (its first impression's time).

    ``cuts``: the time cut points (``split.val_start`` / ``test_start`` on the ``__time`` scale), if configured.
    """
    produced = cfg.produced_splits
    if len(produced) == 1:
        return lf.with_columns(_code(produced[0]).alias(_SPLIT))
    v, t = _fractions(cfg)
    if cfg.split.by == "time":
        return _assign_by_time(cfg, lf, cuts or {}, v, t)
    if cfg.split.by == "request":
        q = _uniform_from_hash(pl.col(REQUEST_COL), cfg.split.seed)
    else:
        q = _uniform_from_hash(pl.col(_ROW), cfg.split.seed)
    return lf.with_columns(_by_fraction(q, v, t).alias(_SPLIT))


def _assign_by_time(cfg: PipelineConfig, lf: pl.LazyFrame, cuts: Mapping[str, int], v: float, t: float) -> pl.LazyFrame:
    if cfg.columns.request_id:
        # one row per request: the time of its first impression, and from it the request's split
        firsts = lf.group_by(REQUEST_COL).agg(pl.col(TIME_COL).min().alias("__t")).collect(engine="streaming")
        if cuts:
            table = firsts.select(REQUEST_COL, _by_cut_points(pl.col("__t"), cuts).alias(_SPLIT))
        else:
            q = pl.col("__rank").cast(pl.Float64) / pl.len().cast(pl.Float64)
            table = (
                firsts.sort(["__t", REQUEST_COL])
                .with_row_index("__rank")
                .select(REQUEST_COL, _by_fraction(q, v, t).alias(_SPLIT))
            )
        return lf.join(table.lazy(), on=REQUEST_COL, how="left", maintain_order="left")
    # every impression is its own request
    if cuts:
        return lf.with_columns(_by_cut_points(pl.col(TIME_COL), cuts).alias(_SPLIT))
    # ranks in (time, row) order: the first k_val rows are train, the next ones val up to k_test, the rest test;
    # found from the sorted (time, row) pairs, then applied as comparisons with the pairs at those ranks
    keys = lf.select(TIME_COL, _ROW).collect(engine="streaming").sort([TIME_COL, _ROW])
    n = keys.height

    def before(k: int) -> pl.Expr:
        if k >= n:
            return pl.lit(True)
        tk, rk = keys.row(k)
        return (pl.col(TIME_COL) < tk) | ((pl.col(TIME_COL) == tk) & (pl.col(_ROW) < rk))

    split = (
        pl.when(before(_rank_cut(n, 1.0 - v - t))).then(_code("train"))
        .when(before(_rank_cut(n, 1.0 - t))).then(_code("val"))
        .otherwise(_code("test"))
    )
    del keys
    return lf.with_columns(split.alias(_SPLIT))


def _cut_points(cfg: PipelineConfig, time_dtype) -> dict[str, int]:
    if not (cfg.split.by == "time" and cfg.split.cut_points):
        return {}
    cols = cfg.columns
    return {
        s: reading.cut_point(value, f"data.split.{s}_start", cols.time, time_dtype, cols.time_unit, cols.time_zone)
        for s in ("val", "test")
        if s in cfg.produced_splits and (value := getattr(cfg.split, f"{s}_start")) is not None
    }


# --------------------------------------------------------------------------------------------- build


def _build(cfg: PipelineConfig, split_files: dict[str, list[Path]], side_files: list[Path], out: Path) -> dict:
    """Streamed: every step is a lazy plan over the raw files (a pass), so that memory does not grow with the
    number of impressions; only small tables (one row per request for time splits, the vocabularies) and one
    bucket of shuffled train rows at a time are held. Intermediate files stay in ``out/_work``."""
    cols = cfg.columns
    imp = reading.read_impressions(cfg, split_files)
    has_p_true = bool(imp.ptrue_cols)
    side = reading.read_side_tables(cfg, side_files, imp.casts, imp.columns)
    cuts = _cut_points(cfg, imp.time_dtype)
    rows_lf = _impression_rows(cfg, imp, side, cuts)
    present = _present_splits(cfg, imp)

    # one pass: rows, side-table matches, missing numerics, positives and downsampling counts, per split
    summary = _summarise(cfg, rows_lf, side, present)
    rows = {s: summary[s]["rows"] for s in present}

    def sample(split: str, col: str) -> list:
        return (
            rows_lf.filter(pl.col(_SPLIT) == _code(split)).select(pl.col(col)).drop_nulls().head(3)
            .collect()[col].to_list()
        )

    side_report = reading.side_table_report(
        side, rows, {st.table.name: {s: summary[s][f"unmatched:{st.table.name}"] for s in present} for st in side},
        cfg.encoding.nan_policy, sample,
    )
    _check_disjoint_requests(cfg, rows_lf, list(imp.frames))
    if rows.get("train", 0) == 0:
        raise DataValidationError("the train split is empty after splitting; check data.split and data.inputs")
    for s, n in rows.items():
        if n == 0:
            hint = f"move data.split.{s}_start" if cuts else f"raise data.split.{s}_fraction"
            raise DataValidationError(
                f"the {s} split is empty after splitting; {hint} or give data.split_inputs.{s}"
            )
    _check_positives(cfg, summary, present)
    numeric = list(cfg.numeric + cfg.log_numeric)
    missing = {c: sum(summary[s][f"missing:{c}"] for s in present) for c in numeric}
    if any(missing.values()):
        log.warning(
            "Numeric null/NaN values filled with the train mean (data.encoding.nan_policy=fill_mean): %s",
            {c: n for c, n in missing.items() if n},
        )

    train_lf = rows_lf.filter(pl.col(_SPLIT) == _code("train"))
    encoder = FeatureEncoder(
        categorical=list(cfg.categorical), numeric=list(cfg.numeric), log_numeric=list(cfg.log_numeric)
    ).fit(train_lf, cfg.encoding.min_count, cfg.encoding.max_vocab, rows=rows["train"])
    _check_vocabularies(cfg, encoder)

    label_exprs = [pl.col(cols.labels[t]).cast(pl.UInt8).alias(LABEL_PREFIX + t) for t in cfg.tasks]
    ptrue_exprs = (
        [pl.col((cols.p_true_prefix or "") + t).cast(pl.Float32).alias(PTRUE_PREFIX + t) for t in cfg.tasks]
        if has_p_true
        else []
    )
    encoded = [pl.col(REQUEST_COL), pl.col(ITEM_COL), *encoder.expressions(), *label_exprs, *ptrue_exprs]
    counts = _downsample_counts(summary["train"], cfg.tasks, cfg.downsample.beta)
    keep, _ = _keep_expr([pl.col(cols.labels[t]) for t in cfg.tasks], cfg.downsample.beta, cfg.downsample.seed)

    # one pass writes the kept train rows and the val / test rows, encoded, to _work (one folder per split); then
    # train is shuffled bucket by bucket and val / test are cut into shards in their input order
    work = out / _WORK
    shuffle_key = pl.col(_ROW).hash(seed=cfg.downsample.seed).hash(seed=_SHUFFLE_SALT).alias(_SHUFFLE_KEY)
    plan = rows_lf.filter((pl.col(_SPLIT) != _code("train")) | keep).select(
        *encoded, shuffle_key, pl.col(_ROW), pl.col(_SPLIT)
    )
    parts = _sink_by_split(plan, work, present, cfg.row_group_size)
    schema = {c: t for c, t in plan.collect_schema().items() if c not in (_SPLIT, _SHUFFLE_KEY, _ROW)}
    names = list(schema)
    splits_meta = {}
    for s in present:
        writer = _ShardWriter(out / s, out, cfg)
        expected = counts["rows_after"] if s == "train" else rows[s]
        if s == "train":
            _shuffle_into(writer, parts[s], expected, schema)
        else:
            for off in range(0, expected, cfg.rows_per_shard):
                writer.add(pl.scan_parquet(parts[s]).slice(off, cfg.rows_per_shard).select(names).collect())
        splits_meta[s] = writer.close()
        if splits_meta[s]["rows"] != expected:  # a safety net: the intermediate files must hold every row
            raise RuntimeError(f"the {s} split has {splits_meta[s]['rows']} rows in its shards; expected {expected}")
    shutil.rmtree(work)
    _check_oov(cfg, splits_meta)
    features = encoder.save(out)
    return {
        "schema_version": SCHEMA_VERSION,
        "name": cfg.name,
        "tasks": list(cfg.tasks),
        "label_columns": {t: cols.labels[t] for t in cfg.tasks},
        "has_p_true": has_p_true,
        "features": features,
        "beta": cfg.downsample.beta,
        "counts": counts,
        "splits": splits_meta,
        "numeric_missing_filled": missing,
        "duplicate_rows": {
            "kept": cfg.duplicates.policy == "keep",
            "policy": cfg.duplicates.policy,
            "key": list(cfg.duplicates.key) if cfg.duplicates.key is not None else None,
            "total": sum(imp.duplicates.values()),
            "dropped": imp.dropped,
            "files": imp.duplicates,
        },
        "side_tables": side_report,
        "time_cut_points_us": cuts or None,
        "config": dataclasses.asdict(cfg),
        "polars_version": pl.__version__,
    }


def _present_splits(cfg: PipelineConfig, imp: reading.Impressions) -> list[str]:
    """The splits of this data set, in SPLITS order: those cut from data.inputs and those given as files."""
    have = set(cfg.produced_splits if "all" in imp.frames else ()) | {s for s in imp.frames if s != "all"}
    return [s for s in SPLITS if s in have]


def _impression_rows(
    cfg: PipelineConfig, imp: reading.Impressions, side: list[reading.SideFrame], cuts: Mapping[str, int]
) -> pl.LazyFrame:
    """Every impression, lazily: side tables joined, ``__row`` (running on across the split files, so row-number
    ids never repeat between splits), ``request_id`` / ``item_id`` and ``__split``."""
    cols = cfg.columns
    parts = []
    offset = 0
    # "all" (the files split by data.split) first, so that its row numbers do not depend on data.split_inputs
    for s in sorted(imp.frames, key=lambda k: k != "all"):
        raw = reading.join_side_tables(imp.frames[s], side).with_row_index(_ROW, offset=offset)
        raw = raw.with_columns(
            _id_expr(cols.request_id, imp.casts).alias(REQUEST_COL),
            _id_expr(cols.item_id, imp.casts).alias(ITEM_COL),
        )
        parts.append(_assign_splits(cfg, raw, cuts) if s == "all" else raw.with_columns(_code(s).alias(_SPLIT)))
        offset += imp.group_rows[s]
    return parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical")


def _summarise(
    cfg: PipelineConfig, rows_lf: pl.LazyFrame, side: list[reading.SideFrame], present: list[str]
) -> dict[str, dict[str, int]]:
    """Per split: rows, impressions without a side-table row, null/NaN numerics, and the downsampling counts."""
    labels = {t: pl.col(cfg.columns.labels[t]) for t in cfg.tasks}
    keep, engaged = _keep_expr(list(labels.values()), cfg.downsample.beta, cfg.downsample.seed)
    aggs = [pl.len().alias("rows")]
    aggs += [pl.col(reading.marker(st.table)).null_count().alias(f"unmatched:{st.table.name}") for st in side]
    aggs += [
        (pl.col(c).is_null() | pl.col(c).is_nan()).sum().alias(f"missing:{c}") for c in cfg.numeric + cfg.log_numeric
    ]
    aggs += _downsample_aggs(labels, keep, engaged)
    df = rows_lf.group_by(_SPLIT).agg(aggs).collect(engine="streaming")
    found = {SPLITS[r.pop(_SPLIT)]: {k: int(v or 0) for k, v in r.items()} for r in df.iter_rows(named=True)}
    zero = {c: 0 for c in df.columns if c != _SPLIT}
    return {s: found.get(s, dict(zero)) for s in present}


def _check_positives(cfg: PipelineConfig, summary: Mapping[str, Mapping[str, int]], present: list[str]) -> None:
    """A task without a positive train label cannot be learnt (error); one without positives in val / test
    cannot be evaluated (warning)."""
    for t in cfg.tasks:
        col = cfg.columns.labels[t]
        if summary["train"][f"ds:pos:{t}"] == 0:
            raise DataValidationError(
                f"task '{t}' has no positive label in the train split: label column '{col}' "
                f"(data.columns.labels.{t}) is 0 on all {summary['train']['rows']} train rows, so its head cannot "
                f"learn; drop '{t}' from tasks.names, or check the label column and data.split"
            )
        empty = [s for s in present if s != "train" and summary[s][f"ds:pos:{t}"] == 0]
        if empty:
            log.warning(
                "Task '%s' (label column '%s') has no positive label in the %s split(s): its AUROC / AP there are "
                "undefined", t, col, ", ".join(empty),
            )


def _feature_key(cfg: PipelineConfig, col: str) -> str:
    for t in cfg.side_tables:
        if col in t.features:
            return f"{t.key}.categorical"
    return "data.columns.categorical"


def _check_vocabularies(cfg: PipelineConfig, encoder: FeatureEncoder) -> None:
    for c in encoder.categorical:
        if encoder.vocabularies[c].height == 0:
            limit = f" within data.encoding.max_vocab={cfg.encoding.max_vocab}" if cfg.encoding.max_vocab is not None else ""
            raise DataValidationError(
                f"categorical column '{c}' ({_feature_key(cfg, c)}) has an empty vocabulary: none of its train values "
                f"is seen at least data.encoding.min_count={cfg.encoding.min_count} times{limit} (or every train "
                "value is null), so every row would get the out-of-vocabulary index; lower data.encoding.min_count "
                f"or drop '{c}' from {_feature_key(cfg, c)}"
            )


def _check_oov(cfg: PipelineConfig, splits_meta: Mapping[str, Mapping[str, Any]]) -> None:
    """Log the out-of-vocabulary fraction of every categorical column in val / test; error above
    ``data.encoding.max_oov_fraction``."""
    frac = {
        s: {c: m["oov"][c] / m["rows"] for c in cfg.categorical}
        for s, m in splits_meta.items()
        if s != "train" and m["rows"]
    }
    for s, f in frac.items():
        log.info("Out-of-vocabulary fraction per categorical column in the %s split: %s", s,
                 {c: round(x, 4) for c, x in f.items()})
    limit = cfg.encoding.max_oov_fraction
    if limit is None:
        return
    over = [(x, s, c) for s, f in frac.items() for c, x in f.items() if x > limit]
    if over:
        x, s, c = max(over)
        others = [f"'{c2}' in {s2}: {x2:.1%}" for x2, s2, c2 in sorted(over, reverse=True)[1:]]
        raise DataValidationError(
            f"categorical column '{c}' ({_feature_key(cfg, c)}) maps {x:.1%} of the {s} split "
            f"({splits_meta[s]['oov'][c]} of {splits_meta[s]['rows']} rows) to the out-of-vocabulary index (values "
            f"never seen in train, seen fewer than data.encoding.min_count={cfg.encoding.min_count} times, beyond "
            f"data.encoding.max_vocab, or null); expected at most data.encoding.max_oov_fraction={limit}"
            + (f" (also over: {', '.join(others)})" if others else "")
            + f". Its {s} ids are mostly unknown to the model: check data.split, drop the column, or raise the limit"
        )


def _id_expr(col: str | None, casts: Mapping[str, pl.DataType]) -> pl.Expr:
    """Integer ids stay as they are; string ids are hashed to Int64; no column: the row number."""
    if not col:
        return pl.col(_ROW).cast(pl.Int64)
    if casts.get(col) == pl.String:
        return pl.col(col).hash(seed=0).reinterpret(signed=True)
    return pl.col(col).cast(pl.Int64)


def _check_disjoint_requests(cfg: PipelineConfig, rows_lf: pl.LazyFrame, groups: list[str]) -> None:
    """No request id in two splits. Without a request id column every impression is its own request (row
    numbers never repeat); time and request splits of data.inputs keep requests whole by construction, so only
    explicit split files and ``split.by=random`` are checked (a pass over one row per request)."""
    if not cfg.columns.request_id or (groups == ["all"] and cfg.split.by != "random"):
        return
    pairs = [(a, b) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:]]
    flags = rows_lf.group_by(REQUEST_COL).agg([(pl.col(_SPLIT) == _code(s)).any().alias(s) for s in SPLITS])
    both = flags.select([(pl.col(a) & pl.col(b)).sum().alias(f"{a}|{b}") for a, b in pairs]).collect(engine="streaming")
    for a, b in pairs:
        n = int(both[f"{a}|{b}"][0])
        if n:
            hint = (
                "data.split.by=random splits rows, not requests: use split.by=request"
                if cfg.split.by == "random" and "all" in groups
                else "check data.split_inputs"
            )
            raise DataValidationError(
                f"{n} request id(s) appear in both the {a} and the {b} split; "
                f"a request's candidates must stay in one split ({hint})"
            )


# --------------------------------------------------------------------------------------------- downsampling


def _keep_expr(labels: Sequence[pl.Expr], beta: float, seed: int) -> tuple[pl.Expr, pl.Expr]:
    """(keep, engaged): a row is kept when it has an engagement of any task, or else with probability β, drawn
    from a hash of its row number (so the same rows are kept by every pass and every run)."""
    engaged = pl.any_horizontal([y > 0 for y in labels])
    return engaged | (_uniform(pl.col(_ROW), seed, _DOWNSAMPLE_SALT) < beta), engaged


def _downsample_aggs(labels: Mapping[str, pl.Expr], keep: pl.Expr, engaged: pl.Expr) -> list[pl.Expr]:
    aggs = [
        pl.len().alias("ds:rows"),
        keep.sum().alias("ds:kept"),
        (~engaged).sum().alias("ds:unengaged"),
        (keep & ~engaged).sum().alias("ds:unengaged_kept"),
    ]
    for t, y in labels.items():
        aggs += [(y > 0).sum().alias(f"ds:pos:{t}"), ((y > 0) & keep).sum().alias(f"ds:pos_kept:{t}")]
    return aggs


def _downsample_counts(row: Mapping[str, int], tasks: Sequence[str], beta: float) -> dict:
    rows, kept = int(row["ds:rows"]), int(row["ds:kept"])
    per_task = {}
    for t in tasks:
        pos, pos_after = int(row[f"ds:pos:{t}"]), int(row[f"ds:pos_kept:{t}"])
        neg_before, neg_after = rows - pos, kept - pos_after
        per_task[t] = {
            "positives_before": pos,
            "positives_after": pos_after,
            "negatives_before": neg_before,
            "negatives_after": neg_after,
            "effective_beta": neg_after / neg_before if neg_before else 1.0,
        }
    return {
        "beta": beta,
        "rows_before": rows,
        "rows_after": kept,
        "unengaged_before": int(row["ds:unengaged"]),
        "unengaged_after": int(row["ds:unengaged_kept"]),
        "per_task": per_task,
    }


def downsample(df: pl.DataFrame, tasks, beta: float, seed: int) -> tuple[pl.DataFrame, dict]:
    """Keep all impressions with an engagement of any task and a fraction β of the others.

    The rows kept are those the pipeline keeps: the draw hashes the ``__row`` column (the row number when ``df``
    has none). Returns the kept frame and the counts the calibration stage needs: rows and no-engagement rows
    before and after, and per task its positives and negatives before and after (a head's negatives also hold
    the kept rows engaged with other tasks, so its effective keep rate β_t = negatives_after / negatives_before).
    """
    lf = df.lazy() if _ROW in df.columns else df.lazy().with_row_index(_ROW)
    labels = {t: pl.col(LABEL_PREFIX + t) for t in tasks}
    keep, engaged = _keep_expr(list(labels.values()), beta, seed)
    counts = _downsample_counts(lf.select(_downsample_aggs(labels, keep, engaged)).collect().row(0, named=True), tasks, beta)
    kept = lf.filter(keep)
    if _ROW not in df.columns:
        kept = kept.drop(_ROW)
    return kept.collect(), counts


# --------------------------------------------------------------------------------------------- shards


def _sink_by_split(plan: pl.LazyFrame, work: Path, splits: Sequence[str], row_group_size: int) -> dict[str, list[Path]]:
    """Write the rows of ``plan`` to ``work/__split=<code>/*.parquet`` by their ``__split`` (dropped), in order.

    One streaming pass with Polars' partitioned sink where this Polars has it, else one pass per split.
    """
    opts = dict(compression="lz4", statistics=False, row_group_size=row_group_size)
    folders = {s: work / f"{_SPLIT}={SPLITS.index(s)}" for s in splits}
    if hasattr(pl, "PartitionBy"):
        target = pl.PartitionBy(work, key=_SPLIT, include_key=False, approximate_bytes_per_file=None)
        plan.sink_parquet(target, mkdir=True, **opts)
    else:
        for d in folders.values():
            d.mkdir(parents=True)
        pl.collect_all(
            [
                plan.filter(pl.col(_SPLIT) == _code(s)).drop(_SPLIT).sink_parquet(d / "part.parquet", lazy=True, **opts)
                for s, d in folders.items()
            ],
            engine="streaming",
        )
    return {s: sorted(d.glob("*.parquet")) if d.is_dir() else [] for s, d in folders.items()}


def _shuffle_into(writer: "_ShardWriter", files: list[Path], rows: int, schema: Mapping[str, pl.DataType]) -> None:
    """Write the rows of ``files`` (the columns of ``schema``) in the order of their shuffle key (ties: row number),
    holding one bucket of at most about _SHUFFLE_ROWS rows at a time: bucket b holds the keys in the b-th of equal
    ranges of the 64-bit key space, so the order (and the shards) do not depend on the number of buckets."""
    order = [_SHUFFLE_KEY, _ROW]
    if not files:  # no train row kept
        writer.add(pl.DataFrame(schema=dict(schema)))
        return
    buckets = max(1, -(-rows // _SHUFFLE_ROWS))
    step = 2**64 // buckets
    for b in range(buckets):
        lf = pl.scan_parquet(files)
        if buckets > 1:
            cond = pl.col(_SHUFFLE_KEY) >= pl.lit(b * step, dtype=pl.UInt64)
            if b < buckets - 1:
                cond = cond & (pl.col(_SHUFFLE_KEY) < pl.lit((b + 1) * step, dtype=pl.UInt64))
            lf = lf.filter(cond)
        writer.add(lf.collect(engine="streaming").sort(order).select(list(schema)))


class _ShardWriter:
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
        tally = part.select(
            [pl.col(LABEL_PREFIX + t).cast(pl.Int64).sum().alias(t) for t in self.cfg.tasks]
            + [(pl.col(CAT_PREFIX + c) == 0).sum().alias(c) for c in self.cfg.categorical]
        ).row(0, named=True) if part.height else {}
        for t in self.cfg.tasks:
            self.positives[t] += int(tally.get(t) or 0)
        for c in self.cfg.categorical:
            self.oov[c] += int(tally.get(c) or 0)
