"""Finding, reading and fingerprinting raw log files (Parquet or CSV), with errors that name the file."""

from __future__ import annotations

import csv
import glob
import gzip
import hashlib
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import polars as pl

from mtrank.data.errors import DataValidationError

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv")
_PARQUET_MAGIC = b"PAR1"


def file_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise DataValidationError(
        f"file {path} is neither Parquet nor CSV: expected a name ending in "
        f"{', '.join(PARQUET_SUFFIXES + CSV_SUFFIXES)}"
    )


def resolve_inputs(specs: Sequence[str], key: str = "data.pipeline.inputs") -> list[Path]:
    """Expand files, directories (their Parquet/CSV files) and globs into a sorted, de-duplicated file list."""
    files: list[Path] = []
    for spec in specs:
        p = Path(os.path.expanduser(str(spec)))
        if any(ch in str(spec) for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(str(p)))
            if not matches:
                raise DataValidationError(f"{key}: no file matches the pattern {spec}")
            files.extend(matches)
        elif p.is_dir():
            found = sorted(
                f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(PARQUET_SUFFIXES + CSV_SUFFIXES)
            )
            if not found:
                raise DataValidationError(f"{key}: directory {p} holds no Parquet or CSV file")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise DataValidationError(f"{key}: path {p} does not exist")
    seen: set[Path] = set()
    out = []
    for f in files:
        r = f.resolve()
        if r not in seen:
            seen.add(r)
            out.append(f)
    return out


def scan(path: Path) -> pl.LazyFrame:
    """A lazy scan of one file, after checking it is a readable, non-empty Parquet or CSV file."""
    fmt = file_format(path)
    if path.stat().st_size == 0:
        raise DataValidationError(f"file {path} is empty (0 bytes)")
    if fmt == "parquet":
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head != _PARQUET_MAGIC:
            raise DataValidationError(
                f"file {path} is not a Parquet file (it does not start with the Parquet magic bytes)"
            )
        lf = pl.scan_parquet(path)
    else:
        sep = "\t" if path.name.lower().endswith(".tsv") else ","
        check_csv_header(path, sep)
        lf = pl.scan_csv(path, separator=sep, infer_schema_length=10_000)
    try:
        lf.collect_schema()
    except Exception as exc:  # polars raises several types for unreadable files
        raise DataValidationError(f"file {path} could not be read as {fmt}: {exc}") from exc
    return lf


def _header(path: Path, sep: str) -> list[str]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            first = fh.readline(1 << 24)
    except OSError as exc:
        raise DataValidationError(f"file {path} could not be read as csv: {exc}") from exc
    text = first.decode("utf-8", errors="replace").lstrip("\ufeff")
    rows = list(csv.reader(io.StringIO(text), delimiter=sep))
    return [c.strip() for c in rows[0]] if rows else []


def check_csv_header(path: Path, sep: str = ",") -> None:
    """Every column name once in the header: Polars would rename a repeated one (``price`` → ``price_duplicated_0``)
    and the pipeline would read the first copy without a word."""
    names = _header(path, sep)
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        seen.setdefault(name, []).append(i)
    repeated = {n: pos for n, pos in seen.items() if len(pos) > 1}
    if repeated:
        detail = ", ".join(f"'{n}' at positions {pos}" for n, pos in repeated.items())
        name = next(iter(repeated))
        raise DataValidationError(
            f"file {path} has a header that names a column more than once: {detail} (0-based); Polars would read "
            f"the second copy as '{name}_duplicated_0' and the first would be used as '{name}', which may not be the "
            "column you mean. Expected every column name once: rename or drop the extra column(s)"
        )


def fingerprint(files: Iterable[Path], chunk: int = 1 << 20) -> str:
    """Content hash (sha256) of the files, in order; names are not part of it."""
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()
