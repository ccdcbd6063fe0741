"""Temporary build folders of the data caches (raw simulated logs, processed data): named by owner, swept when stale.

A cache entry is built in ``<root>/.tmp-<label>~<host>~<pid>~<random>`` and renamed into place when complete. A
process killed meanwhile (SIGKILL, OOM) leaves its folder behind; :func:`remove_stale` (called by the next run
that uses the same root) removes the folders whose owner is gone: on this host, a pid that no longer runs; from
another host or in an older naming, a folder untouched for ``max_age_hours``. Each removal is logged at INFO.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = ".tmp-"
SEP = "~"
STALE_AFTER_HOURS = 24.0


def _host() -> str:
    return socket.gethostname().replace(SEP, "-") or "localhost"


def make_tmp_dir(root: Path | str, label: str) -> Path:
    """Create and return ``<root>/.tmp-<label>~<host>~<pid>~<random>``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{PREFIX}{label.replace(SEP, '-')}{SEP}{_host()}{SEP}{os.getpid()}{SEP}{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def stale_reason(path: Path, max_age_hours: float = STALE_AFTER_HOURS, now: float | None = None) -> str | None:
    """Why ``path`` (a temporary build folder) is stale, or None if its owner may still be writing it."""
    parts = path.name.rsplit(SEP, 3)
    if len(parts) == 4 and parts[0].startswith(PREFIX) and parts[2].isdigit() and parts[1] == _host():
        pid = int(parts[2])
        return None if _pid_alive(pid) else f"left by pid {pid} on this host, which is no longer running"
    try:
        age_h = ((now or time.time()) - path.stat().st_mtime) / 3600
    except FileNotFoundError:
        return None
    if age_h > max_age_hours:
        return f"untouched for {age_h:.1f} h (> {max_age_hours:g} h) and its owner is unknown here"
    return None


def remove_stale(
    root: Path | str, patterns: tuple[str, ...] = (f"{PREFIX}*",), max_age_hours: float = STALE_AFTER_HOURS
) -> list[Path]:
    """Remove the stale temporary build folders directly under ``root`` matching ``patterns``; returns them."""
    root = Path(root)
    if not root.is_dir():
        return []
    removed = []
    for pattern in patterns:
        for path in sorted(root.glob(pattern)):
            if not path.is_dir() or path.is_symlink():
                continue
            reason = stale_reason(path, max_age_hours)
            if reason is None:
                continue
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                log.info("Removed the stale temporary folder %s (%s)", path, reason)
                removed.append(path)
    return removed
