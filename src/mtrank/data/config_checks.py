"""The checks of the data config that need no data (:class:`mtrank.data.config.PipelineConfig` runs them when it
is built): each raises a :class:`~mtrank.data.errors.DataValidationError` whose message and ``key`` name the full
config key (``data.pipeline.split.by``) and the allowed values."""

from __future__ import annotations

from typing import Any

from mtrank.data.errors import DataValidationError

NAN_POLICIES = ("fill_mean", "error")
DUPLICATE_POLICIES = ("keep", "drop", "error")
SPLIT_KINDS = ("time", "request", "random")
TIME_UNITS = ("s", "ms", "us", "ns")


def check_downsample_beta(beta: Any) -> None:
    """The negative keep rate β of ``data.pipeline.downsample.beta``: a number in (0, 1]."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 < float(beta) <= 1.0:
        raise DataValidationError(
            f"data.pipeline.downsample.beta = {beta!r}: expected a keep rate in (0, 1] (the share of train impressions "
            "with no engagement that are kept; 1 keeps them all)",
            key="data.pipeline.downsample.beta",
        )


def check_pipeline_config(cfg: Any) -> None:
    """Checks of a :class:`~mtrank.data.config.PipelineConfig` that need no data."""
    if not cfg.tasks:
        raise DataValidationError("config key tasks.names is empty: configure at least one task", key="tasks.names")
    reserved = [t for t in cfg.tasks if reserved_task_name(t)]
    if reserved:
        raise DataValidationError(
            f"task name(s) {reserved} cannot be used: a task names a head, a tower and a metric group, so it must "
            "not contain '.', be empty, be 'mean' (the average over heads) or be an attribute of torch.nn.Module "
            "(e.g. forward, train, eval); rename it in data.pipeline.columns.labels and tasks.names (e.g. forward -> share)",
            key="data.pipeline.columns.labels",
        )
    missing = [t for t in cfg.tasks if t not in cfg.columns.labels]
    if missing:
        raise DataValidationError(
            f"task(s) {missing} have no label column in data.pipeline.columns.labels; "
            f"tasks this data set can train: {sorted(cfg.columns.labels)}",
            key="data.pipeline.columns.labels",
        )
    check_downsample_beta(cfg.downsample.beta)
    if cfg.split.by not in SPLIT_KINDS:
        raise DataValidationError(
            f"data.pipeline.split.by = '{cfg.split.by}': expected one of {list(SPLIT_KINDS)}",
            key="data.pipeline.split.by",
        )
    produced = cfg.produced_splits
    if cfg.split.by == "time" and not cfg.columns.time and len(produced) > 1:
        raise DataValidationError(
            "data.pipeline.split.by = 'time' needs data.pipeline.columns.time; set it or use split.by=request",
            key="data.pipeline.split.by",
        )
    v = cfg.split.val_fraction if "val" in produced else 0.0
    t = cfg.split.test_fraction if "test" in produced else 0.0
    if len(produced) > 1 and not cfg.split.cut_points and (v < 0 or t < 0 or v + t >= 1):
        raise DataValidationError(
            f"data.pipeline.split.val_fraction={v} and data.pipeline.split.test_fraction={t}: expected non-negative fractions summing below 1",
            key="data.pipeline.split.val_fraction",
        )
    if cfg.encoding.nan_policy not in NAN_POLICIES:
        raise DataValidationError(
            f"data.pipeline.encoding.nan_policy = '{cfg.encoding.nan_policy}': expected one of {list(NAN_POLICIES)}",
            key="data.pipeline.encoding.nan_policy",
        )
    if cfg.duplicates.policy not in DUPLICATE_POLICIES:
        raise DataValidationError(
            f"data.pipeline.duplicates.policy = '{cfg.duplicates.policy}': expected one of {list(DUPLICATE_POLICIES)}",
            key="data.pipeline.duplicates.policy",
        )
    if cfg.duplicates.key is not None and (
        not cfg.duplicates.key or len(set(cfg.duplicates.key)) != len(cfg.duplicates.key)
    ):
        raise DataValidationError(
            f"data.pipeline.duplicates.key = {list(cfg.duplicates.key)}: expected distinct column names, or null for every column",
            key="data.pipeline.duplicates.key",
        )
    m = cfg.encoding.max_oov_fraction
    if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m <= 1.0):
        raise DataValidationError(
            f"data.pipeline.encoding.max_oov_fraction = {m!r}: expected a fraction in [0, 1], or null for no limit",
            key="data.pipeline.encoding.max_oov_fraction",
        )
    if cfg.encoding.min_count < 1:
        raise DataValidationError(
            f"data.pipeline.encoding.min_count = {cfg.encoding.min_count}: expected an integer ≥ 1",
            key="data.pipeline.encoding.min_count",
        )
    if not cfg.inputs and not cfg.split_inputs:
        raise DataValidationError(
            "data.pipeline.inputs is empty: give the raw log files (or data.pipeline.split_inputs)",
            key="data.pipeline.inputs",
        )
    if cfg.split_inputs:
        bad = sorted(set(cfg.split_inputs) - {"train", "val", "test"})
        if bad or ("train" not in cfg.split_inputs and not cfg.inputs):
            raise DataValidationError(
                f"data.pipeline.split_inputs has keys {sorted(cfg.split_inputs)}: expected 'train' and optionally 'val', 'test' "
                "(or only 'val' / 'test', with data.pipeline.inputs giving the rest)",
                key="data.pipeline.split_inputs",
            )
    _check_time_config(cfg)
    names = [t.name for t in cfg.side_tables]
    if len(set(names)) != len(names):
        raise DataValidationError(
            f"data.pipeline.side_tables has duplicated table names {names}", key="data.pipeline.side_tables"
        )
    feats = cfg.features
    dup = sorted({f for f in feats if feats.count(f) > 1})
    if dup:
        raise DataValidationError(
            f"feature column(s) {dup} are listed more than once in data.pipeline.columns / side_tables",
            key="data.pipeline.columns",
        )
    leaks = sorted(set(feats) & (set(cfg.columns.labels.values()) | set(cfg.columns.exclude)))
    if leaks:
        raise DataValidationError(
            f"column(s) {leaks} are label or excluded (leaking) columns and cannot be features; "
            "remove them from data.pipeline.columns.categorical/numeric/log_numeric",
            key="data.pipeline.columns.categorical",
        )
    if cfg.rows_per_shard < 1 or cfg.row_group_size < 1:
        raise DataValidationError(
            "data.pipeline.rows_per_shard and data.pipeline.row_group_size must be positive integers",
            key="data.pipeline.rows_per_shard",
        )


def reserved_task_name(name: str) -> bool:
    import torch.nn  # what nn.ModuleDict refuses as keys

    return not name or "." in name or name == "mean" or hasattr(torch.nn.Module, name)


def _check_time_config(cfg: Any) -> None:
    cols, split = cfg.columns, cfg.split
    if cols.time_unit is not None and cols.time_unit not in TIME_UNITS:
        raise DataValidationError(
            f"data.pipeline.columns.time_unit = '{cols.time_unit}': expected one of {list(TIME_UNITS)} or null",
            key="data.pipeline.columns.time_unit",
        )
    if (cols.time_unit or cols.time_zone) and not cols.time:
        raise DataValidationError(
            "data.pipeline.columns.time_unit / time_zone are set but data.pipeline.columns.time is not",
            key="data.pipeline.columns.time_unit",
        )
    if cols.time_zone is not None:
        import polars as pl  # its own zone database: the one the pipeline will use

        try:
            pl.Series([0], dtype=pl.Datetime("us")).dt.replace_time_zone(str(cols.time_zone))
        except Exception:
            raise DataValidationError(
                f"data.pipeline.columns.time_zone = '{cols.time_zone}': expected an IANA time zone such as UTC or Asia/Shanghai",
                key="data.pipeline.columns.time_zone",
            ) from None
    if not split.cut_points:
        return
    if split.by != "time":
        raise DataValidationError(
            f"data.pipeline.split.val_start / test_start are cut points in time but data.pipeline.split.by = '{split.by}'; "
            "set data.pipeline.split.by=time or remove them",
            key="data.pipeline.split.val_start",
        )
    if not cols.time:
        raise DataValidationError(
            "data.pipeline.split.val_start / test_start need data.pipeline.columns.time",
            key="data.pipeline.split.val_start",
        )
    produced = cfg.produced_splits
    for s in ("val", "test"):
        if s in produced and getattr(split, f"{s}_start") is None:
            raise DataValidationError(
                f"data.pipeline.split.{s}_start is not set but data.pipeline.split.{'test' if s == 'val' else 'val'}_start is: "
                f"with cut points, give one for each split cut from data.pipeline.inputs ({list(produced)}), "
                f"or take the {s} split from data.pipeline.split_inputs.{s}",
                key=f"data.pipeline.split.{s}_start",
            )
    v, t = split.val_start, split.test_start
    if "val" in produced and "test" in produced and type(v) is type(t) and v > t:
        raise DataValidationError(
            f"data.pipeline.split.val_start = {v!r} is after data.pipeline.split.test_start = {t!r}",
            key="data.pipeline.split.val_start",
        )
