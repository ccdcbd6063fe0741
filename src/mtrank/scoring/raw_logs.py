"""Score raw logs with a run: read them with the run's own preprocessing, check drift, report."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mtrank.data import sources, validation
from mtrank.data.encoding import FeatureEncoder
from mtrank.data.errors import DataValidationError
from mtrank.data.spec import ITEM_COL, REQUEST_COL, ROW_INDEX
from mtrank.scoring.run import PREPROCESSING_DIR, LoadedRun
from mtrank.scoring.schema import (
    RAW_SCHEMA_FILE,
    check_columns,
    extra_columns,
    unseen_problems,
)
from mtrank.scoring.score import ScoreInfo, check_finite_predictions, frame_batches, score_batches

log = logging.getLogger(__name__)


# default of score_logs' warn_unseen_fraction (predict: conf/predict.yaml): warn when a categorical column has more
# than this share of rows with values never seen in training
WARN_UNSEEN_FRACTION = 0.01
# default of score_logs' warn_out_of_range_fraction (predict: conf/predict.yaml): warn when a numeric column has
# more than this share of rows outside the [min, max] of its training values (other units, drift, corrupt values)
WARN_OUT_OF_RANGE_FRACTION = 0.01


def _trained_columns(run: LoadedRun, encoder: FeatureEncoder) -> tuple[dict[str, list[str]], bool]:
    """Column → the dtypes it had in the training files, and whether that is the full record
    (``preprocessing/raw_schema.json``) or, for runs without it, the categorical vocabularies' dtypes only."""
    path = run.run_dir / PREPROCESSING_DIR / RAW_SCHEMA_FILE
    if path.is_file():
        return {str(c): list(d) for c, d in json.loads(path.read_text())["columns"].items()}, True
    return {c: [str(encoder.dtypes[c])] for c in encoder.categorical if encoder.dtypes.get(c)}, False


