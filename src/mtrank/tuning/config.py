"""The utility-tuning job's own config (``conf/tune_utility.yaml``: ``mode``, ``metric``, ``n_trials``,
``generation``, the predictions' column prefixes), as a typed object that checks itself; every message names the
full key. The utility itself is :class:`mtrank.utility.config.UtilityConfig`; Ax's generation settings are
:class:`mtrank.tuning.generation.GenerationConfig`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mtrank.errors import Problems
from mtrank.tuning.generation import GenerationConfig
from mtrank.utility.objectives import metric_k
from mtrank.utils.config_fields import check_one_of, is_number

__all__ = ["MODES", "TuneConfig"]

MODES = ("tune", "evaluate")  # tune: the whole Ax loop in this process | evaluate: the f_t of utility.weights


@dataclass(frozen=True)
class TuneConfig:
    mode: Any = "tune"
    metric: Any = "pr_auc"
    n_trials: Any = 0
    generation: Mapping[str, Any] | None = None
    prob_prefix: str = "p_"
    label_prefix: str = "label_"

    def __post_init__(self) -> None:
        p = Problems()
        check_one_of(p, "mode", self.mode, MODES)
        try:
            metric_k(str(self.metric))
        except ValueError:
            p.add("metric", f"metric = {self.metric!r}: expected pr_auc or ndcg@<k> with k ≥ 1 (e.g. ndcg@10)")
        n = self.n_trials
        if not is_number(n) or not float(n).is_integer() or n < 0:
            p.add("n_trials", f"n_trials = {n!r}: expected an integer ≥ 0")
        if isinstance(self.generation, Mapping):
            try:
                GenerationConfig.from_mapping(self.generation)
            except (ValueError, TypeError) as exc:
                p.add("generation", f"generation: {exc}")
        p.raise_if_any()

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any]) -> TuneConfig:
        m = dict(m)
        return cls(
            mode=m.get("mode", "tune"),
            metric=m.get("metric", "pr_auc"),
            n_trials=m.get("n_trials", 0),
            generation=m.get("generation"),
            prob_prefix=str(m.get("prob_prefix", "p_")),
            label_prefix=str(m.get("label_prefix", "label_")),
        )
