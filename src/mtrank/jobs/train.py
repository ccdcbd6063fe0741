"""The training job behind ``src/train.py``: data → model → Trainer.fit / test, run records, return metrics.

Besides the checkpoints the run folder gets ``calibration.json`` (each head's downsampling correction and the
post-hoc calibrators of ``calibration=…``, fitted on the validation split after training), ``preprocessing/``
(the processed data's metadata and vocabularies, so that the run alone can score raw logs) and, with
``report.enabled``, the evaluation report of the test split (:mod:`mtrank.scoring.report`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only

from mtrank.calibration.downsampling import downsampling_from_metadata
from mtrank.scoring.report import write_report
from mtrank.scoring.run import LoadedRun, save_preprocessing
from mtrank.scoring.score import fit_calibration, iter_score_split
from mtrank.training.checkpoints import resolve_ckpt_path
from mtrank.training.resume import check_resume, deferred_run_logs
from mtrank.utils.checkpoint_files import check_fits
from mtrank.utils.instantiate import instantiate_callbacks, instantiate_loggers
from mtrank.utils.io import nonfinite_to_null, write_json_atomic
from mtrank.utils.run_info import resolved_config, write_hydra_record, write_run_info
from mtrank.validation import validate_train_config

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """The DataModule (data processed, spec known) and the model built for its features and tasks."""
    datamodule = hydra.utils.instantiate(cfg.data, _recursive_=False)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = hydra.utils.instantiate(
        cfg.model,
        spec=datamodule.spec,
        downsampling=downsampling_from_metadata(
            datamodule.metadata, mode=str((cfg.get("calibration") or {}).get("downsampling", "correct"))
        ),
        _recursive_=False,
    )
    fit_feature_encoders(model, datamodule)
    return datamodule, model


def fit_feature_encoders(model: pl.LightningModule, datamodule) -> None:
    """Fit the parts of the net that learn from the train rows before training (the quantile bins of
    ``model.net.numeric_embedding``); a resumed run then restores them from its checkpoint."""
    from mtrank.models.numeric import fit_numeric_encoders, needs_fitting

    if not needs_fitting(model.net):
        return
    ds = datamodule.dataset("train", shuffle=False)
    n = fit_numeric_encoders(model.net, iter(ds))
    datamodule.datasets.pop("train", None)
    if n:
        log.info("Fitted the numeric embeddings' quantile bins on %d train rows", n)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train (and test) as configured; returns every logged metric as a float."""
    output_dir = Path(cfg.paths.output_dir)
    ckpt = None
    if cfg.get("train", True):  # reads only: which checkpoint, if any
        ckpt = resolve_ckpt_path(cfg.get("ckpt_path"), cfg.paths.log_dir, cfg.task_name, output_dir, cfg=cfg)
    # resuming into a run's own folder: nothing is written there until the resume is known to be valid
    in_place = bool(ckpt) and Path(ckpt).resolve().parent.parent == output_dir.resolve()
    with deferred_run_logs(output_dir) if in_place else contextlib.nullcontext():
        validate_train_config(cfg)  # ConfigError naming the key, before any data is read or generated
        if cfg.get("seed") is not None:
            pl.seed_everything(cfg.seed, workers=True)
        datamodule, model = build(cfg)
        previous_data = None
        if ckpt:
            check_fits(ckpt, model)  # InputFileError naming ckpt_path and the tasks / keys / shapes, nothing written
        if in_place:
            previous_data = check_resume(cfg, output_dir, ckpt, model, datamodule.metadata)
    if rank_zero_only.rank == 0:
        write_hydra_record(output_dir, cfg)  # what Hydra wrote before the job (hydra.output_subdir is null)
    write_run_info(output_dir, cfg, datamodule.metadata)
    if previous_data is not None and rank_zero_only.rank == 0:
        _record_data_change(output_dir, previous_data)
    callbacks = instantiate_callbacks(
        cfg.get("callbacks"), progress_bar=bool(cfg.trainer.get("enable_progress_bar", True))
    )
    loggers = instantiate_loggers(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for lg in loggers:
        lg.log_hyperparams(resolved_config(cfg))

    metrics: dict[str, Any] = {}
    if cfg.get("train", True):
        if ckpt:
            log.info("Resuming training from %s", ckpt)
        t0 = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)  # no pickled code runs
        metrics["time/fit_seconds"] = time.perf_counter() - t0
        metrics.update(_floats(trainer.callback_metrics))
    best = _best_checkpoint(trainer)
    if cfg.get("train", True):
        best = _per_head_selection(trainer, model, output_dir) or best
    if cfg.get("train", True) and best:
        # report validation figures of the checkpoint that is kept, not of the last epoch
        trainer.validate(model, datamodule=datamodule, ckpt_path=best, weights_only=True, verbose=False)
        metrics.update(_floats(trainer.callback_metrics))
    _calibrate(cfg, model, datamodule, best, output_dir, write=trainer.is_global_zero)
    if cfg.get("test", True):
        if not best:
            log.warning("No best checkpoint found: testing the current weights")
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics.update(_floats(trainer.callback_metrics))
        report = cfg.get("report")
        if trainer.is_global_zero and report is not None and report.get("enabled", False):
            _write_test_report(cfg, model, datamodule, best, output_dir, loggers)
    _log_summary(metrics, model)
    if trainer.is_global_zero:
        write_metrics_json(output_dir, best, metrics)
    return metrics


