"""The data config, as typed Python objects built from the Hydra ``data`` group.

Everything a user can set about their logs lives here (see ``conf/data/*.yaml`` and the README section
"Bring your own logs"). Unknown keys raise an error that names the key, so a typo never passes silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from mtrank.data.errors import DataValidationError

NAN_POLICIES = ("fill_mean", "error")
DUPLICATE_POLICIES = ("keep", "drop", "error")
SPLIT_KINDS = ("time", "request", "random")
TIME_UNITS = ("s", "ms", "us", "ns")
SPLIT_NAMES = ("train", "val", "test")


def _from_mapping(cls, mapping: Mapping[str, Any] | None, key: str):
    mapping = dict(mapping or {})
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise DataValidationError(
            f"unknown config key(s) {', '.join(f'{key}.{u}' for u in unknown)}; allowed keys: {sorted(allowed)}"
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
                f"unknown config key(s) {', '.join(f'{key}.{u}' for u in unknown)}; allowed keys: {sorted(allowed)}"
            )
        cols = dict(m.get("columns") or {})
        for k in ("categorical", "numeric", "log_numeric", "exclude"):
            if k in cols:
                cols[k] = tuple(_as_list(cols[k]))
        if "labels" not in cols or not cols["labels"]:
            raise DataValidationError(
                f"config key {key}.columns.labels is missing: map each task name to a label column"
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
            f"(a list of columns, or null for every column); got {value!r}"
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
        raise DataValidationError(f"config key {key}.side_tables must map table names to tables, got {value!r}")
    out = []
    for name, t in items:
        if not isinstance(t, Mapping):
            raise DataValidationError(
                f"config key {key}.side_tables.{name} must be a mapping with keys path, on, categorical, numeric, "
                f"log_numeric; got {t!r}"
            )
        t = {k: v for k, v in dict(t).items()}
        if True in t and "on" not in t:  # YAML 1.1 reads a bare `on:` key as the boolean true
            t["on"] = t.pop(True)
        for k in ("categorical", "numeric", "log_numeric"):
            t[k] = tuple(_as_list(t.get(k)))
        for k in ("path", "on"):
            if not t.get(k):
                raise DataValidationError(f"config key {key}.side_tables.{name}.{k} is missing")
        t["name"] = name
        out.append(_from_mapping(SideTable, t, f"{key}.side_tables.{name}"))
    return tuple(out)


def check_downsample_beta(beta: Any) -> None:
    """The negative keep rate β of ``data.pipeline.downsample.beta``: a number in (0, 1]."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 < float(beta) <= 1.0:
        raise DataValidationError(
            f"data.pipeline.downsample.beta = {beta!r}: expected a keep rate in (0, 1] (the share of train impressions "
            "with no engagement that are kept; 1 keeps them all)"
        )


