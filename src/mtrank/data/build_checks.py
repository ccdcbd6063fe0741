"""Checks of a processing build: positives per split and task, vocabularies, OOV rates, requests kept in one split."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import polars as pl

from mtrank.data import reading
from mtrank.data.config import PipelineConfig
from mtrank.data.downsample import downsample_aggs, keep_expr
from mtrank.data.encoding import FeatureEncoder
from mtrank.data.errors import DataValidationError
from mtrank.data.reading import id_expr
from mtrank.data.spec import (
    ITEM_COL,
    REQUEST_COL,
)
from mtrank.data.splits import (
    ROW_INDEX,
    SPLIT_CODE,
    SPLITS,
    assign_splits,
    split_code,
)

log = logging.getLogger(__name__)


def present_splits(cfg: PipelineConfig, imp: reading.Impressions) -> list[str]:
    """The splits of this data set, in SPLITS order: those cut from data.pipeline.inputs and those given as files."""
    have = set(cfg.produced_splits if "all" in imp.frames else ()) | {s for s in imp.frames if s != "all"}
    return [s for s in SPLITS if s in have]


def impression_rows(
    cfg: PipelineConfig, imp: reading.Impressions, side: list[reading.SideFrame], cuts: Mapping[str, int]
) -> pl.LazyFrame:
    """Every impression, lazily: side tables joined, ``__row`` (running on across the split files, so row-number
    ids never repeat between splits), ``request_id`` / ``item_id`` and ``__split``."""
    cols = cfg.columns
    parts = []
    offset = 0
    # "all" (the files split by data.pipeline.split) first, so that its row numbers do not depend on data.pipeline.split_inputs
    for s in sorted(imp.frames, key=lambda k: k != "all"):
        raw = reading.join_side_tables(imp.frames[s], side).with_row_index(ROW_INDEX, offset=offset)
        raw = raw.with_columns(
            id_expr(cols.request_id, imp.casts).alias(REQUEST_COL),
            id_expr(cols.item_id, imp.casts).alias(ITEM_COL),
        )
        parts.append(assign_splits(cfg, raw, cuts) if s == "all" else raw.with_columns(split_code(s).alias(SPLIT_CODE)))
        offset += imp.group_rows[s]
    return parts[0] if len(parts) == 1 else pl.concat(parts, how="vertical")


def summarise(
    cfg: PipelineConfig, rows_lf: pl.LazyFrame, side: list[reading.SideFrame], present: list[str]
) -> dict[str, dict[str, int]]:
    """Per split: rows, impressions without a side-table row, null/NaN numerics, and the downsampling counts."""
    labels = {t: pl.col(cfg.columns.labels[t]) for t in cfg.tasks}
    keep, engaged = keep_expr(list(labels.values()), cfg.downsample.beta, cfg.downsample.seed)
    aggs = [pl.len().alias("rows"), pl.col(REQUEST_COL).n_unique().alias("requests")]
    aggs += [pl.col(reading.marker(st.table)).null_count().alias(f"unmatched:{st.table.name}") for st in side]
    aggs += [
        (pl.col(c).is_null() | pl.col(c).is_nan()).sum().alias(f"missing:{c}") for c in cfg.numeric + cfg.log_numeric
    ]
    aggs += downsample_aggs(labels, keep, engaged)
    df = rows_lf.group_by(SPLIT_CODE).agg(aggs).collect(engine="streaming")
    found = {SPLITS[r.pop(SPLIT_CODE)]: {k: int(v or 0) for k, v in r.items()} for r in df.iter_rows(named=True)}
    zero = {c: 0 for c in df.columns if c != SPLIT_CODE}
    return {s: found.get(s, dict(zero)) for s in present}


def check_positives(cfg: PipelineConfig, summary: Mapping[str, Mapping[str, int]], present: list[str]) -> None:
    """A task without a positive train label cannot be learnt (error); one without positives in val / test
    cannot be evaluated (warning)."""
    for t in cfg.tasks:
        col = cfg.columns.labels[t]
        if summary["train"][f"ds:pos:{t}"] == 0:
            raise DataValidationError(
                f"task '{t}' has no positive label in the train split: label column '{col}' "
                f"(data.pipeline.columns.labels.{t}) is 0 on all {summary['train']['rows']} train rows, so its head cannot "
                f"learn; drop '{t}' from tasks.names, or check the label column and data.pipeline.split"
            )
        if summary["train"][f"ds:pos:{t}"] == summary["train"]["rows"]:
            raise DataValidationError(
                f"task '{t}' has no negative label in the train split: label column '{col}' "
                f"(data.pipeline.columns.labels.{t}) is 1 on all {summary['train']['rows']} train rows, so its head cannot "
                f"learn to rank; drop '{t}' from tasks.names, or check the label column and data.pipeline.split"
            )
        empty = [s for s in present if s != "train" and summary[s][f"ds:pos:{t}"] == 0]
        if empty:
            log.warning(
                "Task '%s' (label column '%s') has no positive label in the %s split(s): its AUROC / AP there are "
                "undefined",
                t,
                col,
                ", ".join(empty),
            )
        full = [
            s
            for s in present
            if s != "train" and summary[s]["rows"] and summary[s][f"ds:pos:{t}"] == summary[s]["rows"]
        ]
        if full:
            log.warning(
                "Task '%s' (label column '%s') has no negative label in the %s split(s): its AUROC / AP there are "
                "undefined",
                t,
                col,
                ", ".join(full),
            )


def _feature_key(cfg: PipelineConfig, col: str) -> str:
    for t in cfg.side_tables:
        if col in t.features:
            return f"{t.key}.categorical"
    return "data.pipeline.columns.categorical"


def check_vocabularies(cfg: PipelineConfig, encoder: FeatureEncoder) -> None:
    for c in encoder.categorical:
        if encoder.vocabularies[c].height == 0:
            limit = (
                f" within data.pipeline.encoding.max_vocab={cfg.encoding.max_vocab}"
                if cfg.encoding.max_vocab is not None
                else ""
            )
            raise DataValidationError(
                f"categorical column '{c}' ({_feature_key(cfg, c)}) has an empty vocabulary: none of its train values "
                f"is seen at least data.pipeline.encoding.min_count={cfg.encoding.min_count} times{limit} (or every train "
                "value is null), so every row would get the out-of-vocabulary index; lower data.pipeline.encoding.min_count "
                f"or drop '{c}' from {_feature_key(cfg, c)}"
            )


def check_oov(cfg: PipelineConfig, splits_meta: Mapping[str, Mapping[str, Any]]) -> None:
    """Log the out-of-vocabulary fraction of every categorical column in val / test; error above
    ``data.pipeline.encoding.max_oov_fraction``."""
    frac = {
        s: {c: m["oov"][c] / m["rows"] for c in cfg.categorical}
        for s, m in splits_meta.items()
        if s != "train" and m["rows"]
    }
    for s, f in frac.items():
        log.info(
            "Out-of-vocabulary fraction per categorical column in the %s split: %s",
            s,
            {c: round(x, 4) for c, x in f.items()},
        )
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
            f"never seen in train, seen fewer than data.pipeline.encoding.min_count={cfg.encoding.min_count} times, beyond "
            f"data.pipeline.encoding.max_vocab, or null); expected at most data.pipeline.encoding.max_oov_fraction={limit}"
            + (f" (also over: {', '.join(others)})" if others else "")
            + f". Its {s} ids are mostly unknown to the model: check data.pipeline.split, drop the column, or raise the limit"
        )


def check_disjoint_requests(cfg: PipelineConfig, rows_lf: pl.LazyFrame, groups: list[str]) -> None:
    """No request id in two splits. Without a request id column every impression is its own request (row
    numbers never repeat); time and request splits of data.pipeline.inputs keep requests whole by construction, so only
    explicit split files and ``split.by=random`` are checked (a pass over one row per request)."""
    if not cfg.columns.request_id or (groups == ["all"] and cfg.split.by != "random"):
        return
    pairs = [(a, b) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1 :]]
    flags = rows_lf.group_by(REQUEST_COL).agg([(pl.col(SPLIT_CODE) == split_code(s)).any().alias(s) for s in SPLITS])
    both = flags.select([(pl.col(a) & pl.col(b)).sum().alias(f"{a}|{b}") for a, b in pairs]).collect(engine="streaming")
    for a, b in pairs:
        n = int(both[f"{a}|{b}"][0])
        if n:
            hint = (
                "data.pipeline.split.by=random splits rows, not requests: use split.by=request"
                if cfg.split.by == "random" and "all" in groups
                else "check data.pipeline.split_inputs"
            )
            raise DataValidationError(
                f"{n} request id(s) appear in both the {a} and the {b} split; "
                f"a request's candidates must stay in one split ({hint})"
            )


# a numeric feature whose bulk spans less than this many standard deviations (median absolute deviation / std)
# is flattened by z-scoring: a few extreme values set the std and every other row maps to about the same value
COLLAPSED_SPREAD = 1e-3


def check_numeric_stats(cfg: PipelineConfig, encoder: FeatureEncoder) -> None:
    """The z-score statistics must be finite (an overflowing std would write ``Infinity`` into metadata.json and
    map every row to 0); a column flattened by a few extreme values gets a warning that names it."""
    for c in encoder.numeric_all:
        st, sp = encoder.stats[c], encoder.spread.get(c, {})
        key = "data.pipeline.columns.log_numeric" if c in encoder.log_numeric else "data.pipeline.columns.numeric"
        if not (math.isfinite(st["mean"]) and math.isfinite(st["std"])):
            raise DataValidationError(
                f"numeric column '{c}' ({key}) has train values too large for its statistics (min {sp.get('min')}, "
                f"max {sp.get('max')}; mean {st['mean']}, std {st['std']} overflow float64): after z-scoring every "
                "row would be 0. Expected values of a usable magnitude: remove or clip the extreme values, or list "
                "the column in data.pipeline.columns.log_numeric"
            )
        mad = sp.get("mad")
        if mad and st["std"] > 0 and mad / st["std"] < COLLAPSED_SPREAD:
            log.warning(
                "Numeric column '%s' (%s) is nearly constant after z-scoring: its train values span min %.6g to max "
                "%.6g, std %.6g, but half of the rows lie within %.6g of the median (%.3g std), so a few extreme values "
                "set the scale; clip or clean them, or list the column in data.pipeline.columns.log_numeric",
                c,
                key,
                sp.get("min"),
                sp.get("max"),
                st["std"],
                mad,
                mad / st["std"],
            )


def log_split_sizes(cfg: PipelineConfig, summary: Mapping[str, Mapping[str, int]], present: list[str]) -> dict:
    """One INFO line per split: rows, requests and positives per task (before downsampling); returned for
    metadata.json."""
    sizes = {}
    for s in present:
        m = summary[s]
        sizes[s] = {
            "rows": int(m["rows"]),
            "requests": int(m.get("requests", m["rows"])),
            "positives": {t: int(m[f"ds:pos:{t}"]) for t in cfg.tasks},
        }
        log.info(
            "Split %s: %d rows, %d requests, positives per task %s",
            s,
            sizes[s]["rows"],
            sizes[s]["requests"],
            sizes[s]["positives"],
        )
    return sizes


def warn_ignored_split_keys(cfg: PipelineConfig) -> list[str]:
    """Warn for every configured split fraction or cut point that ``data.pipeline.split_inputs`` makes the pipeline ignore,
    naming the key; returns the keys."""
    from mtrank.data.config import SplitConfig

    given = set(cfg.split_inputs or {})
    if not given:
        return []
    produced = cfg.produced_splits
    default = SplitConfig()
    ignored = []
    for s in ("val", "test"):
        if s in produced:
            continue
        frac, start = getattr(cfg.split, f"{s}_fraction"), getattr(cfg.split, f"{s}_start")
        if start is not None:
            ignored.append((f"data.pipeline.split.{s}_start", start))
        # with every split given as files a default fraction is not a choice the user made; with some given, the
        # fraction they may think applies is dropped and the others take its share
        if not cfg.split.cut_points and frac and (produced or frac != getattr(default, f"{s}_fraction")):
            ignored.append((f"data.pipeline.split.{s}_fraction", frac))
    names = [k for k, _ in ignored]
    for k, v in ignored:
        split = k.rsplit(".", 1)[1].split("_")[0]
        if produced:
            rest = ", ".join(f"{p}" for p in produced)
            how = (
                f"data.pipeline.inputs is cut into {rest} only"
                + (
                    f" (data.pipeline.split.val_fraction = {cfg.split.val_fraction} of data.pipeline.inputs, the rest train)"
                    if produced == ("train", "val") and not cfg.split.cut_points
                    else ""
                )
                + (
                    f" (val from data.pipeline.split.val_start = {cfg.split.val_start!r} to the end of data.pipeline.inputs)"
                    if produced == ("train", "val") and cfg.split.cut_points
                    else ""
                )
            )
        else:
            how = "data.pipeline.split_inputs gives every split as files, data.pipeline.inputs and data.pipeline.split are not used"
        log.warning(
            "%s = %r is ignored: the %s split comes from data.pipeline.split_inputs.%s, so %s", k, v, split, split, how
        )
    return names
