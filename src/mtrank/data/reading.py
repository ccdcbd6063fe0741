"""Reading raw logs for the pipeline: scan and validate every file, find duplicated impressions (and keep, drop or
refuse them under ``data.pipeline.duplicates``), give each column one dtype across all files and splits, put the time
column on one scale, and join the side tables.

Everything here is lazy except the checks, which each make a streaming pass over one file so that an error names
it, and the duplicate search, which holds one 64-bit hash per impression.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from mtrank.data import sources, validation
from mtrank.data.config import PipelineConfig, SideTable
from mtrank.data.errors import DataValidationError
from mtrank.data.spec import ROW_INDEX

log = logging.getLogger(__name__)

TIME_COL = "__time"
_MATCH_PREFIX = "__matched_"
_KEY = "__side_key"
_FILE_ROW = "__file_row"


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
                "number on its scale, or set data.pipeline.columns.time_unit (s | ms | us | ns) if it holds Unix epochs"
            )
        parsed = pl.Series([value]).str.to_datetime(time_unit="us", time_zone=zone or "UTC", strict=False)
        if parsed.null_count():
            raise DataValidationError(
                f"{key} = {value!r} is not an ISO date or datetime (e.g. 2022-04-29 or 2022-04-29 06:00)"
            )
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
    duplicates: dict[str, int]  # file -> rows whose duplicate key repeats an earlier row's (this or an earlier file)
    columns: list[str]  # the raw columns kept (besides __time)
    time_dtype: pl.DataType | None = None
    rows: dict[str, int] = field(default_factory=dict)  # file -> rows in the file
    group_rows: dict[str, int] = field(default_factory=dict)  # key of split_files -> rows in its frame
    dropped: int = 0  # duplicated rows dropped under data.pipeline.duplicates.policy=drop


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

    dup_key = list(cfg.duplicates.key) if cfg.duplicates.key is not None else None
    for c in dup_key or []:
        roles.setdefault(c, validation.Role("key", "data.pipeline.duplicates.key"))

    scanned: dict[str, list[tuple[Path, pl.LazyFrame, Mapping[str, pl.DataType]]]] = {}
    rows: dict[str, int] = {}
    hashes: list[pl.Series] = []
    for s, files in split_files.items():
        scanned[s] = []
        for path in files:
            lf = sources.scan(path)
            schema = lf.collect_schema()
            validation.check_schema(path, schema, roles, lf)
            report = validation.inspect_file(
                path,
                lf,
                label_cols,
                nums,
                required,
                cfg.encoding.nan_policy,
                code_cols=validation.float_code_columns(schema, code_like),
                ptrue_cols=[cols.p_true_prefix + t for t in cfg.tasks if cols.p_true_prefix + t in schema]
                if cols.p_true_prefix
                else (),
            )
            rows[str(path)] = report.rows
            if cols.time and schema[cols.time] == pl.String:
                validation.check_time_strings(path, lf, cols.time)
            if cols.time:
                validation.check_time_range(path, lf, cols.time, schema[cols.time], cols.time_unit)
            hashes.append(validation.row_hashes(path, lf, dup_key))
            scanned[s].append((path, lf, schema))
    all_scanned = [x for xs in scanned.values() for x in xs]
    dups = validation.find_duplicates([p for p, _, _ in all_scanned], hashes)
    del hashes
    _apply_duplicate_policy(cfg, dups, {str(p): lf for p, lf, _ in all_scanned})
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
                f"the time column '{cols.time}' (data.pipeline.columns.time) has incompatible dtypes across files ({detail}); "
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
    group_rows = {}
    for s, items in scanned.items():
        selected = []
        group_rows[s] = 0
        for path, lf, schema in items:
            drop = dups.rows.get(str(path)) if cfg.duplicates.policy == "drop" else None
            if drop is not None:
                lf = lf.with_row_index(_FILE_ROW).filter(~pl.col(_FILE_ROW).is_in(drop.cast(pl.UInt32).implode()))
            group_rows[s] += rows[str(path)] - (drop.len() if drop is not None else 0)
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
    dropped = dups.total if cfg.duplicates.policy == "drop" else 0
    return Impressions(frames, casts, ptrue_cols, dups.counts, keep, time_dtype, rows, group_rows, dropped)


def duplicate_key_description(key: Sequence[str] | None) -> str:
    if key is None:
        return "every column (data.pipeline.duplicates.key: null, so exact copies)"
    return f"the key columns {list(key)} (data.pipeline.duplicates.key)"


def _apply_duplicate_policy(
    cfg: PipelineConfig, dups: validation.DuplicateReport, scans: Mapping[str, pl.LazyFrame]
) -> None:
    """Raise under ``policy=error``; warn under ``keep`` / ``drop`` (the rows themselves are dropped by the reader)."""
    found = {f: n for f, n in dups.counts.items() if n}
    if not found:
        return
    policy, key = cfg.duplicates.policy, cfg.duplicates.key
    what = f"rows equal to an earlier row in {duplicate_key_description(key)}"
    if policy == "error":
        path = next(iter(found))
        row = int(dups.rows[path][0])
        earlier_path, earlier_row = dups.first[path]
        example = (
            scans[path]
            .slice(row, 1)
            .select(pl.all() if key is None else pl.col(list(key)))
            .collect()
            .row(0, named=True)
        )
        shown = dict(list(example.items())[:8])
        more = f" (+{len(example) - 8} more columns)" if len(example) > 8 else ""
        where = "the same file" if earlier_path == path else earlier_path
        raise DataValidationError(
            f"file {path} has {found[path]} duplicated impression(s), {what} ({sum(found.values())} in all input "
            f"files: {found}); e.g. row {row} (0-based) repeats row {earlier_row} of {where}: {shown}{more}. "
            "Expected every impression once (data.pipeline.duplicates.policy=error): remove the copies, or set "
            "data.pipeline.duplicates.policy=drop (keep the first copy) or keep (keep them all)"
        )
    if policy == "drop":
        log.warning(
            "%d duplicated impression(s) (%s) are DROPPED, the first copy of each kept (data.pipeline.duplicates.policy=drop): %s",
            sum(found.values()),
            what,
            found,
        )
    else:
        log.warning(
            "%d duplicated impression(s) (%s) are KEPT as separate impressions (data.pipeline.duplicates.policy=keep; set "
            "drop or error to change this): %s",
            sum(found.values()),
            what,
            found,
        )


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
        roles.update(
            {c: validation.Role("numeric", f"{t.key}.numeric/log_numeric") for c in (*t.numeric, *t.log_numeric)}
        )
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


def marker(table: SideTable) -> str:
    """The column that is true on impressions with a row in ``table`` (null otherwise), until drop_markers."""
    return _MATCH_PREFIX + table.name


def side_table_report(
    tables: list[SideFrame],
    rows: Mapping[str, int],
    unmatched: Mapping[str, Mapping[str, int]],
    nan_policy: str,
    sample: Callable[[str, str], list],
) -> list[dict]:
    """Per table: impressions without a matching row (their side features are null), per split.

    ``rows``: impressions per split; ``unmatched[table name][split]``: those without a row in the table (the null
    count of its :func:`marker`); ``sample(split, column)``: a few values of an impression column in a split, for
    the message. Raises when no impression of a split matches (wrong key column or key values) or, under
    ``nan_policy=error``, when a table with numeric features misses any impression.
    """
    report = []
    for st in tables:
        missed = {s: int(unmatched[st.table.name].get(s, 0)) for s in rows}
        for s, n in rows.items():
            if n and missed[s] == n:
                side_sample = st.frame.select(_KEY).head(3).collect()[_KEY].to_list()
                raise DataValidationError(
                    f"no impression of the {s} split has a row in side table {st.path} ({st.table.key}, key "
                    f"'{st.table.on}'): impression keys look like {sample(s, st.table.on)}, the table's like "
                    f"{side_sample}; check {st.table.key}.on and {st.table.key}.path"
                )
        total = sum(missed.values())
        if total and nan_policy == "error" and (st.table.numeric or st.table.log_numeric):
            raise DataValidationError(
                f"{total} impression(s) have no row in side table {st.path} ({st.table.key}, key '{st.table.on}'), "
                "so their numeric side features would be null, and data.pipeline.encoding.nan_policy=error"
            )
        if total:
            log.warning(
                "%d impression(s) have no row in side table %s (key '%s'): their side features are null "
                "(categorical: the out-of-vocabulary index; numeric: filled under data.pipeline.encoding.nan_policy)",
                total,
                st.path,
                st.table.on,
            )
        report.append(
            {
                "name": st.table.name,
                "path": str(st.path),
                "on": st.table.on,
                "rows": st.rows,
                "unmatched_impressions": missed,
            }
        )
    return report


def drop_markers(df: pl.DataFrame) -> pl.DataFrame:
    return df.drop([c for c in df.columns if c.startswith(_MATCH_PREFIX)])


def id_expr(col: str | None, casts: Mapping[str, pl.DataType]) -> pl.Expr:
    """Integer ids stay as they are; string ids are hashed to Int64; no column: the row number."""
    if not col:
        return pl.col(ROW_INDEX).cast(pl.Int64)
    if casts.get(col) == pl.String:
        return pl.col(col).hash(seed=0).reinterpret(signed=True)
    return pl.col(col).cast(pl.Int64)
