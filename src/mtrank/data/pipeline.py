"""Raw engagement logs → processed shards + ``metadata.json``, with Polars.

Steps (lazy wherever the data allows):

1. resolve and scan the raw files (Parquet or CSV) and check each one: columns, dtypes, labels in {0, 1},
   no null ids, whole numbers in float-coded categoricals, the NaN policy for numerics; give every categorical
   column one dtype across all files and splits; put the time column on one scale (epochs with a unit and a time
   zone, dates, datetimes, ISO strings); count exact duplicate rows, which are kept and reported, never dropped
   (:mod:`mtrank.data.reading`, :mod:`mtrank.data.validation`);
2. left-join the side tables (user / item features), counting impressions without a matching row;
3. split train / val / test by time (whole requests, in time order; by fractions or at cut points
   ``split.val_start`` / ``test_start``), by request hash, or per row; or take explicit split files
   (``data.split_inputs``, all of them or only val / test beside ``data.inputs``); no request is in two splits;
4. fit the feature encoder on train only and encode all splits (:mod:`mtrank.data.encoding`);
5. derive one label per configured task;
6. downsample, in the train split only, the impressions with no engagement of any configured task, keeping a
   fraction β, and record per-task kept/total counts (the calibration stage derives each head's effective β_t
   from them);
7. write shuffled train shards and time-ordered val/test shards plus ``metadata.json``.

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
from typing import Any, Mapping

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
_SPLIT = "__split"


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
    key = cache_key(cfg, sources.fingerprint(all_files))
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


def _uniform_from_hash(expr: pl.Expr, seed: int) -> pl.Expr:
    return (expr.hash(seed=seed) % 1_000_003).cast(pl.Float64) / 1_000_003.0


def _assign_splits(cfg: PipelineConfig, lf: pl.LazyFrame, cuts: Mapping[str, int] | None = None) -> pl.LazyFrame:
    """Label each row with the split it goes to, among ``cfg.produced_splits`` (whole requests stay together).

    ``cuts``: the time cut points (``split.val_start`` / ``test_start`` on the ``__time`` scale), if configured.
    """
    produced = cfg.produced_splits
    if len(produced) == 1:
        return lf.with_columns(pl.lit(produced[0]).alias(_SPLIT))
    if cfg.split.by == "time" and cuts:
        first = pl.col(TIME_COL).min().over(REQUEST_COL) if cfg.columns.request_id else pl.col(TIME_COL)
        split = pl.lit("train")
        if "val" in cuts:
            split = pl.when(first >= cuts["val"]).then(pl.lit("val")).otherwise(split)
        if "test" in cuts:
            split = pl.when(first >= cuts["test"]).then(pl.lit("test")).otherwise(split)
        return lf.with_columns(split.alias(_SPLIT))
    v = cfg.split.val_fraction if "val" in produced else 0.0
    t = cfg.split.test_fraction if "test" in produced else 0.0
    if cfg.split.by == "time":
        reqs = (
            lf.group_by(REQUEST_COL)
            .agg(pl.col(TIME_COL).min().alias("__t"))
            .sort(["__t", REQUEST_COL])
            .with_row_index("__rank")
            .with_columns((pl.col("__rank").cast(pl.Float64) / pl.len().cast(pl.Float64)).alias("__q"))
            .select(REQUEST_COL, "__q")
        )
        lf = lf.join(reqs, on=REQUEST_COL, how="left", maintain_order="left")
        q = pl.col("__q")
    elif cfg.split.by == "request":
        q = _uniform_from_hash(pl.col(REQUEST_COL), cfg.split.seed)
    else:
        q = _uniform_from_hash(pl.col(_ROW), cfg.split.seed)
    split = (
        pl.when(q < 1.0 - v - t).then(pl.lit("train")).when(q < 1.0 - t).then(pl.lit("val")).otherwise(pl.lit("test"))
    )
    return lf.with_columns(split.alias(_SPLIT)).drop("__q", strict=False)


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
    cols = cfg.columns
    imp = reading.read_impressions(cfg, split_files)
    has_p_true = bool(imp.ptrue_cols)
    side = reading.read_side_tables(cfg, side_files, imp.casts, imp.columns)
    cuts = _cut_points(cfg, imp.time_dtype)
    # "all" (the files split by data.split) first, so that its row numbers do not depend on data.split_inputs;
    # row numbers run on across the split files, so row-number ids never repeat between splits
    frames: dict[str, pl.DataFrame] = {}
    offset = 0
    for s in sorted(imp.frames, key=lambda k: k != "all"):
        raw = reading.join_side_tables(imp.frames[s], side).with_row_index(_ROW, offset=offset)
        raw = raw.with_columns(
            _id_expr(cols.request_id, imp.casts).alias(REQUEST_COL),
            _id_expr(cols.item_id, imp.casts).alias(ITEM_COL),
        )
        if s == "all":
            raw = _assign_splits(cfg, raw, cuts)
        frames[s] = raw.collect()
        offset += frames[s].height
    if "all" in frames:
        materialised = frames.pop("all")
        for s in cfg.produced_splits:
            frames[s] = materialised.filter(pl.col(_SPLIT) == s).drop(_SPLIT)
    side_report = reading.side_table_report(frames, side, cfg.encoding.nan_policy)
    frames = {s: reading.drop_markers(frames[s]) for s in SPLITS if s in frames}
    _check_disjoint_requests(frames)
    rows = {s: df.height for s, df in frames.items()}
    if rows.get("train", 0) == 0:
        raise DataValidationError("the train split is empty after splitting; check data.split and data.inputs")
    for s, n in rows.items():
        if n == 0:
            hint = f"move data.split.{s}_start" if cuts else f"raise data.split.{s}_fraction"
            raise DataValidationError(
                f"the {s} split is empty after splitting; {hint} or give data.split_inputs.{s}"
            )
    missing = _count_missing(frames, list(cfg.numeric + cfg.log_numeric))
    if any(missing.values()):
        log.warning(
            "Numeric null/NaN values filled with the train mean (data.encoding.nan_policy=fill_mean): %s",
            {c: n for c, n in missing.items() if n},
        )
    frames = {s: df.lazy() for s, df in frames.items()}

    encoder = FeatureEncoder(
        categorical=list(cfg.categorical), numeric=list(cfg.numeric), log_numeric=list(cfg.log_numeric)
    ).fit(frames["train"], cfg.encoding.min_count, cfg.encoding.max_vocab)
    label_exprs = [pl.col(cols.labels[t]).cast(pl.UInt8).alias(LABEL_PREFIX + t) for t in cfg.tasks]
    ptrue_exprs = (
        [pl.col((cols.p_true_prefix or "") + t).cast(pl.Float32).alias(PTRUE_PREFIX + t) for t in cfg.tasks]
        if has_p_true
        else []
    )
    encoded = {
        s: lf.select(pl.col(REQUEST_COL), pl.col(ITEM_COL), *encoder.expressions(), *label_exprs, *ptrue_exprs).collect()
        for s, lf in frames.items()
    }

    train, counts = downsample(encoded["train"], cfg.tasks, cfg.downsample.beta, cfg.downsample.seed)
    train = train.sample(fraction=1.0, shuffle=True, seed=cfg.downsample.seed)
    encoded["train"] = train

    splits_meta = {}
    for s in SPLITS:
        if s not in encoded:
            continue
        df = encoded[s]
        splits_meta[s] = {
            "rows": df.height,
            "positives": {t: int(df[LABEL_PREFIX + t].sum()) for t in cfg.tasks},
            "oov": {c: int((df[CAT_PREFIX + c] == 0).sum()) for c in cfg.categorical},
            "files": _write_shards(df, out / s, cfg.rows_per_shard, cfg.row_group_size, out),
        }
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
        "duplicate_rows": {"kept": True, "total": sum(imp.duplicates.values()), "files": imp.duplicates},
        "side_tables": side_report,
        "time_cut_points_us": cuts or None,
        "config": dataclasses.asdict(cfg),
        "polars_version": pl.__version__,
    }


def _id_expr(col: str | None, casts: Mapping[str, pl.DataType]) -> pl.Expr:
    """Integer ids stay as they are; string ids are hashed to Int64; no column: the row number."""
    if not col:
        return pl.col(_ROW).cast(pl.Int64)
    if casts.get(col) == pl.String:
        return pl.col(col).hash(seed=0).reinterpret(signed=True)
    return pl.col(col).cast(pl.Int64)


def _count_missing(frames: Mapping[str, pl.DataFrame], numeric: list[str]) -> dict[str, int]:
    """Null/NaN values per numeric feature over all splits, after the side-table joins (impressions whose key is
    missing from a side table count too)."""
    out = {c: 0 for c in numeric}
    for df in frames.values():
        if not numeric or not df.height:
            continue
        row = df.select([(pl.col(c).is_null() | pl.col(c).is_nan()).sum().alias(c) for c in numeric]).row(0, named=True)
        for c in numeric:
            out[c] += int(row[c])
    return out


def _check_disjoint_requests(frames: Mapping[str, pl.DataFrame]) -> None:
    ids = {s: frames[s].select(pl.col(REQUEST_COL).unique())[REQUEST_COL] for s in frames}
    names = list(ids)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = ids[a].is_in(ids[b].implode()).sum()
            if both:
                raise DataValidationError(
                    f"{both} request id(s) appear in both the {a} and the {b} split; "
                    "a request's candidates must stay in one split (check data.split_inputs)"
                )


def downsample(df: pl.DataFrame, tasks, beta: float, seed: int) -> tuple[pl.DataFrame, dict]:
    """Keep all impressions with an engagement of any task and a fraction β of the others.

    Returns the kept frame and the counts the calibration stage needs: rows and no-engagement rows before and
    after, and per task its positives and negatives before and after (a head's negatives also hold the kept
    rows engaged with other tasks, so its effective keep rate β_t = negatives_after / negatives_before).
    """
    labels = df.select([LABEL_PREFIX + t for t in tasks]).to_numpy()
    engaged = labels.max(axis=1) > 0
    rng = np.random.default_rng(seed)
    keep = engaged | (rng.random(df.height) < beta)
    kept = df.filter(pl.Series(keep))
    per_task = {}
    for j, t in enumerate(tasks):
        pos = int(labels[:, j].sum())
        pos_after = int(labels[keep, j].sum())
        neg_before = int(df.height - pos)
        neg_after = int(keep.sum() - pos_after)
        per_task[t] = {
            "positives_before": pos,
            "positives_after": pos_after,
            "negatives_before": neg_before,
            "negatives_after": neg_after,
            "effective_beta": neg_after / neg_before if neg_before else 1.0,
        }
    counts = {
        "beta": beta,
        "rows_before": int(df.height),
        "rows_after": int(keep.sum()),
        "unengaged_before": int((~engaged).sum()),
        "unengaged_after": int((keep & ~engaged).sum()),
        "per_task": per_task,
    }
    return kept, counts


def _write_shards(df: pl.DataFrame, directory: Path, rows_per_shard: int, row_group_size: int, root: Path) -> list[dict]:
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    n_shards = max(1, -(-df.height // rows_per_shard))
    for i in range(n_shards):
        part = df.slice(i * rows_per_shard, rows_per_shard)
        path = directory / f"part-{i:05d}.parquet"
        part.write_parquet(path, compression="lz4", row_group_size=row_group_size, statistics=False)
        files.append({"path": str(path.relative_to(root)), "rows": part.height})
    return files
