"""A run's calibration: each head's Eq. 3 correction and post-hoc calibrator, saved as ``calibration.json``."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mtrank.calibration.calibrators import (
    BinnedLabels,
    Calibrator,
    IdentityCalibrator,
    build_calibrator,
    calibrator_from_dict,
)
from mtrank.calibration.config import DOWNSAMPLING_MODES
from mtrank.calibration.downsampling import BETA_RULES, check_beta, correct
from mtrank.utils.io import write_text_atomic

log = logging.getLogger(__name__)


CALIBRATION_FILE = "calibration.json"


_FORMAT_VERSION = 1


@dataclass
class Calibration:
    """Everything that turns a model's raw head scores into the probabilities the later stages use.

    ``betas``: the keep rate per task used by Eq. 3 (β_t for the multi-task heads, β for every task of the
    binary objective); ``calibrators``: one post-hoc calibrator per task, applied after the correction.
    """

    tasks: list[str]
    betas: dict[str, float]
    calibrators: dict[str, Calibrator] = field(default_factory=dict)
    method: str = "none"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tasks = [str(t) for t in self.tasks]
        missing = [t for t in self.tasks if t not in self.betas]
        if missing:
            raise ValueError(f"calibration has no β for task(s) {missing}")
        check_beta([self.betas[t] for t in self.tasks])
        for t in self.tasks:
            self.calibrators.setdefault(t, IdentityCalibrator())

    @property
    def has_calibrators(self) -> bool:
        return any(not isinstance(c, IdentityCalibrator) for c in self.calibrators.values())

    def beta_vector(self, tasks: Sequence[str] | None = None) -> list[float]:
        return [float(self.betas[t]) for t in (tasks or self.tasks)]

    def correct(self, p_raw, tasks: Sequence[str] | None = None):
        """Eq. 3 per column of a ``[N, T]`` array or tensor (columns in ``tasks`` order)."""
        return correct(p_raw, np.asarray(self.beta_vector(tasks)))

    def calibrate(self, p_corrected, tasks: Sequence[str] | None = None):
        """The post-hoc calibrators per column of a corrected ``[N, T]`` array or tensor."""
        tasks = list(tasks or self.tasks)
        if not self.has_calibrators:
            return p_corrected
        cols = [self.calibrators[t].apply(p_corrected[:, j]) for j, t in enumerate(tasks)]
        return torch.stack(cols, dim=1) if isinstance(p_corrected, Tensor) else np.stack(cols, axis=1)

    def apply(self, p_raw, tasks: Sequence[str] | None = None):
        """Raw scores ``[N, T]`` → corrected and calibrated probabilities ``[N, T]``."""
        return self.calibrate(self.correct(p_raw, tasks), tasks)

    def fit(self, p_corrected, labels, method: str) -> Calibration:
        """Fit one ``method`` calibrator per task on corrected probabilities ``[N, T]`` and 0/1 labels ``[N, T]``."""
        p = np.asarray(p_corrected, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64)
        if p.shape != y.shape or p.ndim != 2 or p.shape[1] != len(self.tasks):
            raise ValueError(
                f"calibration fit: probabilities {p.shape} and labels {y.shape} must both be [N, {len(self.tasks)}]"
            )
        return self._fit_each(
            method,
            {
                t: (p.shape[0], float(y[:, j].sum()), lambda c, j=j: c.fit(p[:, j], y[:, j]))
                for j, t in enumerate(self.tasks)
            },
        )

    def fit_binned(self, binned: Mapping[str, BinnedLabels], method: str) -> Calibration:
        """Fit one ``method`` calibrator per task on its :class:`BinnedLabels` (corrected probabilities and labels
        summed on the fitting grid, e.g. by :func:`mtrank.scoring.score.fit_calibration`)."""
        missing = [t for t in self.tasks if t not in binned]
        if missing:
            raise ValueError(f"calibration fit: no binned scores for task(s) {missing}")

        def fit(c: Calibrator, b: BinnedLabels) -> Calibrator:
            p, y, w = b.points()
            return c.fit(p, y, weight=w)

        return self._fit_each(
            method, {t: (binned[t].rows, binned[t].positives, lambda c, b=binned[t]: fit(c, b)) for t in self.tasks}
        )

    def _fit_each(self, method: str, per_task: Mapping[str, tuple[int, float, Any]]) -> Calibration:
        """``per_task``: task → (rows, positives, fit(calibrator) → calibrator)."""
        self.method = method or "none"
        build_calibrator(self.method)  # an unknown method fails here, before any fitting
        fitted = {}
        for t in self.tasks:
            rows, positives, fit = per_task[t]
            if self.method != "none" and (rows == 0 or positives in (0, rows)):
                log.warning(
                    "calibration: task '%s' has %s in the fitting rows; left uncalibrated (identity)",
                    t,
                    "no rows" if rows == 0 else "a single class",
                )
                fitted[t] = IdentityCalibrator()
                continue
            fitted[t] = fit(build_calibrator(self.method))
        self.calibrators = fitted
        return self

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": _FORMAT_VERSION,
            "tasks": list(self.tasks),
            "method": self.method,
            "betas": {t: float(self.betas[t]) for t in self.tasks},
            "calibrators": {t: self.calibrators[t].to_dict() for t in self.tasks},
            "info": self.info,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        if d.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"calibration format_version {d.get('format_version')}; this mtrank reads {_FORMAT_VERSION}"
            )
        return cls(
            tasks=list(d["tasks"]),
            betas={k: float(v) for k, v in d["betas"].items()},
            calibrators={t: calibrator_from_dict(c) for t, c in (d.get("calibrators") or {}).items()},
            method=str(d.get("method", "none")),
            info=dict(d.get("info") or {}),
        )

    def save(self, path: Path | str) -> Path:
        """Write the JSON atomically (temp file + rename) to ``path`` (a ``.json`` file, or a folder that gets
        ``calibration.json``); returns the file's path."""
        path = Path(path)
        if path.suffix != ".json":
            path = path / CALIBRATION_FILE
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: Path | str) -> Calibration:
        path = Path(path)
        if path.suffix != ".json":
            path = path / CALIBRATION_FILE
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"no calibration file at {path}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"calibration file {path} is not valid JSON: {exc}") from None
        try:
            return cls.from_dict(d)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"calibration file {path} is malformed: {exc}") from None

    @classmethod
    def from_downsampling(cls, downsampling: Mapping[str, Any], tasks: Sequence[str], objective: Any) -> Calibration:
        """The correction-only calibration of a model: the β per task of its objective (``loss.objective``, a name
        or the objective itself, :class:`mtrank.training.objectives.TaskObjective`: β_t per task for multitask, β for
        all for binary, see :data:`~mtrank.calibration.downsampling.BETA_RULES`); 1 for all when the loss reweighted
        the sampled rows (``mode: reweight``)."""
        name = objective if isinstance(objective, str) else objective.name
        if name not in BETA_RULES:
            raise ValueError(f"objective '{name}': expected one of {sorted(BETA_RULES)}")
        beta = float(downsampling.get("beta", 1.0))
        mode = downsampling.get("mode", "correct")
        if mode not in DOWNSAMPLING_MODES:
            raise ValueError(f"downsampling mode '{mode}': expected one of {list(DOWNSAMPLING_MODES)}")
        eff = downsampling.get("effective_beta") or {}
        if mode == "reweight":
            betas = {t: 1.0 for t in tasks}
        else:
            betas = BETA_RULES[name](beta, eff, tasks)
        return cls(tasks=list(tasks), betas=betas, info={"beta": beta, "objective": name, "mode": mode})
