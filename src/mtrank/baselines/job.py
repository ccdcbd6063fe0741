"""The job behind ``src/baselines.py``: processed data (the nets' cache) → one baseline per task → the nets'
metrics on val and test → the run folder.

The run folder (``hydra.run.dir``, by default ``logs/<task_name>/baselines/<baseline.name>/<time>/``) gets
``metrics.json`` (``{"baseline": ..., "metrics": {...}, "models": {task: ...}}``; ``metrics`` holds
``val|test/<task>/<auroc|pr_auc|ece|brier|logloss|n_pos>`` (and ``oracle_auroc`` on simulated data) and
``val|test/mean/<auroc|pr_auc>``, computed by
:func:`mtrank.metrics.heads.compute_head_metrics` exactly as the nets compute them, and ``time/fit_seconds``;
probabilities corrected by Eq. 3 with each head's β_t when the train split was downsampled, as the nets' are;
``models`` what was chosen per task: LightGBM's best round, the logistic regression's C and its val log-loss
for every C), ``config.yaml`` and ``run_info.json`` (as :mod:`mtrank.jobs.train` writes them) and, for LightGBM
with ``save_models``, ``models/<task>.txt``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from mtrank.baselines.config import validate_baseline_config
from mtrank.baselines.data import SplitArrays, load_split
from mtrank.calibration.downsampling import correct, downsampling_from_metadata
from mtrank.metrics.heads import compute_head_metrics
from mtrank.utils.io import write_json_atomic
from mtrank.utils.run_info import write_run_info

__all__ = ["run_baseline", "split_metrics"]

log = logging.getLogger(__name__)


def split_metrics(
    probs: np.ndarray, data: SplitArrays, cfg: DictConfig, betas: dict[str, float] | None = None
) -> dict[str, float]:
    """The nets' per-head metrics of ``probs`` on ``data`` under ``<split>/<task>/<metric>``; with ``betas`` (train
    downsampled), each head's probabilities are first corrected by Eq. 3, as the nets' are."""
    if betas and any(betas[t] < 1.0 for t in data.tasks):
        probs = correct(probs, np.array([betas[t] for t in data.tasks])).astype(np.float32)
    m = cfg.get("metrics") or {}
    return compute_head_metrics(
        probs,
        data.labels,
        data.tasks,
        p_true=data.p_true,
        prefix=data.split,
        thresholds=m.get("thresholds", 40000),
        ece_bins=int(m.get("ece_bins", 15)),
    )


def _fit(cfg: DictConfig, train: SplitArrays, val: SplitArrays, tasks: list[str], betas: dict[str, float]):
    b = OmegaConf.to_container(cfg.baseline, resolve=True)
    if b["name"] == "lightgbm":
        from mtrank.baselines.gbdt import fit_lightgbm

        return fit_lightgbm(
            train,
            val,
            tasks,
            params=b.get("params") or {},
            num_boost_round=int(b["num_boost_round"]),
            early_stopping_rounds=int(b["early_stopping_rounds"]),
            early_stopping_metric=str(b["early_stopping_metric"]),
            categorical_max_cardinality=b.get("categorical_max_cardinality"),
            seed=int(cfg.seed),
            betas=betas,
        )
    from mtrank.baselines.logistic import fit_logistic

    def val_logloss(p: np.ndarray, y: np.ndarray, task: str) -> float:
        out = compute_head_metrics(p[:, None], y[:, None], [task], thresholds=[0.0, 1.0])
        return out[f"{task}/logloss"]

    return fit_logistic(
        train,
        val,
        tasks,
        c_grid=b["c_grid"],
        val_logloss=val_logloss,
        max_iter=int(b["max_iter"]),
        tol=float(b["tol"]),
        betas=betas,
    )


# what a baseline run reads; config.yaml records these (the nets' groups are composed only so that experiments compose)
RECORDED_KEYS = ("task_name", "tags", "seed", "data", "tasks", "baseline", "metrics", "paths")


def recorded_config(cfg: DictConfig) -> DictConfig:
    """The keys of :data:`RECORDED_KEYS`, with ``metrics`` resolved first (it reads ``model.metrics``)."""
    metrics = OmegaConf.to_container(cfg.metrics, resolve=True) if "metrics" in cfg else None
    out = OmegaConf.masked_copy(cfg, [k for k in RECORDED_KEYS if k in cfg])
    if metrics is not None:
        out.metrics = metrics
    return out


def run_baseline(cfg: DictConfig) -> dict[str, Any]:
    """Fit the configured baseline on the processed train split, score val and test; returns the metrics."""
    tasks = validate_baseline_config(cfg)  # ConfigError naming the key, before any data is read
    output_dir = Path(cfg.paths.output_dir)
    datamodule = hydra.utils.instantiate(cfg.data, _recursive_=False)
    datamodule.prepare_data()  # the same processed cache as src/train.py with the same data and tasks
    processed = datamodule.processed
    write_run_info(output_dir, recorded_config(cfg), processed.metadata)
    train, val, test = (load_split(processed, s, tasks) for s in ("train", "val", "test"))
    name = str(cfg.baseline.name)
    log.info(
        "%s on %s: %d train, %d val, %d test rows; %d categorical and %d numeric features; tasks %s",
        name,
        processed.directory.name,
        train.rows,
        val.rows,
        test.rows,
        len(train.categorical_names),
        len(train.numeric_names),
        tasks,
    )
    # β_t of every head when train was downsampled (val and test are not): Eq. 3 as the nets apply it
    betas = {t: float(b) for t, b in downsampling_from_metadata(processed.metadata)["effective_beta"].items()}
    t0 = time.perf_counter()
    fitted = _fit(cfg, train, val, tasks, betas)
    metrics: dict[str, float] = {"time/fit_seconds": time.perf_counter() - t0}
    for data in (val, test):
        metrics.update(split_metrics(fitted.predict(data), data, cfg, betas))
    if name == "lightgbm" and cfg.baseline.get("save_models", False):
        fitted.save(output_dir)
    for stage in ("val", "test"):
        log.info("%s per head: %s", stage, "; ".join(f"{t}: auroc={metrics[f'{stage}/{t}/auroc']:.4f}" for t in tasks))
    write_json_atomic(
        output_dir / "metrics.json", {"baseline": name, "metrics": metrics, "models": fitted.details}, sort_keys=True
    )
    return metrics
