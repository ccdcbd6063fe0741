"""How simulated users respond to a ranking: the world's ground-truth engagement model, position bias included.

A policy orders each request's candidates by its ranking score; the candidate ranked ``r`` (0-based) is shown
at ``position = r``; only the top ``k`` slots are shown. Labels of the shown impressions are drawn from
:meth:`RankingWorld.draw_labels` (:mod:`mtrank.data.world_api`), which recomputes every true probability from the frame's ``position`` column — so
the position bias is the one of the policy's slots, not of the retrieval order the traffic came in.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from mtrank.data.world_api import RankingWorld
from mtrank.utility.objectives import rank_within_requests

__all__ = ["rerank", "respond"]


def rerank(frame: pl.DataFrame, scores: np.ndarray, k: int) -> pl.DataFrame:
    """The top ``k`` candidates of each request by decreasing ``scores``, with ``position`` set to their rank.

    The original (retrieval) position is kept as ``retrieval_position``. Ties keep the retrieval order.
    """
    if k < 1:
        raise ValueError(f"k (slots shown per request) must be >= 1, got {k}")
    s = np.asarray(scores, dtype=np.float64)
    if s.shape != (frame.height,):
        raise ValueError(f"one ranking score per row is needed: {frame.height} rows, scores of shape {s.shape}")
    if np.isnan(s).any():
        raise ValueError("ranking scores contain NaN")
    rank = rank_within_requests(frame.get_column("request_id").to_numpy(), s)
    out = frame.with_columns(
        pl.col("position").alias("retrieval_position"),
        pl.Series("position", rank, dtype=frame.schema["position"]),
    )
    return out.filter(pl.col("position") < k).sort("request_id", "position")


def respond(
    world: RankingWorld, frame: pl.DataFrame, scores: np.ndarray, k: int, rng: np.random.Generator
) -> pl.DataFrame:
    """Shown impressions (top ``k`` by ``scores``) with the users' drawn labels and ``p_true_<task>``."""
    return world.draw_labels(rerank(frame, scores, k), rng)
