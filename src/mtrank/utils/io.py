"""Crash-safe file writes: every output is written to a temporary file (or folder) in the same folder and renamed
onto its name, so a reader finds the old file or the whole new one, never a half-written one."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "building_dir", "write_text_atomic", "write_json_atomic", "nonfinite_to_null"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` with a temporary path beside ``path``, then rename it onto ``path``; on any error the
    temporary file is removed and ``path`` is left as it was. ``write`` may be any writer that takes a path
    (``Path.write_text``, ``DataFrame.write_parquet``, ``Figure.savefig``, Ax's ``save_to_json_file``)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


@contextmanager
def building_dir(final: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``final`` (``.<name>.tmp-*``) to build it in: when the block ends without an
    error it replaces ``final``; on any error (or interrupt) it is removed and ``final`` is left as it was."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> Path:
    dumps_kwargs.setdefault("indent", 2)
    return write_text_atomic(path, json.dumps(obj, **dumps_kwargs))


def nonfinite_to_null(obj: Any, path: str = "") -> tuple[Any, list[str]]:
    """``obj`` with every NaN / ±inf float replaced by None (JSON ``null``: bare ``NaN`` is not JSON), and the
    keys (``a/b/c`` paths into the mappings, ``[i]`` into lists) where that happened."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None, [path or "<value>"]
    if isinstance(obj, dict):
        out, where = {}, []
        for k, v in obj.items():
            out[k], w = nonfinite_to_null(v, f"{path}/{k}" if path else str(k))
            where += w
        return out, where
    if isinstance(obj, (list, tuple)):
        items = [nonfinite_to_null(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        return [v for v, _ in items], [w for _, ws in items for w in ws]
    return obj, []
