"""The calibration config (``calibration``), as a typed object that checks itself (messages name the full key).

``method`` (one of :data:`METHODS`: the post-hoc calibrator), ``fit_split`` (the split it is fitted on) and
``downsampling`` (one of :data:`DOWNSAMPLING_MODES`: Eq. 3 per head, or the loss reweights the sampled rows).
:func:`check_reweight` holds the one rule that spans components: ``reweight`` needs an objective whose loss can
weight the sampled rows (the multi-task one). The calibrators (:func:`mtrank.calibration.calibrators.build_calibrator`),
the downsampling (:func:`mtrank.calibration.downsampling.downsampling_from_metadata`) and the module
(:class:`mtrank.training.module.RankingModule`) check their settings here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mtrank.errors import Problems
from mtrank.utils.config_fields import check_one_of

__all__ = ["METHODS", "DOWNSAMPLING_MODES", "SPLITS", "CalibrationConfig", "check_reweight"]

METHODS = ("none", "temperature", "platt", "isotonic")
DOWNSAMPLING_MODES = ("correct", "reweight")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CalibrationConfig:
    """``calibration``; other keys are left alone, as the jobs leave them."""

    method: Any = "none"
    fit_split: Any = "val"
    downsampling: Any = "correct"
    key: str = "calibration"

    def __post_init__(self) -> None:
        p = Problems()
        check_one_of(p, f"{self.key}.method", self.method, METHODS)
        check_one_of(p, f"{self.key}.fit_split", self.fit_split, SPLITS)
        check_one_of(p, f"{self.key}.downsampling", self.downsampling, DOWNSAMPLING_MODES)
        p.raise_if_any()

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any] | None, key: str = "calibration") -> CalibrationConfig:
        m = dict(m or {})
        return cls(
            method=m.get("method", "none"),
            fit_split=m.get("fit_split", "val"),
            downsampling=m.get("downsampling", "correct"),
            key=key,
        )


def check_reweight(mode: str, objective: str, supports_reweight: bool, key: str = "calibration.downsampling") -> None:
    """``calibration.downsampling = reweight`` needs an objective that weights the sampled rows in its loss
    (``supports_reweight``: the multi-task one); raises a :class:`~mtrank.errors.ConfigError` otherwise."""
    p = Problems()
    if mode == "reweight" and not supports_reweight:
        p.add(
            key,
            f"{key} = reweight needs loss.objective = multitask (the binary objective is corrected with Eq. 3); "
            f"allowed with loss.objective = {objective}: [correct]",
        )
    p.raise_if_any()