def _read_raw(run: LoadedRun, inputs: Sequence[str | Path]) -> tuple[pl.DataFrame, ScoreInfo]:
    """Raw log files → encoded frame (ids, cat__/num__ columns, labels and p_true when present).

    The checks and casts are the pipeline's (:mod:`mtrank.data.validation`, :mod:`mtrank.data.reading`), except
    that label columns are optional and categorical columns take the dtype of the run's vocabulary.
    """
    from mtrank.data import reading
    from mtrank.data.reading import id_expr

    cfg = run.pipeline_config()
    encoder = run.encoder()
    cols = cfg.columns
    files = sources.resolve_inputs([str(i) for i in inputs], "inputs")
    cats, nums = reading.impression_columns(cfg)
    roles = validation.column_roles(cols, [], cats, nums)  # labels are optional when predicting
    if cols.time and cols.time not in cats + nums:
        roles.pop(cols.time, None)  # the time column is not needed to score
    for t in cfg.side_tables:
        roles.setdefault(t.on, validation.Role("id", f"{t.key}.on"))
    label_cols = [cols.labels[t] for t in cfg.tasks]
    ptrue_cols = [cols.p_true_prefix + t for t in cfg.tasks] if cols.p_true_prefix else []
    ids = [c for c in (cols.request_id, cols.item_id) if c]
    code_like = list(dict.fromkeys(cats + ids + [t.on for t in cfg.side_tables]))
    trained, recorded = _trained_columns(run, encoder)
    optional = {c: "label" for c in label_cols} | {c: "p_true" for c in ptrue_cols}
    scanned = []
    for path in files:
        lf = sources.scan(path)
        schema = lf.collect_schema()
        if lf.head(1).collect().height == 0:  # before the dtypes: a CSV with a header only reads as strings
            raise DataValidationError(f"file {path} holds no rows (a header or an empty table): nothing to score")
        check_columns(path, schema, roles, optional, trained, run.run_dir)  # drift from the training files
        validation.check_schema(path, schema, roles)
        scanned.append((path, lf, schema))
    schemas = [sc for _, _, sc in scanned]
    partial = [c for c in label_cols if any(c in sc for sc in schemas) and not all(c in sc for sc in schemas)]
    if partial:
        raise DataValidationError(
            f"label column(s) {partial} are in some input files but not all ({[str(f) for f in files]}); "
            "give either labelled or unlabelled logs"
        )
    has_labels = all(all(c in sc for c in label_cols) for sc in schemas)
    has_p_true = bool(ptrue_cols) and all(all(c in sc for c in ptrue_cols) for sc in schemas)
    duplicates: dict[str, int] = {}
    filled = {c: 0 for c in nums}
    for path, lf, schema in scanned:  # one pass per file: rows > 0, labels, ids, NaN policy, duplicated rows
        report = validation.inspect_file(
            path,
            lf,
            label_cols if has_labels else [],
            nums,
            ids,
            cfg.encoding.nan_policy,
            code_cols=validation.float_code_columns(schema, code_like),
            count_duplicates=True,
            ptrue_cols=ptrue_cols if has_p_true else (),
        )  # also refuses infinite numeric values and p_true outside [0, 1], naming file and column
        if report.duplicates:
            duplicates[str(path)] = int(report.duplicates)
        for c, n in report.missing.items():
            filled[c] += n
    casts = {c: validation.unify_categorical_dtype([sc[c] for sc in schemas]) for c in code_like}
    for c in cats:  # the vocabulary decides: an integer vocabulary cannot look up strings
        want = pl.Int64 if encoder.dtypes.get(c) == "Int64" else pl.String
        if want == pl.Int64 and casts[c] != pl.Int64:
            raise DataValidationError(
                f"categorical column '{c}' holds strings in {[str(f) for f in files]}, but the run's vocabulary "
                "holds integers: the logs do not match the data the model was trained on"
            )
        casts[c] = want
    keep = list(
        dict.fromkeys(code_like + nums + (label_cols if has_labels else []) + (ptrue_cols if has_p_true else []))
    )
    selected = []
    for _, lf, schema in scanned:
        exprs = []
        for c in keep:
            if c in casts:
                exprs.append(validation.categorical_cast(c, schema[c], casts[c]).alias(c))
            elif c in label_cols:
                exprs.append(pl.col(c).cast(pl.UInt8))
            else:
                exprs.append(pl.col(c).cast(pl.Float64))
        selected.append(lf.select(exprs))
    raw = pl.concat(selected, how="vertical")
    if cfg.side_tables:
        side_files = [sources.resolve_inputs([t.path], f"{t.key}.path")[0] for t in cfg.side_tables]
        side = reading.read_side_tables(cfg, side_files, casts, keep)
        raw = reading.join_side_tables(raw, side)
    raw = raw.with_row_index(ROW_INDEX).with_columns(
        id_expr(cols.request_id, casts).alias(REQUEST_COL), id_expr(cols.item_id, casts).alias(ITEM_COL)
    )
    raw = raw.collect()
    if cfg.side_tables:
        raw = reading.drop_markers(raw)
    info = ScoreInfo(
        rows=raw.height,
        has_labels=has_labels,
        has_p_true=has_p_true,
        source=", ".join(map(str, files)),
        duplicates=duplicates,
        extra_columns=extra_columns(schemas, trained) if recorded else [],
        numeric_missing_filled={c: n for c, n in filled.items() if n},
    )
    ranged = [c for c in encoder.numeric_all if c in encoder.spread and c in raw.columns]
    unranged = [c for c in encoder.numeric_all if c not in encoder.spread]
    if unranged:
        log.warning(
            "The preprocessing of run %s records no training range for numeric column(s) %s (processed "
            "before ranges were recorded): their values are not compared with the training data; retrain "
            "(or reprocess) to have them checked",
            run.run_dir,
            unranged,
        )
    if ranged:
        counts = raw.select(
            [
                (
                    (encoder.transformed(c) < encoder.spread[c]["min"])
                    | (encoder.transformed(c) > encoder.spread[c]["max"])
                )
                .sum()
                .alias(c)
                for c in ranged
            ]
        ).row(0, named=True)
        for c in ranged:
            info.out_of_range[c] = int(counts[c] or 0)
            info.out_of_range_fraction[c] = info.out_of_range[c] / max(raw.height, 1)
            lo, hi = encoder.spread[c]["min"], encoder.spread[c]["max"]
            if c in encoder.log_numeric:  # back to the column's own scale for the message
                lo, hi = (float(np.sign(v) * np.expm1(abs(v))) for v in (lo, hi))
            info.training_range[c] = [lo, hi]
    for c in encoder.categorical:
        vocab = encoder.vocabularies[c]["value"]
        col = raw[c].cast(pl.String) if encoder.dtypes[c] == "String" else raw[c].cast(pl.Int64)
        info.nulls[c] = int(col.null_count())
        info.unseen[c] = int((col.is_not_null() & ~col.is_in(vocab.cast(col.dtype).implode())).sum())
        info.unseen_fraction[c] = info.unseen[c] / max(raw.height, 1)
    extra = []
    if has_labels:
        extra += [pl.col(cols.labels[t]).alias(f"__label_{t}") for t in cfg.tasks]
    if has_p_true:
        extra += [pl.col(cols.p_true_prefix + t).alias(f"__ptrue_{t}") for t in cfg.tasks]
    encoded = raw.select(pl.col(REQUEST_COL), pl.col(ITEM_COL), *encoder.expressions(), *extra)
    return encoded, info


