"""The trained runs an A/B simulation compares: given run folders, or trained once and cached.

:func:`resolve_run` returns a given run folder (checked), or the cached run of ``src/train.py
experiment=<experiment> <overrides>``: the cache folder is named by a hash of the experiment, the overrides
and the data folder, and holds a complete run only once training finished (it is trained into a temporary
sibling and renamed). Training runs in a subprocess (:func:`mtrank.utils.train_process.train_subprocess`) so that
its Hydra application is its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from mtrank.utils.io import building_dir
from mtrank.utils.train_process import train_subprocess

log = logging.getLogger(__name__)

__all__ = ["run_key", "is_complete_run", "resolve_run", "train_subprocess"]


def run_key(experiment: str, overrides: Sequence[str], data_dir: str | Path) -> str:
    payload = json.dumps(
        {"experiment": experiment, "overrides": list(overrides), "data_dir": str(data_dir)}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def is_complete_run(path: Path) -> bool:
    """A finished training run: ``metrics.json`` and a checkpoint."""
    return (path / "metrics.json").is_file() and any((path / "checkpoints").glob("*.ckpt"))


def resolve_run(
    given: str | Path | None,
    experiment: str,
    overrides: Sequence[str],
    cache_dir: str | Path,
    data_dir: str | Path,
    role: str,
    trainer: Callable[[str, Sequence[str], str | Path, Path, Path], None] = train_subprocess,
) -> Path:
    """The run folder for ``role`` (control / treatment): ``given`` if set, else the cached (or newly trained)
    run of ``experiment`` with ``overrides``."""
    if given:
        path = Path(given).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"models.{role}={path}: no such run folder or checkpoint")
        return path
    cache = Path(cache_dir)
    final = cache / f"{experiment}-{run_key(experiment, overrides, data_dir)}"
    if is_complete_run(final):
        log.info("models.%s: reusing the cached run %s", role, final)
        return final
    with building_dir(final) as tmp:
        trainer(experiment, list(overrides), data_dir, tmp, cache / f"{final.name}.train.log")
        if not is_complete_run(tmp):
            raise RuntimeError(f"training experiment={experiment} left no metrics.json / checkpoint in {tmp}")
    return final
