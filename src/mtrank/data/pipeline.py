"""Raw engagement logs → processed shards + ``metadata.json``, with Polars.

Steps (lazy wherever the data allows):

1. resolve and scan the raw files (Parquet or CSV) and check each one: columns, dtypes, labels in {0, 1},
   no null ids, the NaN policy for numerics (:mod:`mtrank.data.validation`);
2. join side tables (user / item features) when configured;
3. split train / val / test by time (whole requests, in time order), by request hash, or per row; or take
   explicit split files (``data.split_inputs``); no request is in two splits;
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

from mtrank.data import sources, validation
from mtrank.data.config import PipelineConfig
from mtrank.data.encoding import FeatureEncoder
from mtrank.data.errors import DataValidationError
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
    side_files = [sources.resolve_inputs([t.path], f"data.side_tables[{i}].path")[0] for i, t in enumerate(cfg.side_tables)]
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
    if cfg.split_inputs:
        return {s: sources.resolve_inputs(p, f"data.split_inputs.{s}") for s, p in cfg.split_inputs.items()}
    return {"all": sources.resolve_inputs(cfg.inputs, "data.inputs")}


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


# --------------------------------------------------------------------------------------------- reading


def _impression_columns(cfg: PipelineConfig) -> tuple[list[str], list[str]]:
    """Categorical and numeric feature columns read from the impression files (not from side tables)."""
    side = {c for t in cfg.side_tables for c in (*t.categorical, *t.numeric, *t.log_numeric)}
    cats = [c for c in cfg.categorical if c not in side]
    nums = [c for c in cfg.numeric + cfg.log_numeric if c not in side]
    return cats, nums


def _read_impressions(cfg: PipelineConfig, files: list[Path]) -> tuple[pl.LazyFrame, dict, bool]:
    cols = cfg.columns
    cats, nums = _impression_columns(cfg)
    roles = validation.column_roles(cols, cfg.tasks, cats, nums)
    for i, t in enumerate(cfg.side_tables):
        roles.setdefault(t.on, validation.Role("id", f"data.side_tables[{i}].on"))
    label_cols = [cols.labels[t] for t in cfg.tasks]
    required = [c for c in (cols.request_id, cols.item_id, cols.time) if c]
    frames, schemas, missing = [], [], {}
    for path in files:
        lf = sources.scan(path)
        schema = lf.collect_schema()
        validation.check_schema(path, schema, roles)
        counts = validation.check_values(path, lf, label_cols, nums, required, cfg.encoding.nan_policy)
        for c, n in counts.items():
            missing[c] = missing.get(c, 0) + n
        frames.append((path, lf))
        schemas.append(schema)
    ptrue_cols = []
    if cols.p_true_prefix:
        ptrue_cols = [cols.p_true_prefix + t for t in cfg.tasks]
        if not all(all(c in s for c in ptrue_cols) for s in schemas):
            ptrue_cols = []
    has_p_true = bool(ptrue_cols)
    # one dtype per id/categorical column across files
    casts: dict[str, pl.DataType] = {}
    for c in set(cats) | {c for c in (cols.request_id, cols.item_id) if c} | {t.on for t in cfg.side_tables}:
        casts[c] = validation.unify_categorical_dtype([s[c] for s in schemas])
    selected = []
    keep = list(dict.fromkeys([c for c in (cols.request_id, cols.item_id, cols.time) if c] + cats + nums
                              + [t.on for t in cfg.side_tables] + label_cols + ptrue_cols))
    for path, lf in frames:
        exprs = []
        for c in keep:
            e = pl.col(c)
            if c in casts:
                e = e.cast(casts[c])
            elif c in nums or c in ptrue_cols:
                e = e.cast(pl.Float64)
            elif c in label_cols:
                e = e.cast(pl.UInt8)
            elif c == cols.time and schemas[0][c].is_temporal():
                e = e.cast(pl.Datetime("us")).dt.epoch("us")
            exprs.append(e)
        selected.append(lf.select(exprs))
    raw = pl.concat(selected, how="vertical")
    return raw, {"numeric_missing": missing, "ptrue_cols": ptrue_cols, "casts": casts}, has_p_true


def _join_side_tables(cfg: PipelineConfig, raw: pl.LazyFrame, side_files: list[Path], casts: dict) -> tuple[pl.LazyFrame, dict]:
    missing: dict[str, int] = {}
    for i, (t, path) in enumerate(zip(cfg.side_tables, side_files)):
        lf = sources.scan(path)
        schema = lf.collect_schema()
        roles = {t.on: validation.Role("id", f"data.side_tables[{i}].on")}
        roles.update({c: validation.Role("categorical", f"data.side_tables[{i}].categorical") for c in t.categorical})
        roles.update({c: validation.Role("numeric", f"data.side_tables[{i}].numeric") for c in (*t.numeric, *t.log_numeric)})
        validation.check_schema(path, schema, roles)
        nums = [*t.numeric, *t.log_numeric]
        counts = validation.check_values(path, lf, [], nums, [t.on], cfg.encoding.nan_policy)
        missing.update(counts)
        dups = lf.select(pl.col(t.on).is_duplicated().sum()).collect().item()
        if dups:
            raise DataValidationError(
                f"side table {path} has {dups} rows with a duplicated key '{t.on}'; a join would multiply impressions"
            )
        key_type = casts.get(t.on, pl.Int64)
        side = lf.select(
            pl.col(t.on).cast(key_type),
            *[pl.col(c).cast(validation.unify_categorical_dtype([schema[c]])) for c in t.categorical],
            *[pl.col(c).cast(pl.Float64) for c in nums],
        )
        raw = raw.join(side, on=t.on, how="left", maintain_order="left")
    return raw, missing


# --------------------------------------------------------------------------------------------- splitting


def _uniform_from_hash(expr: pl.Expr, seed: int) -> pl.Expr:
    return (expr.hash(seed=seed) % 1_000_003).cast(pl.Float64) / 1_000_003.0


def _assign_splits(cfg: PipelineConfig, lf: pl.LazyFrame) -> pl.LazyFrame:
    v, t = cfg.split.val_fraction, cfg.split.test_fraction
    if cfg.split.by == "time":
        reqs = (
            lf.group_by(REQUEST_COL)
            .agg(pl.col("__time").min().alias("__t"))
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


# --------------------------------------------------------------------------------------------- build


def _build(cfg: PipelineConfig, split_files: dict[str, list[Path]], side_files: list[Path], out: Path) -> dict:
    cols = cfg.columns
    frames: dict[str, pl.LazyFrame] = {}
    missing: dict[str, int] = {}
    has_p_true = True
    info = {}
    for s, files in split_files.items():
        raw, info, hp = _read_impressions(cfg, files)
        has_p_true &= hp
        for c, n in info["numeric_missing"].items():
            missing[c] = missing.get(c, 0) + n
        raw, side_missing = _join_side_tables(cfg, raw, side_files, info["casts"])
        for c, n in side_missing.items():
            missing[c] = missing.get(c, 0) + n
        raw = raw.with_row_index(_ROW)
        raw = raw.with_columns(
            _id_expr(cols.request_id, info["casts"]).alias(REQUEST_COL),
            _id_expr(cols.item_id, info["casts"]).alias(ITEM_COL),
        )
        if cols.time:
            raw = raw.with_columns(pl.col(cols.time).cast(pl.Int64).alias("__time"))
        frames[s] = raw
    if "all" in frames:
        materialised = _assign_splits(cfg, frames.pop("all")).collect()
        frames = {s: materialised.filter(pl.col(_SPLIT) == s).lazy() for s in SPLITS}
    else:
        frames = {s: frames[s].collect().lazy() for s in frames}
    _check_disjoint_requests(frames)
    rows = {s: frames[s].select(pl.len()).collect().item() for s in frames}
    if rows.get("train", 0) == 0:
        raise DataValidationError("the train split is empty after splitting; check data.split and data.inputs")
    for s, n in rows.items():
        if n == 0:
            raise DataValidationError(
                f"the {s} split is empty after splitting; raise data.split.{s}_fraction or give data.split_inputs.{s}"
            )
    if any(missing.values()):
        log.warning(
            "Numeric null/NaN values filled with the train mean (data.encoding.nan_policy=fill_mean): %s",
            {c: n for c, n in missing.items() if n},
        )

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


def _check_disjoint_requests(frames: dict[str, pl.LazyFrame]) -> None:
    ids = {s: frames[s].select(pl.col(REQUEST_COL).unique()).collect()[REQUEST_COL] for s in frames}
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
