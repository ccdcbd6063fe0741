"""Raw engagement logs → processed shards + ``metadata.json``, with Polars.

Steps:

1. resolve and scan the raw files (Parquet or CSV) and check each one: columns, dtypes, labels in {0, 1},
   no null ids, whole numbers in float-coded categoricals, the NaN policy for numerics; give every categorical
   column one dtype across all files and splits; put the time column on one scale (epochs with a unit and a time
   zone, dates, datetimes, ISO strings); find duplicated impressions (``data.pipeline.duplicates``: repeats of an earlier
   row's key, every column by default) and keep, drop or refuse them, never silently
   (:mod:`mtrank.data.reading`, :mod:`mtrank.data.validation`);
2. left-join the side tables (user / item features), counting impressions without a matching row;
3. split train / val / test by time (whole requests, in time order; by fractions or at cut points
   ``split.val_start`` / ``test_start``), by request hash, or per row; or take explicit split files
   (``data.pipeline.split_inputs``, all of them or only val / test beside ``data.pipeline.inputs``); no request is in two splits;
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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mtrank.data import reading, sources
from mtrank.data.build_checks import (
    check_disjoint_requests,
    check_numeric_stats,
    check_oov,
    check_positives,
    check_vocabularies,
    impression_rows,
    log_split_sizes,
    present_splits,
    summarise,
    warn_ignored_split_keys,
)
from mtrank.data.config import PipelineConfig
from mtrank.data.downsample import downsample_counts, keep_expr
from mtrank.data.encoding import FeatureEncoder
from mtrank.data.errors import DataValidationError
from mtrank.data.shards import (
    SHUFFLE_KEY,
    SHUFFLE_SALT,
    ShardWriter,
    shuffle_into,
    sink_by_split,
)
from mtrank.data.spec import (
    ITEM_COL,
    LABEL_PREFIX,
    PTRUE_PREFIX,
    REQUEST_COL,
    FeatureSpec,
)
from mtrank.data.splits import (
    ROW_INDEX,
    SPLIT_CODE,
    SPLITS,
    cut_points,
    split_code,
)
from mtrank.utils.tmpdirs import PREFIX as TMP_PREFIX
from mtrank.utils.tmpdirs import make_tmp_dir, remove_stale

log = logging.getLogger(__name__)


SCHEMA_VERSION = 1


METADATA_FILE = "metadata.json"


_WORK = "_work"  # intermediate files, inside the temporary build folder


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
    def load(cls, directory: Path | str) -> ProcessedData:
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
        data = ProcessedData.load(final)
        _log_cached_split_sizes(data.metadata)
        return data
    processed_root.mkdir(parents=True, exist_ok=True)
    remove_stale(processed_root, (f"{TMP_PREFIX}{cfg.name}-*",))  # left by killed runs
    tmp = make_tmp_dir(processed_root, f"{cfg.name}-{key}")
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
        try:
            os.rename(tmp, final)
        except OSError:  # a concurrent run renamed its copy into place between the check and the rename
            if force or not (final / METADATA_FILE).exists():
                raise
            shutil.rmtree(tmp)
            log.info("Processed data %s was written meanwhile by another run: using it", final)
            return ProcessedData.load(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("Processed data written to %s", final)
    return ProcessedData.load(final)


def _log_cached_split_sizes(meta: Mapping[str, Any]) -> None:
    """The split sizes and ignored split keys of a cached data set, as when it was built: every run says them."""
    sizes = meta.get("split_sizes")
    if sizes:
        for s, m in sizes.items():
            log.info(
                "Split %s: %d rows, %d requests, positives per task %s", s, m["rows"], m["requests"], m["positives"]
            )
    else:  # processed before the sizes were recorded
        log.info("Split rows: %s", {s: m["rows"] for s, m in meta.get("splits", {}).items()})
    for key in meta.get("ignored_split_keys") or []:
        log.warning(
            "%s is ignored: that split comes from data.pipeline.split_inputs (see the warning when %s was built)",
            key,
            meta.get("name", "this data set"),
        )


def _resolve_split_files(cfg: PipelineConfig) -> dict[str, list[Path]]:
    """``{"all": data.pipeline.inputs}`` (split by data.pipeline.split) and/or ``{split: data.pipeline.split_inputs.<split>}``.

    With a train file in ``split_inputs`` the explicit files are the whole data set (``inputs`` is ignored);
    without one, ``inputs`` is split into train and the splits ``split_inputs`` does not give.
    """
    given = dict(cfg.split_inputs or {})
    out: dict[str, list[Path]] = {}
    if "train" not in given:
        out["all"] = sources.resolve_inputs(cfg.inputs, "data.pipeline.inputs")
    elif cfg.inputs:
        log.info("data.pipeline.split_inputs.train is set: data.pipeline.inputs is not used")
    for s in SPLITS:
        if s in given:
            out[s] = sources.resolve_inputs(given[s], f"data.pipeline.split_inputs.{s}")
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


def _build(cfg: PipelineConfig, split_files: dict[str, list[Path]], side_files: list[Path], out: Path) -> dict:
    """Streamed: every step is a lazy plan over the raw files (a pass), so that memory does not grow with the
    number of impressions; only small tables (one row per request for time splits, the vocabularies) and one
    bucket of shuffled train rows at a time are held. Intermediate files stay in ``out/_work``."""
    cols = cfg.columns
    imp = reading.read_impressions(cfg, split_files)
    has_p_true = bool(imp.ptrue_cols)
    side = reading.read_side_tables(cfg, side_files, imp.casts, imp.columns)
    cuts = cut_points(cfg, imp.time_dtype)
    rows_lf = impression_rows(cfg, imp, side, cuts)
    present = present_splits(cfg, imp)

    # one pass: rows, side-table matches, missing numerics, positives and downsampling counts, per split
    summary = summarise(cfg, rows_lf, side, present)
    rows = {s: summary[s]["rows"] for s in present}
    split_sizes = log_split_sizes(cfg, summary, present)
    ignored_split_keys = warn_ignored_split_keys(cfg)

    def sample(split: str, col: str) -> list:
        return (
            rows_lf.filter(pl.col(SPLIT_CODE) == split_code(split))
            .select(pl.col(col))
            .drop_nulls()
            .head(3)
            .collect()[col]
            .to_list()
        )

    side_report = reading.side_table_report(
        side,
        rows,
        {st.table.name: {s: summary[s][f"unmatched:{st.table.name}"] for s in present} for st in side},
        cfg.encoding.nan_policy,
        sample,
    )
    check_disjoint_requests(cfg, rows_lf, list(imp.frames))
    if rows.get("train", 0) == 0:
        raise DataValidationError(
            "the train split is empty after splitting; check data.pipeline.split and data.pipeline.inputs"
        )
    for s, n in rows.items():
        if n == 0:
            hint = f"move data.pipeline.split.{s}_start" if cuts else f"raise data.pipeline.split.{s}_fraction"
            raise DataValidationError(
                f"the {s} split is empty after splitting; {hint} or give data.pipeline.split_inputs.{s}"
            )
    check_positives(cfg, summary, present)
    numeric = list(cfg.numeric + cfg.log_numeric)
    missing = {c: sum(summary[s][f"missing:{c}"] for s in present) for c in numeric}
    if any(missing.values()):
        log.warning(
            "Numeric null/NaN values filled with the train mean (data.pipeline.encoding.nan_policy=fill_mean): %s",
            {c: n for c, n in missing.items() if n},
        )

    train_lf = rows_lf.filter(pl.col(SPLIT_CODE) == split_code("train"))
    encoder = FeatureEncoder(
        categorical=list(cfg.categorical), numeric=list(cfg.numeric), log_numeric=list(cfg.log_numeric)
    ).fit(train_lf, cfg.encoding.min_count, cfg.encoding.max_vocab, rows=rows["train"])
    check_vocabularies(cfg, encoder)
    check_numeric_stats(cfg, encoder)

    label_exprs = [pl.col(cols.labels[t]).cast(pl.UInt8).alias(LABEL_PREFIX + t) for t in cfg.tasks]
    ptrue_exprs = (
        [pl.col((cols.p_true_prefix or "") + t).cast(pl.Float32).alias(PTRUE_PREFIX + t) for t in cfg.tasks]
        if has_p_true
        else []
    )
    encoded = [pl.col(REQUEST_COL), pl.col(ITEM_COL), *encoder.expressions(), *label_exprs, *ptrue_exprs]
    counts = downsample_counts(summary["train"], cfg.tasks, cfg.downsample.beta)
    keep, _ = keep_expr([pl.col(cols.labels[t]) for t in cfg.tasks], cfg.downsample.beta, cfg.downsample.seed)

    # one pass writes the kept train rows and the val / test rows, encoded, to _work (one folder per split); then
    # train is shuffled bucket by bucket and val / test are cut into shards in their input order
    work = out / _WORK
    shuffle_key = pl.col(ROW_INDEX).hash(seed=cfg.downsample.seed).hash(seed=SHUFFLE_SALT).alias(SHUFFLE_KEY)
    plan = rows_lf.filter((pl.col(SPLIT_CODE) != split_code("train")) | keep).select(
        *encoded, shuffle_key, pl.col(ROW_INDEX), pl.col(SPLIT_CODE)
    )
    parts = sink_by_split(plan, work, present, cfg.row_group_size)
    schema = {c: t for c, t in plan.collect_schema().items() if c not in (SPLIT_CODE, SHUFFLE_KEY, ROW_INDEX)}
    names = list(schema)
    splits_meta = {}
    for s in present:
        writer = ShardWriter(out / s, out, cfg)
        expected = counts["rows_after"] if s == "train" else rows[s]
        if s == "train":
            shuffle_into(writer, parts[s], expected, schema)
        else:
            for off in range(0, expected, cfg.rows_per_shard):
                writer.add(pl.scan_parquet(parts[s]).slice(off, cfg.rows_per_shard).select(names).collect())
        splits_meta[s] = writer.close()
        if splits_meta[s]["rows"] != expected:  # a safety net: the intermediate files must hold every row
            raise RuntimeError(f"the {s} split has {splits_meta[s]['rows']} rows in its shards; expected {expected}")
    shutil.rmtree(work)
    check_oov(cfg, splits_meta)
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
        "split_sizes": split_sizes,  # before downsampling: rows, requests, positives per task
        "ignored_split_keys": ignored_split_keys,
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
