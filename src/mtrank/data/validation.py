"""Schema and value checks on raw logs, one file at a time, so that every error names its file and column."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from mtrank.data.errors import DataValidationError

_INT_TYPES = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)


def _is_numeric(dt: pl.DataType) -> bool:
    return dt.is_numeric() or dt == pl.Boolean


def _is_categorical_like(dt: pl.DataType) -> bool:
    # floats are accepted as integer codes (a code column with nulls is often stored as float); inspect_file
    # refuses floats that are not whole numbers
    return (
        dt.is_integer()
        or dt.is_float()
        or dt in (pl.String, pl.Boolean, pl.Categorical)
        or isinstance(dt, (pl.Categorical, pl.Enum))
    )


def _is_time_like(dt: pl.DataType) -> bool:
    # strings are parsed as ISO dates / datetimes (check_time_strings says which value does not parse)
    return dt.is_integer() or dt.is_temporal() or dt.is_float() or dt == pl.String


@dataclass(frozen=True)
class Role:
    kind: str  # "categorical" | "numeric" | "label" | "time" | "id" | "p_true"
    key: str  # the config key that named the column, for messages


def column_roles(columns, tasks: Sequence[str], categorical: Sequence[str], numeric: Sequence[str]) -> dict[str, Role]:
    """Which columns the impressions file must hold, and why (side-table columns excluded)."""
    roles: dict[str, Role] = {}
    for c in categorical:
        roles[c] = Role("categorical", "data.pipeline.columns.categorical")
    for c in numeric:
        roles[c] = Role("numeric", "data.pipeline.columns.numeric/log_numeric")
    for t in tasks:
        roles[columns.labels[t]] = Role("label", f"data.pipeline.columns.labels.{t}")
    if columns.time:
        roles[columns.time] = Role("time", "data.pipeline.columns.time")
    if columns.request_id:
        roles.setdefault(columns.request_id, Role("id", "data.pipeline.columns.request_id"))
    if columns.item_id:
        roles.setdefault(columns.item_id, Role("id", "data.pipeline.columns.item_id"))
    return roles


def check_schema(
    path: Path, schema: Mapping[str, pl.DataType], roles: Mapping[str, Role], lf: pl.LazyFrame | None = None
) -> None:
    """Every column present with a usable dtype; the message names the file, the column and the expectation.

    With ``lf``, a file that fails the check and holds no rows is reported as empty instead (a CSV file with only
    a header has String columns: the dtypes are not the problem)."""
    try:
        _check_schema(path, schema, roles)
    except DataValidationError:
        if lf is not None and _holds_no_rows(lf):
            raise DataValidationError(f"file {path} holds no rows (only a header)") from None
        raise


def _holds_no_rows(lf: pl.LazyFrame) -> bool:
    try:
        return lf.select(pl.len()).collect().item() == 0
    except Exception:
        return False


def _check_schema(path: Path, schema: Mapping[str, pl.DataType], roles: Mapping[str, Role]) -> None:
    missing = [c for c in roles if c not in schema]
    if missing:
        details = ", ".join(f"'{c}' ({roles[c].key})" for c in missing)
        raise DataValidationError(f"file {path} is missing column(s) {details}; its columns are {list(schema)}")
    for col, role in roles.items():
        dt = schema[col]
        if role.kind in ("numeric", "label", "p_true") and not _is_numeric(dt):
            raise DataValidationError(
                f"column '{col}' ({role.key}) in file {path} has dtype {dt}; expected a numeric type (int, float or bool)"
            )
        if role.kind in ("categorical", "id") and not _is_categorical_like(dt):
            raise DataValidationError(
                f"column '{col}' ({role.key}) in file {path} has dtype {dt}; expected integer or string ids"
            )
        if role.kind == "time" and not _is_time_like(dt):
            raise DataValidationError(
                f"column '{col}' ({role.key}) in file {path} has dtype {dt}; "
                "expected an integer timestamp, a date, a datetime or an ISO date string"
            )


def float_code_columns(schema: Mapping[str, pl.DataType], columns: Sequence[str]) -> list[str]:
    """The categorical / id columns stored as floats: they must hold whole numbers (see inspect_file)."""
    return [c for c in columns if c in schema and schema[c].is_float()]


def check_time_strings(path: Path, lf: pl.LazyFrame, col: str, key: str = "data.pipeline.columns.time") -> None:
    """A string time column must parse as ISO dates or datetimes; the message shows a value that does not."""
    parsed = pl.col(col).str.to_datetime(strict=False, time_unit="us")
    bad = pl.col(col).is_not_null() & parsed.is_null()
    try:
        row = (
            lf.select(bad.sum().alias("n"), pl.col(col).filter(bad).first().alias("example"))
            .collect()
            .row(0, named=True)
        )
    except Exception as exc:
        raise DataValidationError(
            f"column '{col}' ({key}) in file {path} could not be parsed as datetimes: {exc}"
        ) from exc
    if row["n"]:
        raise DataValidationError(
            f"column '{col}' ({key}) in file {path} has {row['n']} value(s) that are not ISO dates or datetimes "
            f"(e.g. {row['example']!r}); expected e.g. 2022-04-25 or 2022-04-25 13:45:00"
        )


# an epoch time column (data.pipeline.columns.time with data.pipeline.columns.time_unit) must fall in these years once converted:
# a value outside is a wrong unit (seconds read as nanoseconds or the reverse), a corrupt value or a sentinel
TIME_YEARS = (1970, 2200)
_PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
_YEAR_SECONDS = 365.2425 * 86400


def _epoch_bounds(unit: str) -> tuple[float, float]:
    """The epochs of 1970-01-01 and 2200-01-01 in ``unit``."""
    hi = (_dt.datetime(TIME_YEARS[1], 1, 1, tzinfo=_dt.timezone.utc).timestamp()) * _PER_SECOND[unit]
    return 0.0, float(hi)


def _as_year(value: float, unit: str) -> float:
    return 1970 + value / _PER_SECOND[unit] / _YEAR_SECONDS


def check_time_range(
    path: Path,
    lf: pl.LazyFrame,
    col: str,
    dtype: pl.DataType,
    unit: str | None,
    key: str = "data.pipeline.columns.time",
) -> None:
    """An epoch time column (integer or float, with ``data.pipeline.columns.time_unit``) must lie in the years
    ``TIME_YEARS`` once converted; the message gives the min / max found and the unit that would fit."""
    if unit is None or unit not in _PER_SECOND or not (dtype.is_integer() or dtype.is_float()):
        return
    x = pl.col(col).cast(pl.Float64)
    x = pl.when(x.is_nan()).then(None).otherwise(x)
    try:
        row = lf.select(x.min().alias("lo"), x.max().alias("hi")).collect(engine="streaming").row(0, named=True)
    except Exception as exc:
        raise DataValidationError(f"file {path} could not be read: {exc}") from exc
    lo, hi = row["lo"], row["hi"]
    if lo is None or hi is None:
        return
    low, high = _epoch_bounds(unit)
    if low <= lo and hi <= high:
        return
    fits = [u for u in _PER_SECOND if _epoch_bounds(u)[0] <= lo and hi <= _epoch_bounds(u)[1]]
    hint = (
        f"the values fit data.pipeline.columns.time_unit={' or '.join(fits)}"
        if fits
        else "no unit of [s, ms, us, ns] puts every value in that range: the column holds corrupt or sentinel values"
    )

    def show(v: float) -> str:
        try:
            when = _dt.datetime(1970, 1, 1) + _dt.timedelta(seconds=v / _PER_SECOND[unit])
            return f"{v:.6g} ({when:%Y-%m-%d %H:%M:%S})"
        except (OverflowError, ValueError):
            return f"{v:.6g} (year {_as_year(v, unit):.4g})"

    raise DataValidationError(
        f"time column '{col}' ({key}) in file {path} read with data.pipeline.columns.time_unit={unit} spans {show(lo)} to "
        f"{show(hi)}; expected Unix epochs in {unit} between the years {TIME_YEARS[0]} and {TIME_YEARS[1]} "
        f"(0 to {high:.6g}); {hint}"
    )


@dataclass(frozen=True)
class FileReport:
    """What one checking pass over a file found."""

    rows: int
    missing: dict[str, int]  # null/NaN values per numeric column
    duplicates: int | None = None  # rows that are exact copies of an earlier row (all columns equal)


def inspect_file(
    path: Path,
    lf: pl.LazyFrame,
    label_cols: Sequence[str],
    numeric_cols: Sequence[str],
    required_cols: Sequence[str],
    nan_policy: str,
    code_cols: Sequence[str] = (),
    count_duplicates: bool = False,
    ptrue_cols: Sequence[str] = (),
) -> FileReport:
    """One pass over a file: rows > 0, labels in {0, 1} without nulls, no null (or NaN) ids and times, no
    infinite numeric feature, NaN policy for numerics, whole finite numbers in float-typed categorical columns
    (``code_cols``), probabilities in [0, 1] in the ``p_true`` columns; optionally counts exact duplicate rows."""
    schema = lf.collect_schema()
    exprs = [pl.len().alias("__rows")]
    if count_duplicates:
        # distinct 64-bit row hashes: about 0.4 s per million rows; a collision is astronomically unlikely
        exprs.append((pl.len() - pl.struct(pl.all()).hash().n_unique()).alias("__duplicates"))
    for c in code_cols:
        x = pl.col(c).cast(pl.Float64)
        frac = x.is_not_null() & ~x.is_nan() & x.is_finite() & (x != x.floor())
        exprs += [
            frac.sum().alias(f"{c}__frac"),
            x.filter(frac).first().alias(f"{c}__frac_example"),
            x.is_infinite().sum().alias(f"{c}__inf"),
        ]
    for c in label_cols:
        x = pl.col(c).cast(pl.Float64)
        exprs += [
            x.null_count().alias(f"{c}__nulls"),
            (~x.is_in([0.0, 1.0]) & x.is_not_null()).sum().alias(f"{c}__bad"),
            x.filter(~x.is_in([0.0, 1.0])).first().alias(f"{c}__example"),
        ]
    for c in numeric_cols:
        x = pl.col(c).cast(pl.Float64)
        exprs += [
            (x.is_null() | x.is_nan()).sum().alias(f"{c}__missing"),
            (x == float("inf")).sum().alias(f"{c}__posinf"),
            (x == float("-inf")).sum().alias(f"{c}__neginf"),
        ]
    for c in ptrue_cols:
        x = pl.col(c).cast(pl.Float64)
        bad = x.is_not_null() & (x.is_nan() | (x < 0.0) | (x > 1.0))
        exprs += [
            bad.sum().alias(f"{c}__pbad"),
            x.filter(bad).first().alias(f"{c}__pbad_example"),
            x.null_count().alias(f"{c}__pnull"),
        ]
    for c in required_cols:
        exprs.append(pl.col(c).null_count().alias(f"{c}__idnulls"))
        if c in schema and schema[c].is_float():
            exprs.append(pl.col(c).is_nan().sum().alias(f"{c}__idnan"))
    try:
        row = lf.select(exprs).collect(engine="streaming").row(0, named=True)
    except Exception as exc:
        raise DataValidationError(f"file {path} could not be read: {exc}") from exc
    if row["__rows"] == 0:
        raise DataValidationError(f"file {path} holds no rows")
    for c in label_cols:
        if row[f"{c}__nulls"]:
            raise DataValidationError(
                f"label column '{c}' in file {path} has {row[f'{c}__nulls']} null value(s); expected 0 or 1 on every row"
            )
        if row[f"{c}__bad"]:
            raise DataValidationError(
                f"label column '{c}' in file {path} has {row[f'{c}__bad']} value(s) outside {{0, 1}} "
                f"(e.g. {row[f'{c}__example']}); expected binary labels"
            )
    for c in required_cols:
        if row[f"{c}__idnulls"]:
            raise DataValidationError(
                f"column '{c}' in file {path} has {row[f'{c}__idnulls']} null value(s); ids and times may not be null"
            )
    for c in required_cols:
        if row.get(f"{c}__idnan"):
            raise DataValidationError(
                f"column '{c}' in file {path} is float with {row[f'{c}__idnan']} NaN value(s); ids and times may not "
                "be null or NaN: remove those rows or fill the column"
            )
    for c in code_cols:
        if row[f"{c}__inf"]:
            raise DataValidationError(
                f"categorical column '{c}' in file {path} is float with {row[f'{c}__inf']} infinite value(s) "
                "(+inf/-inf); expected integer codes or strings"
            )
        if row[f"{c}__frac"]:
            raise DataValidationError(
                f"categorical column '{c}' in file {path} is float with {row[f'{c}__frac']} value(s) that are not "
                f"whole numbers (e.g. {row[f'{c}__frac_example']}); expected integer codes or strings "
                "(a continuous column belongs in numeric or log_numeric)"
            )
    for c in numeric_cols:
        pos, neg = row[f"{c}__posinf"], row[f"{c}__neginf"]
        if pos or neg:
            raise DataValidationError(
                f"numeric column '{c}' in file {path} has {pos + neg} infinite value(s) ({pos} +inf, {neg} -inf); "
                "expected finite numbers (an infinite value cannot be normalised and would reach the model): "
                "remove or replace them, e.g. with null, which data.pipeline.encoding.nan_policy handles"
            )
    for c in ptrue_cols:
        if row[f"{c}__pbad"]:
            raise DataValidationError(
                f"probability column '{c}' (data.pipeline.columns.p_true_prefix) in file {path} has {row[f'{c}__pbad']} "
                f"value(s) outside [0, 1] or NaN (e.g. {row[f'{c}__pbad_example']}); expected true probabilities "
                "in [0, 1]"
            )
        if row[f"{c}__pnull"]:
            raise DataValidationError(
                f"probability column '{c}' (data.pipeline.columns.p_true_prefix) in file {path} has {row[f'{c}__pnull']} "
                "null value(s); expected a true probability in [0, 1] on every row"
            )
    missing = {c: int(row[f"{c}__missing"]) for c in numeric_cols}
    if nan_policy == "error":
        bad = {c: n for c, n in missing.items() if n}
        if bad:
            c, n = next(iter(bad.items()))
            raise DataValidationError(
                f"numeric column '{c}' in file {path} has {n} null/NaN value(s) and data.pipeline.encoding.nan_policy=error; "
                "clean the file or set data.pipeline.encoding.nan_policy=fill_mean"
            )
    return FileReport(int(row["__rows"]), missing, int(row["__duplicates"]) if count_duplicates else None)


def row_hashes(path: Path, lf: pl.LazyFrame, key: Sequence[str] | None) -> pl.Series:
    """One 64-bit hash per row of the ``key`` columns (None: every column), in file order."""
    cols = pl.all() if key is None else pl.col(list(key))
    try:
        return lf.select(pl.struct(cols).hash(seed=0).alias("h")).collect(engine="streaming").to_series()
    except Exception as exc:
        raise DataValidationError(f"file {path} could not be read: {exc}") from exc


@dataclass(frozen=True)
class DuplicateReport:
    """Rows whose key repeats an earlier row's, in the same or an earlier file (files in reading order)."""

    counts: dict[str, int]  # file -> duplicated rows in it
    rows: dict[str, pl.Series]  # file -> their row numbers in the file (0-based), for files that have any
    first: dict[str, tuple[str, int]]  # file -> (file, row) of the earlier row its first duplicate repeats

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def find_duplicates(files: Sequence[Path], hashes: Sequence[pl.Series]) -> DuplicateReport:
    """The rows (after the first) that share a key hash with an earlier row; a 64-bit hash collision between two
    distinct keys is improbable (about n² / 3.7·10¹⁹ for n rows) and would show in the error's example."""
    names = [str(f) for f in files]
    if not hashes:
        return DuplicateReport({}, {}, {})
    allh = pl.concat(list(hashes), rechunk=True)
    ordered = np.sort(allh.to_numpy())  # the common case, no repeat at all, is one sort
    if not (ordered[1:] == ordered[:-1]).any():
        return DuplicateReport({n: 0 for n in names}, {}, {})
    del ordered
    dup = ~allh.is_first_distinct()
    counts, rows, first = {}, {}, {}
    offset = 0
    bounds = []
    for name, h in zip(names, hashes):
        bounds.append((name, offset))
        part = dup.slice(offset, h.len())
        n = int(part.sum())
        counts[name] = n
        if n:
            rows[name] = part.arg_true()
            i = offset + int(rows[name][0])
            j = int((allh.slice(0, i) == allh[i]).arg_true()[0])
            earlier = max((b for b in bounds if b[1] <= j), key=lambda b: b[1])
            first[name] = (earlier[0], j - earlier[1])
        offset += h.len()
    return DuplicateReport(counts, rows, first)


def unify_categorical_dtype(dtypes: Sequence[pl.DataType]) -> pl.DataType:
    """Integers, booleans and whole-number floats become Int64; anything else (or a mix of files) String."""
    if all(dt.is_integer() or dt == pl.Boolean or dt.is_float() for dt in dtypes):
        return pl.Int64
    return pl.String


def categorical_cast(col: str, dtype: pl.DataType, target: pl.DataType) -> pl.Expr:
    """``col`` (of ``dtype``) as ``target`` (Int64 or String); float codes go through Int64, NaN becomes null, so
    1.0 in one file and 1 or "1" in another are the same value."""
    e = pl.col(col)
    if dtype.is_float():
        e = pl.when(e.is_nan()).then(None).otherwise(e).cast(pl.Int64)
    elif isinstance(dtype, (pl.Categorical, pl.Enum)):
        e = e.cast(pl.String)
    return e.cast(target)
