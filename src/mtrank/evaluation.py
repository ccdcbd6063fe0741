"""The evaluation job behind ``src/eval.py``, and the report that training writes after testing.

``python src/eval.py ckpt_path=<run folder or .ckpt>`` scores the test split of the data the run was trained
on (or ``processed_dir=…``, or labelled raw logs ``inputs=…``) and writes, in its own run folder
(``logs/eval/runs/<time>/``):

* ``predictions.parquet``: the predictions frame of :mod:`mtrank.prediction`;
* ``evaluation.json``: every figure (flat keys ``<split>/<task>/<metric>``) + the reliability tables, the
  calibration used and where the data came from;
* ``evaluation.md``: the same as tables a person reads;
* ``reliability.png``: the post's Figure 3 (:mod:`mtrank.plots`); logged to W&B as an image when
  ``logger=wandb``.

Metric names (per task; ``mean`` = average over tasks for auroc, pr_auc, ndcg, map):

* on ``p_<task>`` (corrected and calibrated), plain names: ``auroc``, ``pr_auc``, ``ece``, ``brier``,
  ``logloss``, ``n_pos``; with the simulator's truth: ``oracle_auroc`` (AUROC of ``p_true``), ``ece_true``
  (Σ_b n_b/n·|mean_b p − mean_b p_true| over the ECE bins) and ``mae_true`` (mean |p − p_true|);
* ``<metric>_raw`` for ece, brier, logloss, ece_true, mae_true of the raw scores (before Eq. 3), and
  ``<metric>_corrected`` (after Eq. 3, before the post-hoc calibrator) when a calibrator is used;
* ranking per request, each task ranking by its own ``p_<task>``: ``ndcg@k``, ``map``; with the truth
  ``oracle_ndcg@k``, ``oracle_map`` (ranking by ``p_true``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import polars as pl
import torch
from omegaconf import DictConfig, OmegaConf

from mtrank.calibration import Calibration, write_text_atomic
from mtrank.calibration_metrics import RawScoreMetrics, ece_true, mae_true
from mtrank.metrics import compute_head_metrics
from mtrank.plots import save_reliability_png, reliability_table
from mtrank.prediction import (
    PREDICTIONS_FILE,
    LoadedRun,
    ScoreInfo,
    fit_calibration,
    load_run,
    score_logs,
    score_split,
    write_parquet_atomic,
)
from mtrank.ranking_metrics import ranking_metrics

log = logging.getLogger(__name__)

SUMMARY_JSON = "evaluation.json"
SUMMARY_MD = "evaluation.md"
RELIABILITY_PNG = "reliability.png"

__all__ = ["RELIABILITY_PNG", "SUMMARY_JSON", "SUMMARY_MD", "evaluate", "evaluate_frame", "write_report"]


def _cols(frame: pl.DataFrame, template: str, tasks: Sequence[str]) -> np.ndarray:
    return frame.select([template.format(t) for t in tasks]).to_numpy().astype(np.float64)


def _calibration_figures(p: np.ndarray, y: np.ndarray, pt: np.ndarray | None, tasks, prefix: str, suffix: str,
                         ece_bins: int) -> dict[str, float]:
    m = RawScoreMetrics(tasks, prefix, ece_bins=ece_bins, suffix=suffix, sync_on_compute=False)
    m.update(torch.as_tensor(p, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32))
    out = {k: float(v) for k, v in m.compute().items()}
    if pt is not None:
        for j, t in enumerate(tasks):
            out[f"{prefix}/{t}/ece_true{suffix}"] = ece_true(p[:, j], pt[:, j], ece_bins)
            out[f"{prefix}/{t}/mae_true{suffix}"] = mae_true(p[:, j], pt[:, j])
    return out


def evaluate_frame(
    frame: pl.DataFrame,
    tasks: Sequence[str],
    *,
    calibration: Calibration | None = None,
    split: str = "test",
    ece_bins: int = 15,
    ks: Sequence[int] = (5, 10),
    thresholds: int | None = None,
) -> dict[str, float]:
    """Every figure of a labelled predictions frame (see the module docstring for the names)."""
    tasks = list(tasks)
    missing = [f"label_{t}" for t in tasks if f"label_{t}" not in frame.columns]
    if missing:
        raise ValueError(f"the predictions have no label column(s) {missing}: nothing to evaluate against")
    y = _cols(frame, "label_{}", tasks)
    p = _cols(frame, "p_{}", tasks)
    raw = _cols(frame, "p_raw_{}", tasks)
    has_true = all(f"p_true_{t}" in frame.columns for t in tasks)
    pt = _cols(frame, "p_true_{}", tasks) if has_true else None
    out = compute_head_metrics(
        torch.as_tensor(p, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32), tasks,
        p_true=torch.as_tensor(pt, dtype=torch.float32) if has_true else None, prefix=split,
        thresholds=thresholds, ece_bins=ece_bins,
    )
    if has_true:
        for j, t in enumerate(tasks):
            out[f"{split}/{t}/ece_true"] = ece_true(p[:, j], pt[:, j], ece_bins)
            out[f"{split}/{t}/mae_true"] = mae_true(p[:, j], pt[:, j])
    out.update(_calibration_figures(raw, y, pt, tasks, split, "_raw", ece_bins))
    if calibration is not None and calibration.has_calibrators:
        corrected = np.asarray(calibration.correct(raw, tasks))
        out.update(_calibration_figures(corrected, y, pt, tasks, split, "_corrected", ece_bins))
    if "request_id" in frame.columns and ks:
        out.update(ranking_metrics(frame, tasks, ks, prefix=split))
        if has_true:
            oracle = ranking_metrics(frame, tasks, ks, score_template="p_true_{task}", prefix=split)
            for k, v in oracle.items():
                if not k.endswith("n_requests_pos"):
                    head, name = k.rsplit("/", 1)
                    out[f"{head}/oracle_{name}"] = v
    for j, t in enumerate(tasks):
        out[f"{split}/{t}/base_rate"] = float(y[:, j].mean()) if len(y) else float("nan")
        out[f"{split}/{t}/mean_p"] = float(p[:, j].mean()) if len(p) else float("nan")
        out[f"{split}/{t}/mean_p_raw"] = float(raw[:, j].mean()) if len(raw) else float("nan")
    out[f"{split}/rows"] = float(frame.height)
    return out


# --------------------------------------------------------------------------------------------- the report


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and v.is_integer() and abs(v) >= 1:
        return f"{int(v)}"
    return f"{v:.{digits}f}"


def _markdown(metrics: Mapping[str, float], tasks: Sequence[str], split: str, calibration: Calibration,
              context: Mapping[str, Any], ks: Sequence[int]) -> str:
    def g(t, name):
        return metrics.get(f"{split}/{t}/{name}")

    has_true = any(f"{split}/{t}/oracle_auroc" in metrics for t in tasks)
    corrected = any(f"{split}/{t}/ece_corrected" in metrics for t in tasks)
    lines = [f"# Evaluation: {context.get('title', split)}", ""]
    for k in ("checkpoint", "data", "split", "rows", "calibration_file"):
        if context.get(k) is not None:
            lines.append(f"- **{k}**: `{context[k]}`")
    lines.append(f"- **calibration**: Eq. 3 per head with β_t below, then post-hoc `{calibration.method}`")
    lines += ["", "## Calibration per head", "",
              "`raw`: the model's score (downsampled scale); `corr.`: after Eq. 3; `p`: corrected and calibrated "
              "(what utility, tuning and A/B use). ECE: 15 uniform bins on [0, 1], L1.", ""]
    head = ["task", "β_t", "positives", "base rate", "mean p_raw", "mean p", "ece raw"]
    head += ["ece corr."] if corrected else []
    head += ["ece", "brier raw", "brier", "logloss raw", "logloss"]
    head += ["ece_true raw", "ece_true", "mae_true"] if has_true else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in tasks:
        row = [t, _fmt(calibration.betas.get(t), 4), _fmt(g(t, "n_pos")), _fmt(g(t, "base_rate"), 4),
               _fmt(g(t, "mean_p_raw"), 4), _fmt(g(t, "mean_p"), 4), _fmt(g(t, "ece_raw"))]
        row += [_fmt(g(t, "ece_corrected"))] if corrected else []
        row += [_fmt(g(t, "ece")), _fmt(g(t, "brier_raw")), _fmt(g(t, "brier")), _fmt(g(t, "logloss_raw")),
                _fmt(g(t, "logloss"))]
        row += [_fmt(g(t, "ece_true_raw")), _fmt(g(t, "ece_true")), _fmt(g(t, "mae_true"))] if has_true else []
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Ranking per head", "",
              "AUROC and PR-AUC over all rows; NDCG@k and MAP per request (each head ranks a request's candidates "
              "by its own p; averaged over requests with a positive)" + ("; `oracle`: the same for p_true." if has_true else "."),
              ""]
    head = ["task", "auroc"] + (["oracle auroc"] if has_true else []) + ["pr_auc"]
    for k in ks:
        head += [f"ndcg@{k}"] + ([f"oracle ndcg@{k}"] if has_true else [])
    head += ["map"] + (["oracle map"] if has_true else []) + ["requests with a positive"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in tasks + ["mean"]:
        row = [t, _fmt(g(t, "auroc"))] + ([_fmt(g(t, "oracle_auroc"))] if has_true else []) + [_fmt(g(t, "pr_auc"))]
        for k in ks:
            row += [_fmt(g(t, f"ndcg@{k}"))] + ([_fmt(g(t, f"oracle_ndcg@{k}"))] if has_true else [])
        row += [_fmt(g(t, "map"))] + ([_fmt(g(t, "oracle_map"))] if has_true else []) + [_fmt(g(t, "n_requests_pos"))]
        lines.append("| " + " | ".join(row) + " |")
    if context.get("oov"):
        lines += ["", "## Values mapped to the OOV bucket", "", "| column | unseen values (rows) | nulls (rows) |",
                  "|---|---|---|"]
        for c, n in context["oov"]["oov_unseen"].items():
            lines.append(f"| {c} | {n} | {context['oov']['oov_null'].get(c, 0)} |")
    lines += ["", "## Reliability", "", f"![reliability diagram]({RELIABILITY_PNG})", "",
              "Read it as the post's Figure 3: each head's points should sit on the dotted diagonal (the fraction "
              "of positives in a bin equals the mean predicted probability there); the histogram below shows where "
              "the calibrated scores lie. See docs/calibration.md.", ""]
    return "\n".join(lines)


def write_report(
    frame: pl.DataFrame,
    tasks: Sequence[str],
    calibration: Calibration,
    out_dir: str | Path,
    report: Mapping[str, Any] | None = None,
    *,
    split: str = "test",
    ece_bins: int = 15,
    context: Mapping[str, Any] | None = None,
    loggers: Sequence[Any] = (),
) -> dict[str, float]:
    """Write predictions.parquet, evaluation.json/.md and reliability.png into ``out_dir``; returns the figures.

    ``report``: the ``report`` config (``bins``, ``n_bins``, ``min_bin_count``, ``ks``, ``scale``, ``show_raw``,
    ``write_predictions``). Without labels only the predictions are written.
    """
    report = dict(report or {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    context = dict(context or {})
    tasks = list(tasks)
    if report.get("write_predictions", True):
        write_parquet_atomic(frame, out_dir / PREDICTIONS_FILE)
    has_labels = all(f"label_{t}" in frame.columns for t in tasks)
    if not has_labels:
        log.info("no labels: wrote %s only", out_dir / PREDICTIONS_FILE)
        return {}
    ks = [int(k) for k in (report.get("ks") or [])]
    metrics = evaluate_frame(frame, tasks, calibration=calibration, split=split, ece_bins=ece_bins, ks=ks)
    bins, n_bins = str(report.get("bins", "quantile")), int(report.get("n_bins", 15))
    scores = {t: frame[f"p_{t}"].to_numpy() for t in tasks}
    labels = {t: frame[f"label_{t}"].to_numpy() for t in tasks}
    png = save_reliability_png(
        out_dir / RELIABILITY_PNG, scores, labels, n_bins=n_bins, strategy=bins,
        raw_scores={t: frame[f"p_raw_{t}"].to_numpy() for t in tasks} if report.get("show_raw") else None,
        scale=str(report.get("scale", "linear")), min_bin_count=int(report.get("min_bin_count", 50)),
        title=f"Calibration plot, {split} split ({frame.height:,} rows, {bins} bins)",
    )
    summary = {
        "context": context,
        "split": split,
        "calibration": {"method": calibration.method, "betas": calibration.betas, "info": calibration.info},
        "metrics": metrics,
        "reliability": {"bins": bins, "n_bins": n_bins,
                        "per_task": {t: reliability_table(scores[t], labels[t], n_bins, bins) for t in tasks}},
    }
    write_text_atomic(out_dir / SUMMARY_JSON, json.dumps(summary, indent=2, default=_json_default))
    write_text_atomic(out_dir / SUMMARY_MD, _markdown(metrics, tasks, split, calibration, context, ks))
    _log_to_loggers(loggers, metrics, png, split)
    return metrics


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)


def _log_to_loggers(loggers: Sequence[Any], metrics: Mapping[str, float], png: Path, split: str) -> None:
    from pytorch_lightning.loggers import WandbLogger

    finite = {f"report/{k}": v for k, v in metrics.items() if isinstance(v, float) and math.isfinite(v)}
    for lg in loggers:
        try:
            lg.log_metrics(finite)
            if isinstance(lg, WandbLogger):
                lg.log_image(key=f"{split}/reliability", images=[str(png)])
            lg.save()
        except Exception as exc:  # noqa: BLE001 - a logger failing must not lose the written report
            log.warning("could not log the report to %s: %s", type(lg).__name__, exc)


# --------------------------------------------------------------------------------------------- the job


def _device(name: str | None) -> str:
    if not name or name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(name)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """The eval job: load the run, (optionally) fit calibrators, score, write the report; returns the figures."""
    from mtrank.data.pipeline import ProcessedData
    from mtrank.utils import instantiate as inst
    from mtrank.utils.run_info import resolved_config

    target = cfg.get("ckpt_path") or cfg.get("run_dir")
    if not target:
        raise ValueError("give ckpt_path=<checkpoint file or training run folder> (or run_dir=<run folder>)")
    if cfg.get("ckpt_path") and cfg.get("run_dir"):
        raise ValueError("give either ckpt_path or run_dir, not both")
    if cfg.get("inputs") and cfg.get("processed_dir"):
        raise ValueError("give either inputs=<raw logs> or processed_dir=<processed data>, not both")
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = _device(cfg.get("device"))
    run: LoadedRun = load_run(target, device=device)
    batch_size = int(cfg.get("batch_size", 65_536))
    split = str(cfg.get("split", "test"))
    data = None
    if not cfg.get("inputs"):
        data = ProcessedData.load(cfg.processed_dir) if cfg.get("processed_dir") else run.processed_data()
    cal_cfg = cfg.get("calibration")
    cal_file = run.run_dir / "calibration.json" if (run.run_dir / "calibration.json").exists() else None
    if cal_cfg is not None and cal_cfg.get("method"):
        if cal_cfg.get("downsampling", "correct") != run.calibration.info.get("mode", "correct"):
            log.warning("calibration.downsampling is set at training time; this run used '%s'",
                        run.calibration.info.get("mode", "correct"))
        if str(cal_cfg.method) == "none":  # the correction alone
            run.model.set_calibration(None)
            run.calibration = run.model.calibration
            cal = run.calibration
        else:
            fit_data = data if data is not None else run.processed_data()
            cal = fit_calibration(run, fit_data, str(cal_cfg.method), split=str(cal_cfg.get("fit_split", "val")),
                                  batch_size=batch_size, device=device)
            log.info("Fitted %s calibrators on the %s split", cal.method, cal_cfg.get("fit_split", "val"))
        cal_file = cal.save(out_dir)
    info: ScoreInfo | None = None
    if cfg.get("inputs"):
        inputs = cfg.inputs if isinstance(cfg.inputs, str) else list(cfg.inputs)
        frame, info = score_logs(run, inputs, batch_size=batch_size, device=device)
        source = info.source
    else:
        frame = score_split(run, data, split=split, batch_size=batch_size, device=device)
        source = str(data.directory)
    write_text_atomic(out_dir / "config.yaml", OmegaConf.to_yaml(resolved_config(cfg)))
    loggers = inst.instantiate_loggers(cfg.get("logger"))
    context = {
        "title": f"{run.run_dir.name}, {split if not cfg.get('inputs') else 'raw logs'}",
        "checkpoint": str(run.ckpt_path),
        "data": source,
        "split": split if not cfg.get("inputs") else None,
        "rows": frame.height,
        "calibration_file": str(cal_file) if cal_file else None,
        "oov": info.to_dict() if info is not None else None,
    }
    metrics = write_report(
        frame, run.tasks, run.calibration, out_dir, cfg.get("report"),
        split=split if not cfg.get("inputs") else "logs",
        ece_bins=int((run.model.hparams.get("metrics") or {}).get("ece_bins", 15)),
        context=context, loggers=loggers,
    )
    log.info("Evaluation written to %s", out_dir)
    for t in run.tasks:
        pre = split if not cfg.get("inputs") else "logs"
        if f"{pre}/{t}/ece" in metrics:
            log.info("%s: ece %.4f (raw %.4f)  brier %.5f (raw %.5f)  auroc %.4f", t, metrics[f"{pre}/{t}/ece"],
                     metrics[f"{pre}/{t}/ece_raw"], metrics[f"{pre}/{t}/brier"], metrics[f"{pre}/{t}/brier_raw"],
                     metrics[f"{pre}/{t}/auroc"])
    return metrics
