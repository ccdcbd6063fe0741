"""The data config, as typed Python objects built from the Hydra ``data`` group.

Everything a user can set about their logs lives here (see ``conf/data/*.yaml`` and the README section
"Bring your own logs"). Unknown keys raise an error that names the key, so a typo never passes silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping, Sequence

from mtrank.data.errors import DataValidationError

NAN_POLICIES = ("fill_mean", "error")
SPLIT_KINDS = ("time", "request", "random")


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
    """A table joined onto the impressions (user or item features), left join on ``on``."""

    path: str
    on: str
    categorical: tuple[str, ...] = ()
    numeric: tuple[str, ...] = ()
    log_numeric: tuple[str, ...] = ()


@dataclass(frozen=True)
class ColumnsConfig:
    """Which raw columns play which role."""

    labels: Mapping[str, str]  # task name -> raw label column
    request_id: str | None = None  # None: every row is its own request
    item_id: str | None = None
    time: str | None = None
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


@dataclass(frozen=True)
class EncodingConfig:
    min_count: int = 1  # categorical values seen fewer times in train go to the OOV bucket
    max_vocab: int | None = None  # keep only the most frequent values
    nan_policy: str = "fill_mean"  # numeric null/NaN: fill with the train mean (counted, warned) or error


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
    side_tables: tuple[SideTable, ...] = ()
    split_inputs: Mapping[str, tuple[str, ...]] | None = None  # explicit {train,val,test} files instead
    rows_per_shard: int = 262_144
    row_group_size: int = 16_384

    def __post_init__(self):
        check_pipeline_config(self)

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], key: str = "data") -> "PipelineConfig":
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
            raise DataValidationError(f"config key {key}.columns.labels is missing: map each task name to a label column")
        cols["labels"] = dict(cols["labels"])
        split_inputs = m.get("split_inputs")
        if split_inputs:
            split_inputs = {k: tuple(_as_list(v)) for k, v in dict(split_inputs).items() if v}
        return cls(
            name=str(m["name"]),
            inputs=tuple(_as_list(m.get("inputs"))),
            columns=_from_mapping(ColumnsConfig, cols, f"{key}.columns"),
            tasks=tuple(_as_list(m["tasks"])),
            split=_from_mapping(SplitConfig, m.get("split"), f"{key}.split"),
            encoding=_from_mapping(EncodingConfig, m.get("encoding"), f"{key}.encoding"),
            downsample=_from_mapping(DownsampleConfig, m.get("downsample"), f"{key}.downsample"),
            side_tables=tuple(
                _from_mapping(
                    SideTable,
                    {**dict(t), **{k: tuple(_as_list(dict(t).get(k))) for k in ("categorical", "numeric", "log_numeric")}},
                    f"{key}.side_tables[{i}]",
                )
                for i, t in enumerate(m.get("side_tables") or ())
            ),
            split_inputs=split_inputs or None,
            rows_per_shard=int(m.get("rows_per_shard", 262_144)),
            row_group_size=int(m.get("row_group_size", 16_384)),
        )

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


def check_pipeline_config(cfg: PipelineConfig) -> None:
    """Checks that need no data: each message names the config key and the allowed values."""
    if not cfg.tasks:
        raise DataValidationError("config key tasks.names is empty: configure at least one task")
    missing = [t for t in cfg.tasks if t not in cfg.columns.labels]
    if missing:
        raise DataValidationError(
            f"task(s) {missing} have no label column in data.columns.labels; "
            f"tasks this data set can train: {sorted(cfg.columns.labels)}"
        )
    if not (0.0 < cfg.downsample.beta <= 1.0):
        raise DataValidationError(f"data.downsample.beta = {cfg.downsample.beta}: expected a keep rate in (0, 1]")
    if cfg.split.by not in SPLIT_KINDS:
        raise DataValidationError(f"data.split.by = '{cfg.split.by}': expected one of {list(SPLIT_KINDS)}")
    if cfg.split.by == "time" and not cfg.columns.time and not cfg.split_inputs:
        raise DataValidationError("data.split.by = 'time' needs data.columns.time; set it or use split.by=request")
    v, t = cfg.split.val_fraction, cfg.split.test_fraction
    if not cfg.split_inputs and (v < 0 or t < 0 or v + t >= 1):
        raise DataValidationError(
            f"data.split.val_fraction={v} and data.split.test_fraction={t}: expected non-negative fractions summing below 1"
        )
    if cfg.encoding.nan_policy not in NAN_POLICIES:
        raise DataValidationError(
            f"data.encoding.nan_policy = '{cfg.encoding.nan_policy}': expected one of {list(NAN_POLICIES)}"
        )
    if cfg.encoding.min_count < 1:
        raise DataValidationError(f"data.encoding.min_count = {cfg.encoding.min_count}: expected an integer ≥ 1")
    if not cfg.inputs and not cfg.split_inputs:
        raise DataValidationError("data.inputs is empty: give the raw log files (or data.split_inputs)")
    if cfg.split_inputs:
        bad = sorted(set(cfg.split_inputs) - {"train", "val", "test"})
        if bad or "train" not in cfg.split_inputs:
            raise DataValidationError(
                f"data.split_inputs has keys {sorted(cfg.split_inputs)}: expected 'train' and optionally 'val', 'test'"
            )
    feats = cfg.features
    dup = sorted({f for f in feats if feats.count(f) > 1})
    if dup:
        raise DataValidationError(f"feature column(s) {dup} are listed more than once in data.columns / side_tables")
    leaks = sorted(set(feats) & (set(cfg.columns.labels.values()) | set(cfg.columns.exclude)))
    if leaks:
        raise DataValidationError(
            f"column(s) {leaks} are label or excluded (leaking) columns and cannot be features; "
            "remove them from data.columns.categorical/numeric/log_numeric"
        )
    if cfg.rows_per_shard < 1 or cfg.row_group_size < 1:
        raise DataValidationError("data.rows_per_shard and data.row_group_size must be positive integers")