def write_metrics_json(output_dir: Path, best: str | None, metrics: dict[str, Any]) -> Path:
    """``metrics.json``: valid JSON always; an undefined figure (NaN, e.g. the AUROC of a head whose val labels
    are one class) is written as null, listed under ``undefined_metrics`` and named in a warning."""
    clean, undefined = nonfinite_to_null(dict(metrics))
    if undefined:
        log.warning(
            "metrics.json: %d metric(s) are undefined (NaN or infinite), written as null: %s", len(undefined), undefined
        )
    summary = {"best_checkpoint": best or None, "metrics": clean, "undefined_metrics": undefined}
    return write_json_atomic(Path(output_dir) / "metrics.json", summary, sort_keys=True, allow_nan=False)


def _record_data_change(output_dir: Path, previous: dict) -> None:
    """run_info.json of a run resumed on other data (``resume_allow_data_change=true``) keeps the fingerprint
    its first part was trained on."""
    import json

    path = output_dir / "run_info.json"
    info = json.loads(path.read_text())
    info.setdefault("data", {})["resumed_from_data"] = previous
    write_json_atomic(path, info, default=str)


def _loaded_run(cfg: DictConfig, model, datamodule, best: str, output_dir: Path):
    return LoadedRun(
        model=model,
        ckpt_path=Path(best) if best else Path(""),
        run_dir=output_dir,
        calibration=model.calibration,
        train_config=cfg,
        preprocessing=datamodule.processed,
    )


def _calibrate(cfg: DictConfig, model, datamodule, best: str, output_dir: Path, write: bool) -> None:
    """Fit the configured calibrators on the best weights (every rank, so that all test with them); rank 0
    writes calibration.json and copies the preprocessing into the run folder."""
    if write:
        save_preprocessing(datamodule.processed, output_dir)
    cal_cfg = cfg.get("calibration") or {}
    method = str(cal_cfg.get("method", "none") or "none")
    if method != "none":
        if best:  # the weights of the kept checkpoint, whatever the model holds after fit
            model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["state_dict"])
        run = _loaded_run(cfg, model, datamodule, best, output_dir)
        fit_calibration(
            run,
            datamodule.processed,
            method,
            split=str(cal_cfg.get("fit_split", "val")),
            batch_size=int(datamodule.eval_batch_size),
        )
        log.info("Fitted %s calibrators per task on the %s split", method, cal_cfg.get("fit_split", "val"))
    if not write:
        return
    path = model.calibration.save(output_dir)
    log.info(
        "Downsampling (%s): β_t per head for Eq. 3 %s → %s",
        model.calibration.info.get("mode", "correct"),
        {t: round(b, 4) for t, b in model.calibration.betas.items()},
        path,
    )


def _write_test_report(cfg: DictConfig, model, datamodule, best: str, output_dir: Path, loggers) -> None:
    """The evaluation report of the test split, scored and summed batch by batch (memory flat in the split)."""
    run = _loaded_run(cfg, model, datamodule, best, output_dir)
    frames = iter_score_split(run, datamodule.processed, "test", batch_size=int(datamodule.eval_batch_size))
    metrics_cfg = model.hparams.get("metrics") or {}
    write_report(
        frames,
        run.tasks,
        model.calibration,
        output_dir,
        cfg.report,
        split="test",
        ece_bins=int(metrics_cfg.get("ece_bins", 15)),
        thresholds=metrics_cfg.get("thresholds"),
        context={
            "title": f"{cfg.task_name}, test split",
            "checkpoint": best or None,
            "data": str(datamodule.processed.directory),
            "split": "test",
            "rows": None,
        },
        loggers=loggers,
    )


def _per_head_selection(trainer: pl.Trainer, model, output_dir: Path) -> str | None:
    """With ``callbacks.per_head_selection``: the checkpoint of each head at its own best val epoch, if they differ."""
    from mtrank.training.selection import PerHeadSelection

    for cb in trainer.callbacks:
        if isinstance(cb, PerHeadSelection):
            return cb.finalize(model, trainer, output_dir / "checkpoints")
    return None


def _best_checkpoint(trainer: pl.Trainer) -> str:
    """The best checkpoint of the first ModelCheckpoint that monitors a metric (else of the first one)."""
    found = [cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint)]
    found.sort(key=lambda cb: cb.monitor is None)
    return (found[0].best_model_path or "") if found else ""


def _floats(d: dict) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float, torch.Tensor))}


def _log_summary(metrics: dict[str, Any], model) -> None:
    tasks = getattr(model, "tasks", [])
    for stage in ("val", "test"):
        rows = []
        for t in tasks:
            a, o = metrics.get(f"{stage}/{t}/auroc"), metrics.get(f"{stage}/{t}/oracle_auroc")
            if a is not None:
                rows.append(f"{t}: auroc={a:.4f}" + (f" oracle={o:.4f} gap={o - a:+.4f}" if o is not None else ""))
        if rows:
            log.info("%s per head: %s", stage, "; ".join(rows))
