"""The data config, as typed Python objects built from the Hydra ``data`` group.

Everything a user can set about their logs lives here (see ``conf/data/*.yaml`` and the README section
"Bring your own logs"). Unknown keys raise an error that names the key, so a typo never passes silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from mtrank.data.config_checks import (
    DUPLICATE_POLICIES,
    NAN_POLICIES,
    SPLIT_KINDS,
    TIME_UNITS,
    check_downsample_beta,
    check_pipeline_config,
    reserved_task_name,
)
from mtrank.data.errors import DataValidationError
from mtrank.errors import Problems
from mtrank.utils.config_fields import is_number, is_whole

__all__ = [
    "NAN_POLICIES",
    "DUPLICATE_POLICIES",
    "SPLIT_KINDS",
    "TIME_UNITS",
    "SPLIT_NAMES",
    "SideTable",
    "ColumnsConfig",
    "SplitConfig",
    "EncodingConfig",
    "DuplicatesConfig",
    "DownsampleConfig",
    "PipelineConfig",
    "StreamConfig",
    "check_downsample_beta",
    "check_pipeline_config",
    "reserved_task_name",
]

SPLIT_NAMES = ("train", "val", "test")


def _from_mapping(cls, mapping: Mapping[str, Any] | None, key: str):
    mapping = dict(mapping or {})
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise DataValidationError(
            f"unknown config key(s) {', '.join(f'{key}.{u}' for u in unknown)}; allowed keys: {sorted(allowed)}",
            key=f"{key}.{unknown[0]}",
        )
    return cls(**mapping)


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    return list(value)


@dataclass(frozen=True)
class SideTable:
    """A table joined onto the impressions (user or item features), left join on ``on``.

    ``name`` is the table's key under ``data.pipeline.side_tables`` (a mapping ``name -> table``, so that
    ``data.pipeline.side_tables.<name>.path=...`` replaces the file from the command line); a list of tables
    is accepted too, named by position.
    """

    path: str
    on: str
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    log_numeric: tuple[str, ...] = ()
    name: str = ""

    @property
    def key(self) -> str:
        """The config key of this table, for messages."""
        return f"data.pipeline.side_tables.{self.name}" if self.name else "data.pipeline.side_tables"

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.categorical) + tuple(self.numeric) + tuple(self.log_numeric)


@dataclass(frozen=True)
class ColumnsConfig:
    """Which raw columns play which role."""

    labels: Mapping[str, str]  # task name -> raw label column
    request_id: str | None = None  # None: every row is its own request
    item_id: str | None = None
    time: str | None = None
    # An integer time column holds Unix epochs in this unit (s | ms | us | ns); None: plain ordered numbers.
    time_unit: str | None = None
    # Wall-clock zone of the time column (e.g. Asia/Shanghai) for epochs and zone-aware datetimes, so that
    # split.val_start / test_start are read as local dates; None: UTC.
    time_zone: str | None = None
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    log_numeric: tuple[str, ...] = ()  # counts: sign(x)·log1p(|x|) before normalisation
    p_true_prefix: str | None = "p_true_"  # optional true-probability columns (simulator only)
    exclude: tuple[str, ...] = ()  # columns that must never become features (label leaks)

    @property
    def all_features(self) -> tuple[str, ...]:
        return tuple(self.categorical) + tuple(self.numeric) + tuple(self.log_numeric)


@dataclass(frozen=True)
class SplitConfig:
    by: str = "time"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 0
    # by=time only: cut points instead of fractions. A request goes to val when its first impression is at or
    # after val_start, to test at or after test_start. A number in the time column's own units, or an ISO date /
    # datetime string when the time column is a date, a datetime, a string or has columns.time_unit.
    val_start: Any = None
    test_start: Any = None

    @property
    def cut_points(self) -> bool:
        return self.val_start is not None or self.test_start is not None


@dataclass(frozen=True)
class EncodingConfig:
    min_count: int = 1  # categorical values seen fewer times in train go to the OOV bucket
    max_vocab: int | None = None  # keep only the most frequent values
    nan_policy: str = "fill_mean"  # numeric null/NaN: fill with the train mean (counted, warned) or error
    # the largest fraction of val / test rows a categorical column may map to the out-of-vocabulary index (ids
    # never seen in train, rarer than min_count, beyond max_vocab, or null); None: no limit (always logged)
    max_oov_fraction: float | None = None


@dataclass(frozen=True)
class DuplicatesConfig:
    """Impressions that repeat an earlier impression (in the same or an earlier input file).

    ``key``: the columns that identify an impression (e.g. ``[request_id, item_id]``); None: every column of the
    file, i.e. exact copies. ``policy``: ``keep`` them (counted and warned), ``drop`` every copy after the first
    (counted and warned) or stop with an ``error`` that names the files, the key and an example.
    """

    policy: str = "keep"
    key: tuple[str, ...] | None = None


@dataclass(frozen=True)
class DownsampleConfig:
    beta: float = 1.0  # keep rate of impressions with no engagement of any configured task (train only)
    seed: int = 0


@dataclass(frozen=True)
class PipelineConfig:
    """All that determines a processed data set (and therefore its cache key)."""

    name: str
    inputs: tuple[str, ...]  # raw log files, directories or globs (split by ``split``)
    columns: ColumnsConfig
    tasks: tuple[str, ...]
    split: SplitConfig = field(default_factory=SplitConfig)
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    downsample: DownsampleConfig = field(default_factory=DownsampleConfig)
    duplicates: DuplicatesConfig = field(default_factory=DuplicatesConfig)
    side_tables: tuple[SideTable, ...] = ()
    split_inputs: Mapping[str, tuple[str, ...]] | None = None  # explicit {train,val,test} files instead
    rows_per_shard: int = 262_144
    row_group_size: int = 16_384

    def __post_init__(self):
        check_pipeline_config(self)

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], key: str = "data.pipeline") -> PipelineConfig:
        m = dict(m)
        allowed = {f.name for f in fields(cls)}
        unknown = sorted(set(m) - allowed)
        if unknown:
            raise DataValidationError(
                f"unknown config key(s) {', '.join(f'{key}.{u}' for u in unknown)}; allowed keys: {sorted(allowed)}",
                key=f"{key}.{unknown[0]}",
            )
        cols = dict(m.get("columns") or {})
        for k in ("categorical", "numeric", "log_numeric", "exclude"):
            if k in cols:
                cols[k] = tuple(_as_list(cols[k]))
        if "labels" not in cols or not cols["labels"]:
            raise DataValidationError(
                f"config key {key}.columns.labels is missing: map each task name to a label column",
                key=f"{key}.columns.labels",
            )
        cols["labels"] = dict(cols["labels"])
        split_inputs = m.get("split_inputs")
        if split_inputs:
            split_inputs = {k: tuple(_as_list(v)) for k, v in dict(split_inputs).items() if v}
        for k in ("time_unit", "time_zone"):
            if cols.get(k) == "":
                cols[k] = None
        return cls(
            name=str(m["name"]),
            inputs=tuple(_as_list(m.get("inputs"))),
            columns=_from_mapping(ColumnsConfig, cols, f"{key}.columns"),
            tasks=tuple(_as_list(m["tasks"])),
            split=_from_mapping(SplitConfig, m.get("split"), f"{key}.split"),
            encoding=_from_mapping(EncodingConfig, m.get("encoding"), f"{key}.encoding"),
            downsample=_from_mapping(DownsampleConfig, m.get("downsample"), f"{key}.downsample"),
            duplicates=_duplicates(m.get("duplicates"), key),
            side_tables=_side_tables(m.get("side_tables"), key),
            split_inputs=split_inputs or None,
            rows_per_shard=int(m.get("rows_per_shard", 262_144)),
            row_group_size=int(m.get("row_group_size", 16_384)),
        )

    @property
    def produced_splits(self) -> tuple[str, ...]:
        """The splits cut from ``inputs`` by ``split`` (the others come from ``split_inputs``)."""
        if not self.split_inputs:
            return SPLIT_NAMES
        if "train" in self.split_inputs:
            return ()
        return tuple(s for s in SPLIT_NAMES if s not in self.split_inputs)

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(self.columns.categorical) + tuple(c for t in self.side_tables for c in t.categorical)

    @property
    def numeric(self) -> tuple[str, ...]:
        return tuple(self.columns.numeric) + tuple(c for t in self.side_tables for c in t.numeric)

    @property
    def log_numeric(self) -> tuple[str, ...]:
        return tuple(self.columns.log_numeric) + tuple(c for t in self.side_tables for c in t.log_numeric)

    @property
    def features(self) -> tuple[str, ...]:
        return self.categorical + self.numeric + self.log_numeric


def _duplicates(value: Any, key: str) -> DuplicatesConfig:
    if value is None:
        return DuplicatesConfig()
    if not isinstance(value, Mapping):
        raise DataValidationError(
            f"config key {key}.duplicates must be a mapping with keys policy ({'|'.join(DUPLICATE_POLICIES)}) and key "
            f"(a list of columns, or null for every column); got {value!r}",
            key=f"{key}.duplicates",
        )
    value = dict(value)
    if value.get("key") is not None:
        value["key"] = tuple(str(c) for c in _as_list(value["key"]))
    return _from_mapping(DuplicatesConfig, value, f"{key}.duplicates")


def _side_tables(value: Any, key: str) -> tuple[SideTable, ...]:
    """``side_tables`` as a mapping ``name -> table`` (overridable per name) or a list (named by position)."""
    if not value:
        return ()
    if isinstance(value, Mapping):
        items = [(str(n), t) for n, t in value.items() if t is not None]
    elif isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, (str, bytes)):
        items = [(str(i), t) for i, t in enumerate(value)]
    else:
        raise DataValidationError(
            f"config key {key}.side_tables must map table names to tables, got {value!r}", key=f"{key}.side_tables"
        )
    out = []
    for name, t in items:
        if not isinstance(t, Mapping):
            raise DataValidationError(
                f"config key {key}.side_tables.{name} must be a mapping with keys path, on, categorical, numeric, "
                f"log_numeric; got {t!r}",
                key=f"{key}.side_tables.{name}",
            )
        t = {k: v for k, v in dict(t).items()}
        if True in t and "on" not in t:  # YAML 1.1 reads a bare `on:` key as the boolean true
            t["on"] = t.pop(True)
        for k in ("categorical", "numeric", "log_numeric"):
            t[k] = tuple(_as_list(t.get(k)))
        for k in ("path", "on"):
            if not t.get(k):
                raise DataValidationError(
                    f"config key {key}.side_tables.{name}.{k} is missing", key=f"{key}.side_tables.{name}.{k}"
                )
        t["name"] = name
        out.append(_from_mapping(SideTable, t, f"{key}.side_tables.{name}"))
    return tuple(out)


@dataclass(frozen=True)
class StreamConfig:
    """How the DataModule streams batches (``data.batch_size``, ``data.eval_batch_size``, ``data.shuffle_buffer``);
    each check names its full key and all are raised together as one :class:`~mtrank.errors.ConfigError`."""

    batch_size: Any = None
    eval_batch_size: Any = None
    shuffle_buffer: Any = None
    key: str = "data"

    def __post_init__(self) -> None:
        p = Problems()
        for name in ("batch_size", "eval_batch_size"):
            v = getattr(self, name)
            if v is not None and not (is_whole(v) and v >= 1):
                p.add(f"{self.key}.{name}", f"{self.key}.{name} = {v!r}: expected a whole number of rows ≥ 1")
        v, key = self.shuffle_buffer, f"{self.key}.shuffle_buffer"
        if v is not None and (not is_number(v) or not float(v).is_integer() or v < 1):
            p.add(
                key,
                f"{key} = {v!r}: expected an integer ≥ 1, the number of train rows permuted together (whole "
                "batches; e.g. 65536); 0 would not shuffle across batches",
            )
        p.raise_if_any()

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], key: str = "data") -> StreamConfig:
        m = dict(m)
        return cls(m.get("batch_size"), m.get("eval_batch_size"), m.get("shuffle_buffer"), key)
