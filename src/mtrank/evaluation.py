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

Memory: a split of processed data is scored and reported batch by batch (:func:`write_report` given frames,
:class:`SplitFigures`, :func:`ranking_figures` in request-hash buckets), so the report of a training run or of
``src/eval.py`` does not grow with the split; raw logs (``inputs=…``) are read whole.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import polars as pl
import torch
from omegaconf import DictConfig, OmegaConf

from mtrank.calibration import Calibration
from mtrank.calibration_metrics import RawScoreMetrics, TrueCalibration
from mtrank.data.spec import REQUEST_COL
from mtrank.metrics import MultiHeadMetrics
from mtrank.plots import save_reliability_png, reliability_table
from mtrank.prediction import (
    PREDICTIONS_FILE,
    LoadedRun,
    ScoreInfo,
    fit_calibration,
    iter_score_split,
    load_run,
    score_logs,
    write_parquet_atomic,
)
from mtrank.ranking_metrics import ranking_metrics
from mtrank.utils.io import atomic_write, write_text_atomic

log = logging.getLogger(__name__)

SUMMARY_JSON = "evaluation.json"
SUMMARY_MD = "evaluation.md"
RELIABILITY_PNG = "reliability.png"

__all__ = ["RELIABILITY_PNG", "SUMMARY_JSON", "SUMMARY_MD", "SplitFigures", "evaluate", "evaluate_frame",
           "ranking_figures", "write_report"]


class SplitFigures:
    """Every per-row figure of :func:`evaluate_frame` (all but the per-request ranking), from predictions frames
    given batch by batch to :meth:`update`: torchmetrics states and running sums, so the memory does not grow
    with the rows. ``thresholds``: as ``model.metrics.thresholds`` (None: exact AUROC / PR-AUC, which keep every
    row)."""

    def __init__(self, tasks: Sequence[str], *, calibration: Calibration | None = None, split: str = "test",
                 ece_bins: int = 15, thresholds: int | None = None) -> None:
        self.tasks, self.split, self.ece_bins = list(tasks), split, int(ece_bins)
        self.corrected = calibration if calibration is not None and calibration.has_calibrators else None
        self.thresholds = thresholds
        self.rows = 0
        self.has_labels: bool | None = None  # known from the first frame
        self.has_true = False

    def _start(self, frame: pl.DataFrame) -> None:
        tasks, split = self.tasks, self.split
        self.has_labels = all(f"label_{t}" in frame.columns for t in tasks)
        self.has_true = all(f"p_true_{t}" in frame.columns for t in tasks)
        self.heads = MultiHeadMetrics(tasks, split, has_p_true=self.has_true, thresholds=self.thresholds,
                                      ece_bins=self.ece_bins, sync_on_compute=False)
        kinds = {"": "p", "_raw": "raw"} | ({"_corrected": "corrected"} if self.corrected is not None else {})
        self.calib = {suffix: RawScoreMetrics(tasks, split, ece_bins=self.ece_bins, suffix=suffix, sync_on_compute=False)
                      for suffix in kinds if suffix}
        self.true = {(suffix, t): (TrueCalibration(self.ece_bins), kind) for suffix, kind in kinds.items() for t in tasks}
        self.sums = {name: np.zeros(len(tasks)) for name in ("y", "p", "raw")}

    def update(self, frame: pl.DataFrame) -> None:
        if self.has_labels is None:
            self._start(frame)
        elif all(f"label_{t}" in frame.columns for t in self.tasks) != self.has_labels:
            raise ValueError("the predictions frames differ in their label columns")
        self.rows += frame.height
        if not self.has_labels or frame.height == 0:
            return
        tasks = self.tasks
        cols = lambda template: frame.select([template.format(t) for t in tasks]).to_numpy().astype(np.float64)  # noqa: E731
        scores = {"y": cols("label_{}"), "p": cols("p_{}"), "raw": cols("p_raw_{}")}
        if self.corrected is not None:
            scores["corrected"] = np.asarray(self.corrected.correct(scores["raw"], tasks))
        pt = cols("p_true_{}") if self.has_true else None
        y = torch.as_tensor(scores["y"], dtype=torch.float32)
        self.heads.update(torch.as_tensor(scores["p"], dtype=torch.float32), y,
                          torch.as_tensor(pt, dtype=torch.float32) if pt is not None else None)
        for suffix, m in self.calib.items():
            m.update(torch.as_tensor(scores[suffix.lstrip("_")], dtype=torch.float32), y)
        if pt is not None:
            for (suffix, t), (acc, kind) in self.true.items():
                j = tasks.index(t)
                acc.update(scores[kind][:, j], pt[:, j])
        for name in self.sums:
            self.sums[name] += scores[name].sum(axis=0)

    def compute(self) -> dict[str, float]:
        if not self.has_labels:
            missing = [f"label_{t}" for t in self.tasks]
            raise ValueError(f"the predictions have no label column(s) {missing}: nothing to evaluate against")
        split, n = self.split, self.rows
        out = {k: float(v) for k, v in self.heads.compute().items()}
        for suffix, m in self.calib.items():
            out.update({k: float(v) for k, v in m.compute().items()})
        if self.has_true:
            for (suffix, t), (acc, _) in self.true.items():
                out[f"{split}/{t}/ece_true{suffix}"] = acc.ece()
                out[f"{split}/{t}/mae_true{suffix}"] = acc.mae()
        for j, t in enumerate(self.tasks):
            for key, name in (("base_rate", "y"), ("mean_p", "p"), ("mean_p_raw", "raw")):
                out[f"{split}/{t}/{key}"] = float(self.sums[name][j] / n) if n else float("nan")
        out[f"{split}/rows"] = float(n)
        return out