def score_logs(
    run: LoadedRun,
    inputs: str | Path | Sequence[str | Path],
    batch_size: int = 65_536,
    device: str = "cpu",
    *,
    warn_unseen_fraction: float = WARN_UNSEEN_FRACTION,
    max_unseen_fraction: float | None = None,
    warn_out_of_range_fraction: float = WARN_OUT_OF_RANGE_FRACTION,
) -> tuple[pl.DataFrame, ScoreInfo]:
    """Score raw logs (Parquet/CSV files, folders or globs) with the run's preprocessing.

    Columns are checked as the pipeline checks them (:mod:`mtrank.data.validation`) and against the columns the
    run was trained on (:mod:`mtrank.scoring.schema`: a missing or retyped column is an error, an extra one
    is ignored and logged); label columns are optional; an empty file is an error. Duplicated rows are counted
    and scored like the others (a warning says how many). Values never seen in training go to the OOV bucket
    (index 0): their count and share of the rows per column are in the returned :class:`ScoreInfo`, logged as
    a warning when a share is above ``warn_unseen_fraction``; above ``max_unseen_fraction`` (when set) nothing
    is scored and :class:`DataValidationError` says which column.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if run.preprocessing is not None and run.preprocessing.spec.tasks != tuple(run.tasks):
        raise DataValidationError(
            f"run {run.run_dir}: its preprocessing has tasks {list(run.preprocessing.spec.tasks)} but the model {run.tasks}"
        )
    df, info = _read_raw(run, inputs)
    _report_inputs(run, info, warn_unseen_fraction, max_unseen_fraction)
    _report_numerics(run, info, warn_out_of_range_fraction)
    frame = score_batches(run, frame_batches(run, df, info, batch_size), device)
    check_finite_predictions(frame, run.tasks, info.source)
    return frame, info


def score_frame(run: LoadedRun, frame: pl.DataFrame, batch_size: int = 65_536, **checks: Any) -> pl.DataFrame:
    """:func:`score_logs` of the raw rows of an in-memory ``frame`` (written to a temporary Parquet file, the input
    ``score_logs`` reads and checks); one output row per row of ``frame``, in its order. ``checks``: the
    ``warn_*`` / ``max_*`` keywords of :func:`score_logs`."""
    with tempfile.TemporaryDirectory(prefix="mtrank-score-") as tmp:
        path = Path(tmp) / "rows.parquet"
        frame.write_parquet(path)
        out, _ = score_logs(run, path, batch_size=batch_size, **checks)
    if out.height != frame.height:
        raise RuntimeError(f"scoring with {run.run_dir} returned {out.height} rows for {frame.height}")
    return out


def _report_numerics(run: LoadedRun, info: ScoreInfo, warn: float) -> None:
    """Warn on null/NaN numerics filled with the train mean (as training does) and on numeric columns with more
    than ``warn`` of their rows outside the training range (values in other units, drift)."""
    if info.numeric_missing_filled:
        log.warning(
            "Numeric null/NaN values filled with the train mean (data.pipeline.encoding.nan_policy=fill_mean) in %s: %s",
            info.source,
            info.numeric_missing_filled,
        )
    over = {c: f for c, f in info.out_of_range_fraction.items() if f > warn}
    if over:
        text = "; ".join(
            f"'{c}': {info.out_of_range[c]} of {info.rows} rows ({f:.2%}) outside "
            f"[{info.training_range[c][0]:.6g}, {info.training_range[c][1]:.6g}]"
            for c, f in over.items()
        )
        log.warning(
            "Numeric values outside the range the run %s was trained on, in %s: %s "
            "(warn_out_of_range_fraction=%s); the model extrapolates there: check the units and the source "
            "of these columns",
            run.run_dir,
            info.source,
            text,
            warn,
        )
    elif info.out_of_range:
        log.info("Numeric values outside the training range: %s", info.out_of_range)


def unseen_words(run: LoadedRun) -> str:
    """What the OOV bucket holds: values unseen in training, and with ``min_count > 1`` the rarer ones too (an id
    seen once in training is not in the vocabulary either)."""
    cfg = (run.preprocessing.metadata.get("config") or {}) if run.preprocessing is not None else {}
    n = int((cfg.get("encoding") or {}).get("min_count", 1) or 1)
    return "unseen in training" if n <= 1 else f"unseen in training or rarer than min_count={n}"


def _report_inputs(run: LoadedRun, info: ScoreInfo, warn: float, limit: float | None) -> None:
    """Log what reading found; raise when a column's share of never-seen values is above ``limit``."""
    too_many = unseen_problems(info.unseen_fraction, limit)
    unseen = unseen_words(run)
    if too_many:
        c, f = max(too_many.items(), key=lambda kv: kv[1])
        raise DataValidationError(
            f"column '{c}': {info.unseen[c]} of the {info.rows} rows ({f:.2%}) in {info.source} hold values {unseen} "
            f"by the run {run.run_dir}, above max_unseen_fraction={limit}"
            + (f" (also above it: {sorted(k for k in too_many if k != c)})" if len(too_many) > 1 else "")
            + "; these logs may not be what the run was trained on. Set max_unseen_fraction higher (or null) to score "
            "them anyway, the unseen values going to the OOV bucket"
        )
    if info.extra_columns:
        log.info(
            "Ignoring column(s) %s of %s: the files the run was trained on did not have them",
            info.extra_columns,
            info.source,
        )
    if info.duplicates:
        log.warning(
            "%d duplicated impression(s) (rows that are exact copies of an earlier row of the same file) in %s: "
            "they are scored like the others, not dropped",
            sum(info.duplicates.values()),
            ", ".join(f"{f} ({n})" for f, n in info.duplicates.items()),
        )
    shown = {c: f for c, f in info.unseen_fraction.items() if info.unseen.get(c)}
    text = ", ".join(f"{c}: {info.unseen[c]} rows ({f:.2%})" for c, f in shown.items())
    if any(f > warn for f in shown.values()):
        log.warning(
            "%d rows scored; values %s were mapped to the OOV bucket: %s (warn_unseen_fraction=%s)",
            info.rows,
            unseen,
            text,
            warn,
        )
    elif shown:
        log.info("%d rows scored; values %s were mapped to the OOV bucket: %s", info.rows, unseen, text)
    else:
        log.info("%d rows scored; every categorical value was in the training vocabulary", info.rows)