def check_pipeline_config(cfg: PipelineConfig) -> None:
    """Checks that need no data: each message names the config key and the allowed values."""
    if not cfg.tasks:
        raise DataValidationError("config key tasks.names is empty: configure at least one task")
    reserved = [t for t in cfg.tasks if reserved_task_name(t)]
    if reserved:
        raise DataValidationError(
            f"task name(s) {reserved} cannot be used: a task names a head, a tower and a metric group, so it must "
            "not contain '.', be empty, be 'mean' (the average over heads) or be an attribute of torch.nn.Module "
            "(e.g. forward, train, eval); rename it in data.pipeline.columns.labels and tasks.names (e.g. forward -> share)"
        )
    missing = [t for t in cfg.tasks if t not in cfg.columns.labels]
    if missing:
        raise DataValidationError(
            f"task(s) {missing} have no label column in data.pipeline.columns.labels; "
            f"tasks this data set can train: {sorted(cfg.columns.labels)}"
        )
    check_downsample_beta(cfg.downsample.beta)
    if cfg.split.by not in SPLIT_KINDS:
        raise DataValidationError(f"data.pipeline.split.by = '{cfg.split.by}': expected one of {list(SPLIT_KINDS)}")
    produced = cfg.produced_splits
    if cfg.split.by == "time" and not cfg.columns.time and len(produced) > 1:
        raise DataValidationError(
            "data.pipeline.split.by = 'time' needs data.pipeline.columns.time; set it or use split.by=request"
        )
    v = cfg.split.val_fraction if "val" in produced else 0.0
    t = cfg.split.test_fraction if "test" in produced else 0.0
    if len(produced) > 1 and not cfg.split.cut_points and (v < 0 or t < 0 or v + t >= 1):
        raise DataValidationError(
            f"data.pipeline.split.val_fraction={v} and data.pipeline.split.test_fraction={t}: expected non-negative fractions summing below 1"
        )
    if cfg.encoding.nan_policy not in NAN_POLICIES:
        raise DataValidationError(
            f"data.pipeline.encoding.nan_policy = '{cfg.encoding.nan_policy}': expected one of {list(NAN_POLICIES)}"
        )
    if cfg.duplicates.policy not in DUPLICATE_POLICIES:
        raise DataValidationError(
            f"data.pipeline.duplicates.policy = '{cfg.duplicates.policy}': expected one of {list(DUPLICATE_POLICIES)}"
        )
    if cfg.duplicates.key is not None and (
        not cfg.duplicates.key or len(set(cfg.duplicates.key)) != len(cfg.duplicates.key)
    ):
        raise DataValidationError(
            f"data.pipeline.duplicates.key = {list(cfg.duplicates.key)}: expected distinct column names, or null for every column"
        )
    m = cfg.encoding.max_oov_fraction
    if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m <= 1.0):
        raise DataValidationError(
            f"data.pipeline.encoding.max_oov_fraction = {m!r}: expected a fraction in [0, 1], or null for no limit"
        )
    if cfg.encoding.min_count < 1:
        raise DataValidationError(
            f"data.pipeline.encoding.min_count = {cfg.encoding.min_count}: expected an integer ≥ 1"
        )
    if not cfg.inputs and not cfg.split_inputs:
        raise DataValidationError(
            "data.pipeline.inputs is empty: give the raw log files (or data.pipeline.split_inputs)"
        )
    if cfg.split_inputs:
        bad = sorted(set(cfg.split_inputs) - {"train", "val", "test"})
        if bad or ("train" not in cfg.split_inputs and not cfg.inputs):
            raise DataValidationError(
                f"data.pipeline.split_inputs has keys {sorted(cfg.split_inputs)}: expected 'train' and optionally 'val', 'test' "
                "(or only 'val' / 'test', with data.pipeline.inputs giving the rest)"
            )
    _check_time_config(cfg)
    names = [t.name for t in cfg.side_tables]
    if len(set(names)) != len(names):
        raise DataValidationError(f"data.pipeline.side_tables has duplicated table names {names}")
    feats = cfg.features
    dup = sorted({f for f in feats if feats.count(f) > 1})
    if dup:
        raise DataValidationError(
            f"feature column(s) {dup} are listed more than once in data.pipeline.columns / side_tables"
        )
    leaks = sorted(set(feats) & (set(cfg.columns.labels.values()) | set(cfg.columns.exclude)))
    if leaks:
        raise DataValidationError(
            f"column(s) {leaks} are label or excluded (leaking) columns and cannot be features; "
            "remove them from data.pipeline.columns.categorical/numeric/log_numeric"
        )
    if cfg.rows_per_shard < 1 or cfg.row_group_size < 1:
        raise DataValidationError(
            "data.pipeline.rows_per_shard and data.pipeline.row_group_size must be positive integers"
        )


def reserved_task_name(name: str) -> bool:
    import torch.nn  # what nn.ModuleDict refuses as keys

    return not name or "." in name or name == "mean" or hasattr(torch.nn.Module, name)


def _check_time_config(cfg: PipelineConfig) -> None:
    cols, split = cfg.columns, cfg.split
    if cols.time_unit is not None and cols.time_unit not in TIME_UNITS:
        raise DataValidationError(
            f"data.pipeline.columns.time_unit = '{cols.time_unit}': expected one of {list(TIME_UNITS)} or null"
        )
    if (cols.time_unit or cols.time_zone) and not cols.time:
        raise DataValidationError(
            "data.pipeline.columns.time_unit / time_zone are set but data.pipeline.columns.time is not"
        )
    if cols.time_zone is not None:
        import polars as pl  # its own zone database: the one the pipeline will use

        try:
            pl.Series([0], dtype=pl.Datetime("us")).dt.replace_time_zone(str(cols.time_zone))
        except Exception:
            raise DataValidationError(
                f"data.pipeline.columns.time_zone = '{cols.time_zone}': expected an IANA time zone such as UTC or Asia/Shanghai"
            ) from None
    if not split.cut_points:
        return
    if split.by != "time":
        raise DataValidationError(
            f"data.pipeline.split.val_start / test_start are cut points in time but data.pipeline.split.by = '{split.by}'; "
            "set data.pipeline.split.by=time or remove them"
        )
    if not cols.time:
        raise DataValidationError("data.pipeline.split.val_start / test_start need data.pipeline.columns.time")
    produced = cfg.produced_splits
    for s in ("val", "test"):
        if s in produced and getattr(split, f"{s}_start") is None:
            raise DataValidationError(
                f"data.pipeline.split.{s}_start is not set but data.pipeline.split.{'test' if s == 'val' else 'val'}_start is: "
                f"with cut points, give one for each split cut from data.pipeline.inputs ({list(produced)}), "
                f"or take the {s} split from data.pipeline.split_inputs.{s}"
            )
    v, t = split.val_start, split.test_start
    if "val" in produced and "test" in produced and type(v) is type(t) and v > t:
        raise DataValidationError(
            f"data.pipeline.split.val_start = {v!r} is after data.pipeline.split.test_start = {t!r}"
        )