def ranking_figures(
    source: pl.DataFrame | str | Path,
    tasks: Sequence[str],
    ks: Sequence[int],
    *,
    split: str = "test",
    rows: int | None = None,
    chunk_rows: int | None = None,
) -> dict[str, float]:
    """NDCG@k and MAP per task (:func:`mtrank.ranking_metrics.ranking_metrics`), with their ``oracle_`` twins
    when the predictions hold ``p_true_<task>``, of a predictions frame or Parquet file.

    With ``chunk_rows`` and more ``rows`` than that, the requests are cut into ``⌈rows / chunk_rows⌉`` buckets by
    a hash of ``request_id`` and ranked one bucket at a time (each request lies in one bucket; the means over
    requests are recombined from the buckets' sums), so that only about ``chunk_rows`` rows are held at once (a
    file is read once per bucket). The figures are those of one pass except for the pseudo-random order given to
    tied scores.
    """
    if chunk_rows is not None and int(chunk_rows) < 1:
        raise ValueError(f"report.ranking_chunk_rows = {chunk_rows}: expected an integer ≥ 1 (or null)")
    lf = source.lazy() if isinstance(source, pl.DataFrame) else pl.scan_parquet(source)
    schema = lf.collect_schema()
    has_true = all(f"p_true_{t}" in schema for t in tasks)
    n = rows if rows is not None else int(lf.select(pl.len()).collect().item())
    buckets = max(1, -(-n // int(chunk_rows))) if chunk_rows else 1
    templates = ("label_{}", "p_{}") + (("p_true_{}",) if has_true else ())
    lf = lf.select([REQUEST_COL] + [c.format(t) for t in tasks for c in templates])
    kinds = [("", "p_{task}")] + ([("oracle_", "p_true_{task}")] if has_true else [])
    sums: dict[str, float] = {}
    for part in _request_buckets(lf, buckets):
        for kind, template in kinds:
            res = ranking_metrics(part, tasks, ks, score_template=template, prefix=split)
            for t in tasks:
                head = f"{split}/{t}/"
                m = res[head + "n_requests_pos"]
                sums[f"{head}{kind}n"] = sums.get(f"{head}{kind}n", 0.0) + m
                for name in [f"ndcg@{k}" for k in ks] + ["map"]:
                    key = f"{head}{kind}{name}"
                    sums[key] = sums.get(key, 0.0) + (res[head + name] * m if m else 0.0)
    out: dict[str, float] = {}
    names = [f"ndcg@{k}" for k in sorted({int(k) for k in ks})] + ["map"]
    for kind, _ in kinds:
        for t in tasks:
            head = f"{split}/{t}/"
            m = sums.get(f"{head}{kind}n", 0.0)
            for name in names:
                out[f"{head}{kind}{name}"] = sums[f"{head}{kind}{name}"] / m if m else float("nan")
            if not kind:
                out[head + "n_requests_pos"] = m
        for name in names:
            vals = [out[f"{split}/{t}/{kind}{name}"] for t in tasks]
            out[f"{split}/mean/{kind}{name}"] = float(np.nanmean(vals)) if not all(np.isnan(vals)) else float("nan")
    return out


def _request_buckets(lf: pl.LazyFrame, buckets: int) -> Iterable[pl.LazyFrame | pl.DataFrame]:
    """The rows of ``lf`` in ``buckets`` groups of whole requests (by a hash of ``request_id``), one at a time:
    ``lf`` itself for one bucket, else one streaming filtered pass over ``lf`` per bucket (a Parquet file is read
    ``buckets`` times, holding one bucket's rows: time grows as rows × buckets, memory does not grow)."""
    if buckets == 1:
        return [lf]
    bucket = pl.col(REQUEST_COL).hash(seed=0) % buckets
    return (lf.filter(bucket == b).collect(engine="streaming") for b in range(buckets))


def evaluate_frame(
    frame: pl.DataFrame,
    tasks: Sequence[str],
    *,
    calibration: Calibration | None = None,
    split: str = "test",
    ece_bins: int = 15,
    ks: Sequence[int] = (5, 10),
    thresholds: int | None = None,
    chunk_rows: int | None = None,
) -> dict[str, float]:
    """Every figure of a labelled predictions frame (see the module docstring for the names)."""
    figures = SplitFigures(tasks, calibration=calibration, split=split, ece_bins=ece_bins, thresholds=thresholds)
    figures.update(frame)
    out = figures.compute()
    if "request_id" in frame.columns and ks:
        out.update(ranking_figures(frame, list(tasks), ks, split=split, rows=frame.height, chunk_rows=chunk_rows))
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
    :func:`mtrank.prediction.iter_score_split`): they are then written to the Parquet file as they come and the
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
        return _report_files(source, figures, tasks, calibration, out_dir, report, split, context, loggers,
                             path if keep else None)
    finally:
        if temp is not None:
            temp.unlink(missing_ok=True)


def _report_files(source: pl.DataFrame | Path, figures: SplitFigures, tasks: list[str], calibration: Calibration,
                  out_dir: Path, report: Mapping[str, Any], split: str, context: dict, loggers: Sequence[Any],
                  written: Path | None) -> dict[str, float]:
    if not figures.has_labels:
        log.info("no labels: nothing to evaluate (predictions written to %s)", written or "no file: write_predictions=false")
        return {}
    ks = [int(k) for k in (report.get("ks") or [])]
    metrics = figures.compute()
    columns = source.columns if isinstance(source, pl.DataFrame) else pl.scan_parquet(source).collect_schema()
    if ks and REQUEST_COL in columns:
        chunk = report.get("ranking_chunk_rows")
        metrics.update(ranking_figures(source, tasks, ks, split=split, rows=figures.rows,
                                       chunk_rows=None if chunk is None else int(chunk)))
    if context.get("rows") is None:
        context["rows"] = figures.rows
    bins, n_bins = str(report.get("bins", "quantile")), int(report.get("n_bins", 15))
    scores, labels = _Columns(source, tasks, "p_{}"), _Columns(source, tasks, "label_{}")
    png = save_reliability_png(
        out_dir / RELIABILITY_PNG, scores, labels, n_bins=n_bins, strategy=bins,
        raw_scores=_Columns(source, tasks, "p_raw_{}") if report.get("show_raw") else None,
        scale=str(report.get("scale", "linear")), min_bin_count=int(report.get("min_bin_count", 50)),
        title=f"Calibration plot, {split} split ({figures.rows:,} rows, {bins} bins)",
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
    predictions: pl.DataFrame | Iterable[pl.DataFrame]
    if cfg.get("inputs"):
        inputs = cfg.inputs if isinstance(cfg.inputs, str) else list(cfg.inputs)
        predictions, info = score_logs(run, inputs, batch_size=batch_size, device=device)
        source = info.source
    else:  # batch by batch: the report's memory does not grow with the split
        predictions = iter_score_split(run, data, split=split, batch_size=batch_size, device=device)
        source = str(data.directory)
    write_text_atomic(out_dir / "config.yaml", OmegaConf.to_yaml(resolved_config(cfg)))
    loggers = inst.instantiate_loggers(cfg.get("logger"))
    context = {
        "title": f"{run.run_dir.name}, {split if not cfg.get('inputs') else 'raw logs'}",
        "checkpoint": str(run.ckpt_path),
        "data": source,
        "split": split if not cfg.get("inputs") else None,
        "rows": predictions.height if isinstance(predictions, pl.DataFrame) else None,  # else counted by the report
        "calibration_file": str(cal_file) if cal_file else None,
        "oov": info.to_dict() if info is not None else None,
    }
    metrics_cfg = run.model.hparams.get("metrics") or {}
    metrics = write_report(
        predictions, run.tasks, run.calibration, out_dir, cfg.get("report"),
        split=split if not cfg.get("inputs") else "logs",
        ece_bins=int(metrics_cfg.get("ece_bins", 15)), thresholds=metrics_cfg.get("thresholds"),
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
