"""Reading raw logs for the pipeline: scan and validate every file, give each column one dtype across all files
and splits, put the time column on one scale, and join the side tables.

Everything here is lazy except the checks, which each make one pass over one file so that an error names it.

Time: the pipeline orders and cuts impressions by ``__time``, an Int64:

* an integer or float time column without ``columns.time_unit`` is used as it is (any ordered numbers);
* instants (integer epochs with ``columns.time_unit``, zone-aware datetimes, strings with a UTC offset) become the
  wall-clock time in ``columns.time_zone`` (UTC when unset), in microseconds since 1970-01-01;
* wall-clock values (dates, naive datetimes, strings without an offset) are taken as they are, in microseconds.

So ``split.val_start: "2022-04-29"`` means midnight of that day on the clock of ``columns.time_zone``.
"""

from __future__ import annotations

import datetime as _dt
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import polars as pl

from mtrank.data import sources, validation
from mtrank.data.config import PipelineConfig, SideTable
from mtrank.data.errors import DataValidationError

log = logging.getLogger(__name__)

TIME_COL = "__time"
_MATCH_PREFIX = "__matched_"
_KEY = "__side_key"


# --------------------------------------------------------------------------------------------- time


def _uses_clock(dtype: pl.DataType, unit: str | None) -> bool:
    """True when the time column is read as calendar time (microseconds), False for plain ordered numbers."""
    return dtype.is_temporal() or dtype == pl.String or (unit is not None and (dtype.is_integer() or dtype.is_float()))


def time_expr(col: str, dtype: pl.DataType, unit: str | None, zone: str | None) -> pl.Expr:
    """``col`` as the pipeline's Int64 time (see the module docstring)."""
    zone = zone or "UTC"
    e = pl.col(col)
    if dtype == pl.String:
        e = e.str.to_datetime(time_unit="us", time_zone=zone, strict=True).dt.replace_time_zone(None)
    elif dtype.is_temporal():
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
            e = e.dt.convert_time_zone(zone).dt.replace_time_zone(None)
        e = e.cast(pl.Datetime("us"))
    elif unit is not None:
        e = pl.from_epoch(e.cast(pl.Int64), time_unit=unit)
        e = e.dt.replace_time_zone("UTC").dt.convert_time_zone(zone).dt.replace_time_zone(None).cast(pl.Datetime("us"))
    else:
        return e.cast(pl.Int64)
    return e.dt.epoch("us")


def cut_point(value: Any, key: str, col: str, dtype: pl.DataType, unit: str | None, zone: str | None) -> int:
    """A ``split.val_start`` / ``test_start`` value on the scale of :func:`time_expr`."""
    if isinstance(value, (_dt.date, _dt.datetime)):
        value = value.isoformat()
    clock = _uses_clock(dtype, unit)
    if isinstance(value, str):
        if not clock:
            raise DataValidationError(
                f"{key} = {value!r} is a date, but the time column '{col}' holds plain numbers ({dtype}); give a "
                "number on its scale, or set data.columns.time_unit (s | ms | us | ns) if it holds Unix epochs"
            )
        parsed = pl.Series([value]).str.to_datetime(time_unit="us", time_zone=zone or "UTC", strict=False)
        if parsed.null_count():
            raise DataValidationError(f"{key} = {value!r} is not an ISO date or datetime (e.g. 2022-04-29 or 2022-04-29 06:00)")
        return int(parsed.dt.replace_time_zone(None).dt.epoch("us")[0])
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataValidationError(f"{key} = {value!r}: expected a number or an ISO date string")
    if clock and not (unit is not None and (dtype.is_integer() or dtype.is_float())):
        raise DataValidationError(
            f"{key} = {value!r} is a number, but the time column '{col}' holds dates or datetimes ({dtype}); "
            "give an ISO date string such as 2022-04-29"
        )
    frame = pl.DataFrame({col: [value]}).with_columns(pl.col(col).cast(dtype))
    return int(frame.select(time_expr(col, dtype, unit, zone)).item())


# --------------------------------------------------------------------------------------------- impressions


@dataclass
class Impressions:
    """The typed impression frames (one per key of ``split_files``) and what reading them found."""

    frames: dict[str, pl.LazyFrame]
    casts: dict[str, pl.DataType]  # the one dtype of every categorical / id column (Int64 or String)
    ptrue_cols: list[str]
    duplicates: dict[str, int]  # file -> rows that are exact copies of an earlier row of the file
    columns: list[str]  # the raw columns kept (besides __time)
    time_dtype: pl.DataType | None = None
    rows: dict[str, int] = field(default_factory=dict)


