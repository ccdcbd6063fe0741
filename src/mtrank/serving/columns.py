"""Raw candidate columns (JSON values or a frame) → typed Series in the trained dtypes, with errors naming the field."""

from __future__ import annotations

import math
from dataclasses import dataclass

import polars as pl

from mtrank.serving.results import RequestError, is_finite

_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class Column:
    """A raw column a candidate row carries, as the network's input expects it."""

    name: str
    kind: str  # "categorical" | "numeric"
    dtype: str  # categorical: the vocabulary's raw dtype, Int64 | String; numeric: Float64


def series_from_values(col: Column, values: list, loc_of, nan_policy: str) -> pl.Series:
    """One column of JSON-like candidate values as a typed Series; a RequestError names the first bad value."""
    """Type-check one column's values and make the Series the encoder reads; ``loc_of(i)`` is the location of
    value i in the request."""

    def bad(i: int, what: str) -> RequestError:
        return RequestError(loc_of(i), what, "type_error")

    types = set(map(type, values))
    if col.kind == "numeric":
        if not types <= {int, float, type(None)}:
            i = next(i for i, v in enumerate(values) if type(v) not in (int, float, type(None)))
            raise bad(i, f"numeric column '{col.name}' takes a number or null, got {values[i]!r}")
        if float in types or int in types:
            for i, v in enumerate(values):
                if (type(v) is float and math.isinf(v)) or (type(v) is int and not is_finite(v)):
                    raise bad(i, f"numeric column '{col.name}' must be finite, got {v!r}")
        if nan_policy == "error" and (type(None) in types or any(v != v for v in values if type(v) is float)):
            i = next(i for i, v in enumerate(values) if v is None or v != v)
            raise bad(i, f"numeric column '{col.name}' has no value, and the run was trained with nan_policy=error")
        return pl.Series(col.name, values, dtype=pl.Float64, strict=False)
    if col.dtype == "Int64":
        if not types <= {int, type(None)}:
            for i, v in enumerate(values):
                if type(v) is float and v == v and not math.isinf(v) and v.is_integer():
                    values[i] = int(v)
                elif type(v) is float and v != v:
                    values[i] = None
                elif type(v) not in (int, type(None)):
                    raise bad(
                        i,
                        f"categorical column '{col.name}' takes an integer or null (its vocabulary holds "
                        f"integers), got {v!r}",
                    )
        for i, v in enumerate(values):
            if type(v) is int and not _I64_MIN <= v <= _I64_MAX:
                raise bad(i, f"categorical column '{col.name}': {v} is outside the 64-bit integer range")
        return pl.Series(col.name, values, dtype=pl.Int64)
    # a string vocabulary: integers are looked up as their text, as when scoring logs
    if not types <= {str, type(None)}:
        for i, v in enumerate(values):
            if type(v) is int:
                values[i] = str(v)
            elif type(v) not in (str, type(None)):
                raise bad(i, f"categorical column '{col.name}' takes a string or null, got {v!r}")
    return pl.Series(col.name, values, dtype=pl.String)


def series_from_frame(col: Column, s: pl.Series, loc: tuple, nan_policy: str) -> pl.Series:
    """One column of a candidate frame cast to its trained dtype; a RequestError names the column."""
    dt = s.dtype
    where = (*loc, col.name)
    if col.kind == "numeric":
        if not (dt.is_numeric() or dt == pl.Null):
            raise RequestError(
                where, f"numeric column '{col.name}' has dtype {dt}; a numeric dtype is expected", "type_error"
            )
        s = s.cast(pl.Float64)
        if s.is_infinite().any():
            raise RequestError(
                (*where, int(s.is_infinite().arg_true()[0])), f"numeric column '{col.name}' must be finite"
            )
        if nan_policy == "error" and (s.null_count() or s.is_nan().any()):
            raise RequestError(
                where,
                f"numeric column '{col.name}' has missing values, and the run was trained with nan_policy=error",
            )
        return s.rename(col.name)
    if col.dtype == "Int64":
        if dt.is_float():
            whole = s.fill_nan(None).drop_nulls()
            if len(whole) and not bool((whole == whole.floor()).all()):
                raise RequestError(
                    where,
                    f"categorical column '{col.name}' holds non-integral floats; its vocabulary holds integers",
                    "type_error",
                )
            return s.fill_nan(None).cast(pl.Int64).rename(col.name)
        if dt.is_integer() or dt == pl.Boolean or dt == pl.Null:
            return s.cast(pl.Int64).rename(col.name)
        raise RequestError(
            where, f"categorical column '{col.name}' has dtype {dt}; its vocabulary holds integers", "type_error"
        )
    if dt.is_float():
        s = s.fill_nan(None).cast(pl.Int64)
    if (
        isinstance(dt, (pl.Categorical, pl.Enum))
        or dt.is_integer()
        or dt in (pl.String, pl.Null, pl.Boolean)
        or dt.is_float()
    ):
        return s.cast(pl.String).rename(col.name)
    raise RequestError(
        where, f"categorical column '{col.name}' has dtype {dt}; a string column is expected", "type_error"
    )


# ------------------------------------------------------------------ scoring
