"""Checks of raw logs scored by a trained run (:func:`mtrank.scoring.raw_logs.score_logs`) against the data it was
trained on: schema drift (missing, retyped and extra columns) and ids never seen in training.

Training records the raw columns and dtypes of its input files (:func:`raw_schema`, saved as
``preprocessing/raw_schema.json`` in the run folder). A scored file must then hold every column the model
reads; a column whose dtype changed is refused unless the change is a safe cast — integers of another width,
float ↔ integer codes or numbers, string ↔ categorical (the families :func:`dtype_family` groups), the casts
the pipeline itself makes when it reads logs. Extra columns are ignored (logged once). Runs from before the
record fall back to the dtype of each categorical vocabulary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mtrank.data.errors import DataValidationError

__all__ = [
    "RAW_SCHEMA_FILE",
    "raw_schema",
    "dtype_family",
    "compatible",
    "check_columns",
    "extra_columns",
    "unseen_problems",
]

RAW_SCHEMA_FILE = "raw_schema.json"

# what a family of raw dtypes becomes when read (mtrank.data.validation): integer codes or strings for
# categorical and id columns, float64 for numeric, label and true-probability columns
_CODE_GROUP = {"int": "integer codes", "float": "integer codes", "bool": "integer codes", "string": "strings"}
_NUMERIC = {"int", "float", "bool"}


def dtype_family(dtype: Any) -> str:
    """``int`` | ``float`` | ``bool`` | ``string`` | ``temporal`` | ``other`` of a Polars dtype or its name."""
    s = str(dtype)
    if s.startswith(("Int", "UInt")):
        return "int"
    if s.startswith(("Float", "Decimal")):
        return "float"
    if s.startswith("Bool"):
        return "bool"
    if s.startswith(("String", "Utf8", "Categorical", "Enum")):
        return "string"
    if s.startswith(("Date", "Datetime", "Time", "Duration")):
        return "temporal"
    return "other"


def compatible(kind: str, found: Any, trained: Sequence[str]) -> bool:
    """Whether a column of role ``kind`` read as ``found`` casts safely to what it was in training."""
    f = dtype_family(found)
    fams = {dtype_family(t) for t in trained}
    if kind == "categorical":  # the vocabulary holds integers or strings: the other kind never matches
        return _CODE_GROUP.get(f) is not None and _CODE_GROUP.get(f) in {_CODE_GROUP.get(t) for t in fams}
    if kind == "id":  # request / item ids and join keys: integers or strings (hashed) both work
        return f in _CODE_GROUP
    if kind in ("numeric", "label", "p_true"):
        return f in _NUMERIC
    return True


def raw_schema(pipeline_config: Mapping[str, Any]) -> dict[str, Any]:
    """``{"files": [...], "columns": {name: [dtype, ...]}}`` of the raw files a processed data set was made from
    (``metadata["config"]``): Parquet footers and CSV headers only, no rows are read."""
    from mtrank.data import sources

    specs = list(pipeline_config.get("inputs") or [])
    for v in (pipeline_config.get("split_inputs") or {}).values():
        specs += list(v or [])
    files = sources.resolve_inputs([str(s) for s in specs], "data.pipeline.inputs")
    columns: dict[str, list[str]] = {}
    for f in files:
        for c, dt in sources.scan(f).collect_schema().items():
            seen = columns.setdefault(c, [])
            if str(dt) not in seen:
                seen.append(str(dt))
    return {"files": [str(f) for f in files], "columns": columns}


def check_columns(
    path: Path,
    schema: Mapping[str, Any],
    roles: Mapping[str, Any],
    optional: Mapping[str, str],
    trained: Mapping[str, Sequence[str]],
    run_dir: Path | str,
) -> None:
    """Missing and retyped columns of one scored file.

    ``roles``: column → :class:`mtrank.data.validation.Role` of the columns the model needs; ``optional``:
    column → kind of columns read when present (labels, true probabilities); ``trained``: column → the dtypes
    it had in training. Raises :class:`DataValidationError` naming the file, the column, its config key, the
    training and the found dtype, and the run.
    """
    missing = [c for c in roles if c not in schema]
    if missing:
        details = ", ".join(f"'{c}' ({roles[c].key})" for c in missing)
        raise DataValidationError(
            f"file {path} is missing column(s) {details}, which the run {run_dir} was trained with and needs to "
            f"score; its columns are {list(schema)}"
        )
    kinds = {c: r.kind for c, r in roles.items()} | {c: k for c, k in optional.items() if c in schema}
    for c, kind in kinds.items():
        if c not in trained or compatible(kind, schema[c], trained[c]):
            continue
        was = " | ".join(trained[c])
        want = (
            ("integer codes" if _CODE_GROUP.get(dtype_family(trained[c][0])) == "integer codes" else "strings")
            if kind == "categorical"
            else "integer or string ids"
            if kind == "id"
            else "numbers (int, float or bool)"
        )
        key = (
            roles[c].key if c in roles else f"data.pipeline.columns.{'labels' if kind == 'label' else 'p_true_prefix'}"
        )
        raise DataValidationError(
            f"column '{c}' ({key}) in file {path} has dtype {schema[c]}, but the run {run_dir} was trained on "
            f"{was}: a retyped column is not cast (it would not mean the same values); give {want} as in training"
        )


def extra_columns(schemas: Sequence[Mapping[str, Any]], trained: Mapping[str, Sequence[str]]) -> list[str]:
    """Columns of the scored files that the training files did not have (ignored when scoring)."""
    out: list[str] = []
    for sc in schemas:
        out += [c for c in sc if c not in trained and c not in out]
    return out


def unseen_problems(
    fractions: Mapping[str, float],
    limit: float | None,
) -> dict[str, float]:
    """The columns whose share of never-seen values is above ``limit`` (none when ``limit`` is None)."""
    if limit is None:
        return {}
    return {c: f for c, f in fractions.items() if f > float(limit)}
