"""The smallest interface of a world an online simulation or a log generator runs on (:class:`RankingWorld`).

Two worlds implement it: the built-in simulator's :class:`mtrank.data.world.World` and the world fitted to a real
log, :class:`mtrank.worlds.fitted.FittedWorld`. What the online code (:mod:`mtrank.online`) and the log writers
call, and nothing else:

* ``tasks``: the engagement types whose labels and ``p_true_<task>`` the world draws;
* ``candidates_per_request``: K, the candidates of a request (in retrieval order, ``position = 0..K-1``);
* ``sample_requests(n, rng, start_request_id)``: ``n * K`` candidate rows with every feature column a log row
  carries, request ids ``start_request_id ...``, no labels;
* ``true_probabilities(frame)``: ``{task: p}`` for every row, the position effect taken from the frame's
  ``position`` column (so a re-ranked frame gets the position bias of its new slots);
* ``draw_labels(frame, rng)``: ``frame`` plus one Int8 label column and one Float64 ``p_true_<task>`` column per
  task, the labels drawn with exactly those probabilities;
* ``describe()``: a JSON-able record of what the world is (written to ``results.json``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import polars as pl

__all__ = ["RankingWorld"]


@runtime_checkable
class RankingWorld(Protocol):
    @property
    def tasks(self) -> tuple[str, ...]: ...

    @property
    def candidates_per_request(self) -> int: ...

    def sample_requests(self, n_requests: int, rng: np.random.Generator, start_request_id: int = 0) -> pl.DataFrame: ...

    def true_probabilities(self, frame: pl.DataFrame) -> dict[str, np.ndarray]: ...

    def draw_labels(self, frame: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame: ...

    def describe(self) -> dict[str, Any]: ...