def impression_columns(cfg: PipelineConfig) -> tuple[list[str], list[str]]:
    """Categorical and numeric feature columns read from the impression files (not from side tables)."""
    side = {c for t in cfg.side_tables for c in t.features}
    cats = [c for c in cfg.categorical if c not in side]
    nums = [c for c in cfg.numeric + cfg.log_numeric if c not in side]
    return cats, nums


def read_impressions(cfg: PipelineConfig, split_files: Mapping[str, list[Path]]) -> Impressions:
    """Scan and check every impression file, then select the configured columns with one dtype each."""
    cols = cfg.columns
    cats, nums = impression_columns(cfg)
    roles = validation.column_roles(cols, cfg.tasks, cats, nums)
    for t in cfg.side_tables:
        roles.setdefault(t.on, validation.Role("id", f"{t.key}.on"))
    label_cols = [cols.labels[t] for t in cfg.tasks]
    required = [c for c in (cols.request_id, cols.item_id, cols.time) if c]
    ids = [c for c in (cols.request_id, cols.item_id) if c]
    code_like = list(dict.fromkeys(cats + ids + [t.on for t in cfg.side_tables]))

    scanned: dict[str, list[tuple[Path, pl.LazyFrame, Mapping[str, pl.DataType]]]] = {}
    duplicates: dict[str, int] = {}
    rows: dict[str, int] = {}
    for s, files in split_files.items():
        scanned[s] = []
        for path in files:
            lf = sources.scan(path)
            schema = lf.collect_schema()
            validation.check_schema(path, schema, roles)
            report = validation.inspect_file(
                path, lf, label_cols, nums, required, cfg.encoding.nan_policy,
                code_cols=validation.float_code_columns(schema, code_like), count_duplicates=True,
            )
            duplicates[str(path)] = int(report.duplicates or 0)
            rows[str(path)] = report.rows
            if cols.time and schema[cols.time] == pl.String:
                validation.check_time_strings(path, lf, cols.time)
            scanned[s].append((path, lf, schema))
    all_scanned = [x for xs in scanned.values() for x in xs]
    schemas = [schema for _, _, schema in all_scanned]

    # one dtype per categorical / id column across every file of every split, so that the vocabulary fitted on
    # train applies to val and test
    casts = {c: validation.unify_categorical_dtype([sc[c] for sc in schemas]) for c in code_like}
    time_dtype = None
    if cols.time:
        kinds = {_time_kind(sc[cols.time], cols.time_unit) for sc in schemas}
        if len(kinds) > 1:
            detail = ", ".join(f"{p}: {sc[cols.time]}" for p, _, sc in all_scanned)
            raise DataValidationError(
                f"the time column '{cols.time}' (data.columns.time) has incompatible dtypes across files ({detail}); "
                "expected the same kind (numbers, or dates / datetimes / date strings) in every file"
            )
        time_dtype = schemas[0][cols.time]
    ptrue_cols: list[str] = []
    if cols.p_true_prefix:
        ptrue_cols = [cols.p_true_prefix + t for t in cfg.tasks]
        if not all(all(c in sc for c in ptrue_cols) for sc in schemas):
            ptrue_cols = []

    # the raw time column is read only as __time, unless it is a feature too
    keep = list(dict.fromkeys(ids + cats + nums + [t.on for t in cfg.side_tables] + label_cols + ptrue_cols))
    frames = {}
    for s, items in scanned.items():
        selected = []
        for path, lf, schema in items:
            exprs = []
            for c in keep:
                if c in casts:
                    exprs.append(validation.categorical_cast(c, schema[c], casts[c]).alias(c))
                elif c in nums or c in ptrue_cols:
                    exprs.append(pl.col(c).cast(pl.Float64))
                elif c in label_cols:
                    exprs.append(pl.col(c).cast(pl.UInt8))
                else:
                    exprs.append(pl.col(c))
            if cols.time:
                exprs.append(time_expr(cols.time, schema[cols.time], cols.time_unit, cols.time_zone).alias(TIME_COL))
            selected.append(lf.select(exprs))
        frames[s] = pl.concat(selected, how="vertical")
    dup_files = {f: n for f, n in duplicates.items() if n}
    if dup_files:
        log.warning(
            "Exact duplicate rows (every column equal to an earlier row) are KEPT as separate impressions; "
            "the pipeline never deduplicates: %s",
            dup_files,
        )
    return Impressions(frames, casts, ptrue_cols, duplicates, keep, time_dtype, rows)


def _time_kind(dtype: pl.DataType, unit: str | None) -> str:
    return "clock" if _uses_clock(dtype, unit) else "number"


# --------------------------------------------------------------------------------------------- side tables


@dataclass
class SideFrame:
    table: SideTable
    path: Path
    frame: pl.LazyFrame  # __side_key, the table's features, __matched_<name>
    key_dtype: pl.DataType
    rows: int


