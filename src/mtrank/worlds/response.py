"""The response model of a fitted world: fitted to the real log once, frozen, cached, and its fit quality.

Two runs of ``src/train.py experiment=<response.experiment> <response.overrides>`` (in a subprocess):

* ``eval``: with ``response.eval_overrides`` (KuaiRand: train 04-25..28, val 04-29, test 04-30): its test-split
  AUROC, ECE, log-loss per type are the fit quality reported beside the real-log baselines (a held-out day);
* ``world``: with ``response.world_overrides`` (KuaiRand: weights fitted on 04-25..29, 04-30 for early stopping and
  calibration): the model the world uses, its calibrated probabilities taken as the truth.

Both live in ``<cache_dir>/<name>-<key>/`` where ``key`` hashes the response settings, the content of the source
files (``source.log`` and ``source.tables``) and :data:`RESPONSE_VERSION`; ``fit.json`` is written last, so a folder
with it is complete and is loaded as it is (no refit); a changed file or setting is another key, hence a refit.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mtrank.data.errors import DataValidationError
from mtrank.scoring.raw_logs import score_frame
from mtrank.scoring.run import LoadedRun, load_run
from mtrank.utils.io import building_dir, write_json_atomic
from mtrank.worlds.config import FittedWorldConfig

log = logging.getLogger(__name__)

__all__ = ["RESPONSE_VERSION", "FIT_FILE", "Trainer", "file_digest", "response_key", "ensure_fitted", "ResponseModel"]

RESPONSE_VERSION = 1  # bump when how the response model is fitted or used changes: cached fits are keyed by it
FIT_FILE = "fit.json"
_QUALITY = ("auroc", "pr_auc", "ece", "logloss", "n_pos")

Trainer = Callable[[str, Sequence[str], "str | Path", Path, Path], None]


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    p = Path(path)
    if not p.is_file():
        raise DataValidationError(f"world.source: no such file {p}")
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def response_key(cfg: FittedWorldConfig) -> str:
    """The cache key of the fitted response model: its settings and the content of the files it is fitted to."""
    payload = {
        "version": RESPONSE_VERSION,
        "config": cfg.digest("experiment", "overrides", "eval_overrides", "world_overrides", "tasks"),
        "files": [file_digest(f) for f in (cfg.log_file, *cfg.tables)],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def _quality(run_dir: Path, tasks: Sequence[str], stage: str = "test") -> dict[str, dict[str, float]]:
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    return {t: {q: metrics.get(f"{stage}/{t}/{q}") for q in _QUALITY} for t in tasks}


def ensure_fitted(cfg: FittedWorldConfig, data_dir: str | Path, trainer: Trainer) -> Path:
    """The folder of the fitted response model (``eval/``, ``world/``, ``fit.json``): loaded when cached, else
    fitted now (into a temporary sibling, renamed when complete)."""
    key = response_key(cfg)
    root = Path(cfg.cache_dir)
    final = root / f"{cfg.name}-{key}"
    if (final / FIT_FILE).is_file():
        log.info("world %s: reusing the fitted response model %s", cfg.name, final)
        return final
    with building_dir(final) as tmp:
        for part, extra in (("eval", cfg.eval_overrides), ("world", cfg.world_overrides)):
            log.info("world %s: fitting the response model (%s run)", cfg.name, part)
            trainer(cfg.experiment, [*cfg.overrides, *extra], data_dir, tmp / part, tmp / f"{part}.train.log")
        fit = {
            "key": key,
            "experiment": cfg.experiment,
            "overrides": list(cfg.overrides),
            "eval_overrides": list(cfg.eval_overrides),
            "world_overrides": list(cfg.world_overrides),
            "held_out": _quality(tmp / "eval", cfg.tasks),  # the eval run's test split (KuaiRand: 04-30)
            "val": _quality(tmp / "eval", cfg.tasks, "val"),  # its val split (04-29): docs/model_quality.md's split
        }
        write_json_atomic(tmp / FIT_FILE, fit)
    return final


class ResponseModel:
    """The frozen response model: calibrated probabilities per task for raw rows of the source log's schema."""

    def __init__(self, folder: str | Path, tasks: Sequence[str], batch_size: int = 65_536) -> None:
        self.folder = Path(folder)
        self.fit: dict[str, Any] = json.loads((self.folder / FIT_FILE).read_text())
        self.run: LoadedRun = load_run(self.folder / "world")
        missing = [t for t in tasks if t not in self.run.tasks]
        if missing:
            raise DataValidationError(
                f"world.response.tasks {missing} are not heads of the response model {self.folder / 'world'} "
                f"(it predicts {self.run.tasks})"
            )
        self.tasks = tuple(tasks)
        self.batch_size = int(batch_size)

    def probabilities(self, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        """``{task: p}`` per row of ``frame`` (the source log's feature columns; rows keep their order); ids unseen in the fit score as the model's
        out-of-vocabulary bucket, as any new id would."""
        if frame.height == 0:
            return {t: np.zeros(0) for t in self.tasks}
        out = score_frame(self.run, frame, batch_size=self.batch_size, warn_unseen_fraction=1.0)
        return {t: out[f"p_{t}"].to_numpy().astype(np.float64) for t in self.tasks}
