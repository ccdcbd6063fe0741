"""The evaluation report of a split: metrics.json, report.md, predictions and reliability plots, streamed batch by batch."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mtrank.calibration.run_calibration import Calibration
from mtrank.data.spec import REQUEST_COL
from mtrank.scoring.figures import SplitFigures, ranking_figures
from mtrank.scoring.plots import reliability_table, save_reliability_png
from mtrank.scoring.predict import write_parquet_atomic
from mtrank.scoring.score import (
    PREDICTIONS_FILE,
)
from mtrank.utils.io import atomic_write, nonfinite_to_null, write_text_atomic

log = logging.getLogger(__name__)


SUMMARY_JSON = "evaluation.json"


SUMMARY_MD = "evaluation.md"


RELIABILITY_PNG = "reliability.png"


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float) and v.is_integer() and abs(v) >= 1:
        return f"{int(v)}"
    return f"{v:.{digits}f}"


def _markdown(
    metrics: Mapping[str, float],
    tasks: Sequence[str],
    split: str,
    calibration: Calibration,
    context: Mapping[str, Any],
    ks: Sequence[int],
) -> str:
    def g(t, name):
        return metrics.get(f"{split}/{t}/{name}")

    has_true = any(f"{split}/{t}/oracle_auroc" in metrics for t in tasks)
    corrected = any(f"{split}/{t}/ece_corrected" in metrics for t in tasks)
    lines = [f"# Evaluation: {context.get('title', split)}", ""]
    if context.get("in_sample"):
        lines += [f"**IN-SAMPLE**: {context['in_sample']}; these figures overstate calibration and ranking.", ""]
    for k in ("checkpoint", "data", "split", "rows", "calibration_file"):
        if context.get(k) is not None:
            lines.append(f"- **{k}**: `{context[k]}`")
    lines.append(f"- **calibration**: Eq. 3 per head with β_t below, then post-hoc `{calibration.method}`")
    lines += [
        "",
        "## Calibration per head",
        "",
        "`raw`: the model's score (downsampled scale); `corr.`: after Eq. 3; `p`: corrected and calibrated "
        "(what utility, tuning and A/B use). ECE: 15 uniform bins on [0, 1], L1.",
        "",
    ]
    head = ["task", "β_t", "positives", "base rate", "mean p_raw", "mean p", "ece raw"]
    head += ["ece corr."] if corrected else []
    head += ["ece", "brier raw", "brier", "logloss raw", "logloss"]
    head += ["ece_true raw", "ece_true", "mae_true"] if has_true else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in tasks:
        row = [
            t,
            _fmt(calibration.betas.get(t), 4),
            _fmt(g(t, "n_pos")),
            _fmt(g(t, "base_rate"), 4),
            _fmt(g(t, "mean_p_raw"), 4),
            _fmt(g(t, "mean_p"), 4),
            _fmt(g(t, "ece_raw")),
        ]
        row += [_fmt(g(t, "ece_corrected"))] if corrected else []
        row += [
            _fmt(g(t, "ece")),
            _fmt(g(t, "brier_raw")),
            _fmt(g(t, "brier")),
            _fmt(g(t, "logloss_raw")),
            _fmt(g(t, "logloss")),
        ]
        row += [_fmt(g(t, "ece_true_raw")), _fmt(g(t, "ece_true")), _fmt(g(t, "mae_true"))] if has_true else []
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "## Ranking per head",
        "",
        "AUROC and PR-AUC over all rows; NDCG@k and MAP per request (each head ranks a request's candidates "
        "by its own p; averaged over requests with a positive)"
        + ("; `oracle`: the same for p_true." if has_true else "."),
        "",
    ]
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
        lines += [
            "",
            "## Values mapped to the OOV bucket",
            "",
            "| column | unseen values (rows) | nulls (rows) |",
            "|---|---|---|",
        ]
        for c, n in context["oov"]["oov_unseen"].items():
            lines.append(f"| {c} | {n} | {context['oov']['oov_null'].get(c, 0)} |")
    lines += [
        "",
        "## Reliability",
        "",
        f"![reliability diagram]({RELIABILITY_PNG})",
        "",
        "Read it as the post's Figure 3: each head's points should sit on the dotted diagonal (the fraction "
        "of positives in a bin equals the mean predicted probability there); the histogram below shows where "
        "the calibrated scores lie. See docs/calibration.md.",
        "",
    ]
    return "\n".join(lines)


class _Columns(Mapping):
    """task → one column of the predictions as a NumPy array, read from the Parquet file when asked for, so that
    the reliability tables and figure hold one task's column at a time (read from a frame when given one)."""

    def __init__(self, source: pl.DataFrame | Path, tasks: Sequence[str], template: str) -> None:
        self.source, self.tasks, self.template = source, list(tasks), template

    def __getitem__(self, task: str) -> np.ndarray:
        if task not in self.tasks:
            raise KeyError(task)
        col = self.template.format(task)
        if isinstance(self.source, pl.DataFrame):
            return self.source[col].to_numpy()
        return pl.read_parquet(self.source, columns=[col])[col].to_numpy()

    def __contains__(self, task: object) -> bool:
        return task in self.tasks

    def __iter__(self) -> Iterator[str]:
        return iter(self.tasks)

    def __len__(self) -> int:
        return len(self.tasks)


