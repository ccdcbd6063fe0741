"""Ranking policies of an A/B arm: a trained model plus utility weights (Eq. 4), or the model's own score.

* :class:`ModelScorer` scores raw traffic (the simulator's feature columns) with a trained run through
  :func:`mtrank.scoring.raw_logs.score_frame`, i.e. with the run's own preprocessing and calibration. At serving
  time the position of a candidate is not known yet (the ranking decides it), so the ``position`` feature
  is set to one value for every candidate (``score_position``, 0 by default: "how engaging would this be
  in the top slot"); ``None`` keeps the retrieval position.
* :class:`WorldScorer` scores with the world's true probabilities (same ``score_position`` convention): the
  oracle no trained model can beat, used to tell model quality from the choice of utility weights.
* :class:`Policy` turns the scores into one ranking score per candidate: ``u = Σ_t w_t p_t`` with the
  calibrated probabilities when it has ``weights``, otherwise the model's single raw score (the binary
  model, whose every task column carries the same engagement score).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from mtrank.data.world_api import RankingWorld
from mtrank.scoring.raw_logs import score_frame
from mtrank.scoring.run import LoadedRun, load_run
from mtrank.utility.objectives import utility_scores

__all__ = ["Scores", "ModelScorer", "WorldScorer", "Policy"]


@dataclass(frozen=True)
class Scores:
    """Per-row scores of one model: calibrated ``p`` and raw ``p_raw``, each ``{task: (n,) array}``."""

    p: dict[str, np.ndarray]
    p_raw: dict[str, np.ndarray]

    def take(self, rows: np.ndarray) -> Scores:
        return Scores({t: v[rows] for t, v in self.p.items()}, {t: v[rows] for t, v in self.p_raw.items()})


class ModelScorer:
    """A loaded run that scores raw traffic frames (rows keep their order)."""

    def __init__(self, run: LoadedRun | str | Path, score_position: int | None = 0, batch_size: int = 65_536) -> None:
        self.run = run if isinstance(run, LoadedRun) else load_run(run)
        self.score_position = score_position
        self.batch_size = int(batch_size)

    @property
    def tasks(self) -> list[str]:
        return self.run.tasks

    @property
    def objective(self) -> str:
        return self.run.model.objective.name

    def score(self, frame: pl.DataFrame) -> Scores:
        """Score every row of ``frame`` (the columns of :meth:`World.sample_requests`)."""
        if frame.height == 0:
            empty = {t: np.zeros(0) for t in self.tasks}
            return Scores(empty, dict(empty))
        inputs = frame
        if self.score_position is not None:
            inputs = frame.with_columns(
                pl.lit(int(self.score_position), dtype=frame.schema["position"]).alias("position")
            )
        out = score_frame(self.run, inputs, batch_size=self.batch_size)
        if not np.array_equal(out["request_id"].to_numpy(), frame["request_id"].to_numpy()):
            raise RuntimeError(f"scoring with {self.run.run_dir} changed the order of the traffic rows")
        return Scores(
            {t: out[f"p_{t}"].to_numpy().astype(np.float64) for t in self.tasks},
            {t: out[f"p_raw_{t}"].to_numpy().astype(np.float64) for t in self.tasks},
        )


class WorldScorer:
    """The oracle "model": every task's true probability from the world, at ``score_position``."""

    objective = "oracle"

    def __init__(self, world: RankingWorld, score_position: int | None = 0) -> None:
        self.world = world
        self.score_position = score_position
        self.tasks = list(world.tasks)

    def score(self, frame: pl.DataFrame) -> Scores:
        inputs = frame
        if self.score_position is not None:
            inputs = frame.with_columns(
                pl.lit(int(self.score_position), dtype=frame.schema["position"]).alias("position")
            )
        p = self.world.true_probabilities(inputs)
        return Scores({t: p[t] for t in self.tasks}, {t: p[t] for t in self.tasks})


@dataclass(frozen=True)
class Policy:
    """An arm's policy: which model scores the candidates and how its scores become one ranking score.

    ``weights=None`` ranks by the model's single raw score (its first task's column: for the binary model every
    column is the same engagement score); otherwise by the utility ``Σ_t w_t p_t`` of the calibrated
    probabilities.
    """

    name: str
    model: str
    weights: Mapping[str, float] | None = None
    label: str = ""
    meta: dict = field(default_factory=dict, compare=False)

    def ranking_scores(self, scores: Scores) -> np.ndarray:
        if self.weights is None:
            first = next(iter(scores.p_raw))
            return scores.p_raw[first]
        missing = [t for t in self.weights if t not in scores.p]
        if missing:
            raise KeyError(
                f"policy {self.name}: weights name task(s) {missing} that model '{self.model}' does not "
                f"predict; it predicts {list(scores.p)}"
            )
        tasks = list(self.weights)
        probs = np.column_stack([scores.p[t] for t in tasks])
        return utility_scores(probs, [float(self.weights[t]) for t in tasks])

    def describe(self) -> str:
        if self.label:
            return self.label
        if self.weights is None:
            return f"{self.model} score"
        return f"{self.model}, u = " + " + ".join(f"{float(w):.3g}·p_{t}" for t, w in self.weights.items())