def read_side_tables(
    cfg: PipelineConfig, side_files: list[Path], casts: Mapping[str, pl.DataType], impression_columns: list[str]
) -> list[SideFrame]:
    """Scan and check each side table; the key is cast to the dtype it shares with the impressions' key."""
    out: list[SideFrame] = []
    taken = {c: "the impression files" for c in impression_columns}
    for t, path in zip(cfg.side_tables, side_files):
        lf = sources.scan(path)
        schema = lf.collect_schema()
        roles = {t.on: validation.Role("id", f"{t.key}.on")}
        roles.update({c: validation.Role("categorical", f"{t.key}.categorical") for c in t.categorical})
        roles.update({c: validation.Role("numeric", f"{t.key}.numeric/log_numeric") for c in (*t.numeric, *t.log_numeric)})
        validation.check_schema(path, schema, roles)
        for c in t.features:
            if c in taken:
                raise DataValidationError(
                    f"column '{c}' of side table {path} ({t.key}) is also read from {taken[c]}; a joined column "
                    "must come from one place: drop it from one of them or rename it in the file"
                )
            taken[c] = f"side table {path}"
        nums = [*t.numeric, *t.log_numeric]
        code_cols = validation.float_code_columns(schema, [t.on, *t.categorical])
        report = validation.inspect_file(path, lf, [], nums, [t.on], cfg.encoding.nan_policy, code_cols=code_cols)
        dups = lf.select(pl.col(t.on).is_duplicated().sum()).collect().item()
        if dups:
            raise DataValidationError(
                f"side table {path} has {dups} rows with a duplicated key '{t.on}'; a join would multiply impressions"
            )
        key_dtype = validation.unify_categorical_dtype([casts[t.on], schema[t.on]])
        frame = lf.select(
            validation.categorical_cast(t.on, schema[t.on], key_dtype).alias(_KEY),
            *[
                validation.categorical_cast(c, schema[c], validation.unify_categorical_dtype([schema[c]])).alias(c)
                for c in t.categorical
            ],
            *[pl.col(c).cast(pl.Float64) for c in nums],
            pl.lit(True).alias(_MATCH_PREFIX + t.name),
        )
        out.append(SideFrame(t, path, frame, key_dtype, report.rows))
    return out


def join_side_tables(raw: pl.LazyFrame, tables: list[SideFrame]) -> pl.LazyFrame:
    """Left-join every side table on its key; impression order is kept."""
    for st in tables:
        raw = raw.join(
            st.frame, left_on=pl.col(st.table.on).cast(st.key_dtype), right_on=_KEY, how="left", maintain_order="left"
        ).drop(_KEY, strict=False)
    return raw


def side_table_report(frames: Mapping[str, pl.DataFrame], tables: list[SideFrame], nan_policy: str) -> list[dict]:
    """Per table: impressions without a matching row (their side features are null), per split. Drops the markers.

    Raises when no impression of a split matches (wrong key column or key values) or, under
    ``nan_policy=error``, when a table with numeric features misses any impression.
    """
    report = []
    for st in tables:
        marker = _MATCH_PREFIX + st.table.name
        unmatched = {s: int(df[marker].null_count()) for s, df in frames.items()}
        for s, df in frames.items():
            if df.height and unmatched[s] == df.height:
                sample = df[st.table.on].drop_nulls().head(3).to_list()
                side_sample = st.frame.select(_KEY).head(3).collect()[_KEY].to_list()
                raise DataValidationError(
                    f"no impression of the {s} split has a row in side table {st.path} ({st.table.key}, key "
                    f"'{st.table.on}'): impression keys look like {sample}, the table's like {side_sample}; "
                    f"check {st.table.key}.on and {st.table.key}.path"
                )
        total = sum(unmatched.values())
        if total and nan_policy == "error" and (st.table.numeric or st.table.log_numeric):
            raise DataValidationError(
                f"{total} impression(s) have no row in side table {st.path} ({st.table.key}, key '{st.table.on}'), "
                "so their numeric side features would be null, and data.encoding.nan_policy=error"
            )
        if total:
            log.warning(
                "%d impression(s) have no row in side table %s (key '%s'): their side features are null "
                "(categorical: the out-of-vocabulary index; numeric: filled under data.encoding.nan_policy)",
                total, st.path, st.table.on,
            )
        report.append(
            {"name": st.table.name, "path": str(st.path), "on": st.table.on, "rows": st.rows, "unmatched_impressions": unmatched}
        )
    return report


def drop_markers(df: pl.DataFrame) -> pl.DataFrame:
    return df.drop([c for c in df.columns if c.startswith(_MATCH_PREFIX)])
