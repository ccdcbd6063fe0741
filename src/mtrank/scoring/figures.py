"""The figures of a scored split: per-head classification and calibration, ranking per request."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch

from mtrank.calibration.run_calibration import Calibration
from mtrank.data.spec import REQUEST_COL
from mtrank.metrics.calibration import RawScoreMetrics, TrueCalibration
from mtrank.metrics.heads import MultiHeadMetrics
from mtrank.metrics.ranking import ranking_metrics


class SplitFigures:
    """Every per-row figure of :func:`evaluate_frame` (all but the per-request ranking), from predictions frames
    given batch by batch to :meth:`update`: torchmetrics states and running sums, so the memory does not grow
    with the rows. ``thresholds``: as ``model.metrics.thresholds`` (None: exact AUROC / PR-AUC, which keep every
    row)."""

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        calibration: Calibration | None = None,
        split: str = "test",
        ece_bins: int = 15,
        thresholds: int | None = None,
    ) -> None:
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
        self.heads = MultiHeadMetrics(
            tasks,
            split,
            has_p_true=self.has_true,
            thresholds=self.thresholds,
            ece_bins=self.ece_bins,
            sync_on_compute=False,
        )
        kinds = {"": "p", "_raw": "raw"} | ({"_corrected": "corrected"} if self.corrected is not None else {})
        self.calib = {
            suffix: RawScoreMetrics(tasks, split, ece_bins=self.ece_bins, suffix=suffix, sync_on_compute=False)
            for suffix in kinds
            if suffix
        }
        self.true = {
            (suffix, t): (TrueCalibration(self.ece_bins), kind) for suffix, kind in kinds.items() for t in tasks
        }
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
        self.heads.update(
            torch.as_tensor(scores["p"], dtype=torch.float32),
            y,
            torch.as_tensor(pt, dtype=torch.float32) if pt is not None else None,
        )
        for suffix, m in self.calib.items():
            m.update(torch.as_tensor(scores[suffix.lstrip("_")], dtype=torch.float32), y)
        if pt is not None:
            for (_, t), (acc, kind) in self.true.items():
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
        for m in self.calib.values():
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
    """NDCG@k and MAP per task (:func:`mtrank.metrics.ranking.ranking_metrics`), with their ``oracle_`` twins
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