def _stream_to_parquet(frames: Iterable[pl.DataFrame], path: Path, each: Callable[[pl.DataFrame], None]) -> None:
    """Write the frames, in order, to one Parquet file, calling ``each(frame)`` on every frame on the way: each frame
    goes to a part file in a temporary folder beside ``path`` as it comes, then Polars' streaming engine joins the
    parts into ``path`` (atomically: temp file + rename). Memory: one frame and the engine's buffers."""
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.parts-", dir=path.parent) as tmp:
        parts = []
        for i, frame in enumerate(frames):
            parts.append(Path(tmp) / f"{i:09d}.parquet")
            frame.write_parquet(parts[-1], compression="lz4", statistics=False)
            each(frame)
        if not parts:
            raise ValueError("no predictions frame to write")
        atomic_write(path, lambda out: pl.scan_parquet(parts).sink_parquet(out))


def write_report(
    predictions: pl.DataFrame | Iterable[pl.DataFrame],
    tasks: Sequence[str],
    calibration: Calibration,
    out_dir: str | Path,
    report: Mapping[str, Any] | None = None,
    *,
    split: str = "test",
    ece_bins: int = 15,
    thresholds: int | None = None,
    context: Mapping[str, Any] | None = None,
    loggers: Sequence[Any] = (),
) -> dict[str, float]:
    """Write predictions.parquet, evaluation.json/.md and reliability.png into ``out_dir``; returns the figures.

    ``predictions``: the predictions frame, or its frames batch by batch (e.g. from
    :func:`mtrank.scoring.score.iter_score_split`): they are then written to the Parquet file as they come and the
    figures summed on the way, so the memory does not grow with the rows (the per-request ranking is read back
    from the file in hash buckets of about ``report.ranking_chunk_rows`` rows, the reliability diagram one task's
    columns at a time; without ``report.write_predictions`` the file is a temporary one, removed at the end).
    ``report``: the ``report`` config (``bins``, ``n_bins``, ``min_bin_count``, ``ks``, ``scale``, ``show_raw``,
    ``write_predictions``, ``ranking_chunk_rows``); ``thresholds``: AUROC / PR-AUC thresholds as
    ``model.metrics.thresholds``. Without labels only the predictions are written.
    """
    report = dict(report or {})
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    context = dict(context or {})
    tasks = list(tasks)
    figures = SplitFigures(tasks, calibration=calibration, split=split, ece_bins=ece_bins, thresholds=thresholds)
    keep = bool(report.get("write_predictions", True))
    path = out_dir / PREDICTIONS_FILE
    temp = None
    if isinstance(predictions, pl.DataFrame):
        if keep:
            write_parquet_atomic(predictions, path)
        figures.update(predictions)
        source: pl.DataFrame | Path = predictions
    else:
        if not keep:
            fd, name = tempfile.mkstemp(prefix=f".{PREDICTIONS_FILE}.", suffix=".scratch", dir=out_dir)
            os.close(fd)
            path = temp = Path(name)
        _stream_to_parquet(predictions, path, figures.update)
        source = path
    try:
        return _report_files(
            source, figures, tasks, calibration, out_dir, report, split, context, loggers, path if keep else None
        )
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)


def _report_files(
    source: pl.DataFrame | Path,
    figures: SplitFigures,
    tasks: list[str],
    calibration: Calibration,
    out_dir: Path,
    report: Mapping[str, Any],
    split: str,
    context: dict,
    loggers: Sequence[Any],
    written: Path | None,
) -> dict[str, float]:
    if not figures.has_labels:
        log.info(
            "no labels: nothing to evaluate (predictions written to %s)", written or "no file: write_predictions=false"
        )
        return {}
    ks = [int(k) for k in (report.get("ks") or [])]
    metrics = figures.compute()
    columns = source.columns if isinstance(source, pl.DataFrame) else pl.scan_parquet(source).collect_schema()
    if ks and REQUEST_COL in columns:
        chunk = report.get("ranking_chunk_rows")
        metrics.update(
            ranking_figures(
                source, tasks, ks, split=split, rows=figures.rows, chunk_rows=None if chunk is None else int(chunk)
            )
        )
    if context.get("rows") is None:
        context["rows"] = figures.rows
    bins, n_bins = str(report.get("bins", "quantile")), int(report.get("n_bins", 15))
    scores, labels = _Columns(source, tasks, "p_{}"), _Columns(source, tasks, "label_{}")
    png = save_reliability_png(
        out_dir / RELIABILITY_PNG,
        scores,
        labels,
        n_bins=n_bins,
        strategy=bins,
        raw_scores=_Columns(source, tasks, "p_raw_{}") if report.get("show_raw") else None,
        scale=str(report.get("scale", "linear")),
        min_bin_count=int(report.get("min_bin_count", 50)),
        title=f"Calibration plot, {split} split ({figures.rows:,} rows, {bins} bins)",
    )
    summary = {
        "context": context,
        "split": split,
        "calibration": {"method": calibration.method, "betas": calibration.betas, "info": calibration.info},
        "metrics": metrics,
        "reliability": {
            "bins": bins,
            "n_bins": n_bins,
            "per_task": {t: reliability_table(scores[t], labels[t], n_bins, bins) for t in tasks},
        },
    }
    summary, undefined = nonfinite_to_null(json.loads(json.dumps(summary, default=_json_default)))
    if undefined:
        log.warning(
            "%s: %d figure(s) are undefined (NaN or infinite), written as null: %s",
            SUMMARY_JSON,
            len(undefined),
            undefined,
        )
    write_text_atomic(out_dir / SUMMARY_JSON, json.dumps(summary, indent=2, allow_nan=False))
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
