"""The scoring jobs' configs (``conf/predict.yaml``, ``conf/eval.yaml``) and the evaluation report's (``report``),
as typed objects that check themselves (every message names the full key).

* :class:`ScoringConfig`: the run to load (``ckpt_path`` or ``run_dir``), the data to score (``inputs`` or
  ``processed_dir``), ``split``, ``batch_size``, ``device``, the predict job's tolerated fractions of unseen ids
  and out-of-range numbers, and the eval job's ``allow_in_sample``;
* :class:`ReportConfig` (``report``): ``bins``, ``scale``, ``n_bins``, ``min_bin_count``, ``ks``,
  ``ranking_chunk_rows``;
* :func:`check_in_sample`: the rule that spans the calibration and scoring configs (calibrators fitted on the
  split they are evaluated on), with :func:`in_sample_message`, which the eval job also words its refusal with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mtrank.errors import Problems
from mtrank.scoring.plots import BIN_STRATEGIES, REPORT_SCALES
from mtrank.utils.config_fields import check_one_of, is_number

__all__ = ["SPLITS", "FRACTIONS", "ScoringConfig", "ReportConfig", "check_in_sample", "in_sample_message"]

SPLITS = ("train", "val", "test")
FRACTIONS = ("warn_unseen_fraction", "max_unseen_fraction", "warn_out_of_range_fraction")  # predict only
_DEVICE = re.compile(r"^(cpu|auto|mps|cuda(:\d+)?)$")


def _whole_at_least(x: Any, low: int) -> bool:
    return is_number(x) and float(x).is_integer() and x >= low


@dataclass(frozen=True)
class ScoringConfig:
    """What predict and eval share, plus the keys of one of them (``fractions``: predict; ``allow_in_sample``:
    eval). Other keys are the jobs' own (paths, calibration, report)."""

    ckpt_path: Any = None
    run_dir: Any = None
    inputs: Any = None
    processed_dir: Any = None
    split: Any = "test"
    batch_size: Any = 1
    device: Any = "cpu"
    fractions: Mapping[str, Any] | None = None
    allow_in_sample: Any = False

    def __post_init__(self) -> None:
        p = Problems()
        if not self.ckpt_path and not self.run_dir:
            p.add(
                "ckpt_path",
                "ckpt_path is not set: give ckpt_path=<checkpoint file or training run folder> (or run_dir=<run folder>)",
            )
        elif self.ckpt_path and self.run_dir:
            p.add(
                "ckpt_path", f"ckpt_path = {self.ckpt_path} and run_dir = {self.run_dir} are both set: give one of them"
            )
        if self.inputs and self.processed_dir:
            p.add("inputs", "inputs (raw logs) and processed_dir (processed data) are both set: give one of them")
        check_one_of(p, "split", self.split, SPLITS)
        if not _whole_at_least(self.batch_size, 1):
            p.add("batch_size", f"batch_size = {self.batch_size!r}: expected an integer ≥ 1")
        if self.device is not None and not _DEVICE.match(str(self.device)):
            p.add("device", f"device = {self.device!r}: expected one of [cpu, cuda, cuda:<index>, mps, auto]")
        for key, v in (self.fractions or {}).items():
            if v is not None and (not is_number(v) or not 0.0 <= float(v) <= 1.0):
                p.add(key, f"{key} = {v!r}: expected a fraction in [0, 1] of the scored rows (or null)")
        if self.allow_in_sample not in (True, False):
            p.add("allow_in_sample", f"allow_in_sample = {self.allow_in_sample!r}: expected true or false")
        p.raise_if_any()

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], job: str) -> ScoringConfig:
        """``job``: ``predict`` (reads the fractions) or ``eval`` (reads ``allow_in_sample``)."""
        m = dict(m)
        return cls(
            ckpt_path=m.get("ckpt_path"),
            run_dir=m.get("run_dir"),
            inputs=m.get("inputs"),
            processed_dir=m.get("processed_dir"),
            split=m.get("split", "test"),
            batch_size=m.get("batch_size", 1),
            device=m.get("device", "cpu"),
            fractions={k: m.get(k) for k in FRACTIONS} if job == "predict" else None,
            allow_in_sample=m.get("allow_in_sample", False) if job == "eval" else False,
        )


@dataclass(frozen=True)
class ReportConfig:
    """``report``: the evaluation report's binning, axes, NDCG cut-offs and chunking; other keys (``enabled``)
    are the jobs'."""

    bins: Any = "quantile"
    scale: Any = "linear"
    n_bins: Any = None
    min_bin_count: Any = None
    ranking_chunk_rows: Any = None
    ks: Any = None
    key: str = "report"

    def __post_init__(self) -> None:
        p, key = Problems(), self.key
        check_one_of(p, f"{key}.bins", self.bins, BIN_STRATEGIES)
        check_one_of(p, f"{key}.scale", self.scale, REPORT_SCALES)
        for k, low in (("n_bins", 1), ("min_bin_count", 0), ("ranking_chunk_rows", 1)):
            v = getattr(self, k)
            if v is not None and not _whole_at_least(v, low):
                p.add(f"{key}.{k}", f"{key}.{k} = {v!r}: expected an integer ≥ {low}")
        ks = self.ks or []
        bad = [k for k in (ks if isinstance(ks, list) else [ks]) if not _whole_at_least(k, 1)]
        if bad or not isinstance(ks, list):
            p.add(f"{key}.ks", f"{key}.ks = {ks!r}: expected a list of integers ≥ 1 (NDCG@k cut-offs), e.g. [5, 10]")
        p.raise_if_any()

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], key: str = "report") -> ReportConfig:
        m = dict(m)
        names = ("n_bins", "min_bin_count", "ranking_chunk_rows", "ks")
        return cls(
            bins=m.get("bins", "quantile"), scale=m.get("scale", "linear"), key=key, **{k: m.get(k) for k in names}
        )


def in_sample_message(fit_split: str, split: str) -> str:
    return (
        f"calibration.fit_split = {fit_split} and split = {split}: the calibrators would be fitted on the split "
        "they are evaluated on, an in-sample evaluation (ECE near 0, AUROC inflated by isotonic ties); fit on "
        f"another split (e.g. calibration.fit_split=val split=test), or set allow_in_sample=true to evaluate "
        "anyway with the report labelled IN-SAMPLE"
    )


def check_in_sample(scoring: ScoringConfig, method: Any, fit_split: Any, p: Problems) -> None:
    """An evaluation whose calibrators (``calibration.method``, fitted on ``calibration.fit_split``) are fitted on
    the evaluated split is refused unless ``allow_in_sample``; raw logs (``inputs``) are never a split."""
    if method in (None, "none") or scoring.inputs:
        return
    if fit_split == scoring.split and scoring.allow_in_sample is False:
        p.add("calibration.fit_split", in_sample_message(str(fit_split), str(scoring.split)))
