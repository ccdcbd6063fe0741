"""A world fitted to a real log (:class:`FittedWorld`, a :class:`mtrank.data.world_api.RankingWorld`).

Its users, items, request contexts and side features are the real log's (:mod:`mtrank.worlds.catalogue`); its true
engagement probability of type t for a row is the frozen response model's calibrated probability
(:mod:`mtrank.worlds.response`) moved by an explicit position effect, an assumption (the real log has no
position)::

    logit p_t(row, pos) = logit p̂_t(row) − b_t · log1p(pos)        (b_t: world.position_bias)

so position 0 is the fitted probability. Labels are drawn independently per type given the row (their joint law
is not modelled; every figure of the online simulation uses marginals), each with exactly ``p_true_<task>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import polars as pl

from mtrank.worlds.catalogue import Catalogue
from mtrank.worlds.config import FittedWorldConfig

__all__ = ["Response", "FittedWorld", "position_effect", "unique_rows"]

_EPS = 1e-9


class Response(Protocol):
    tasks: tuple[str, ...]

    def probabilities(self, frame: pl.DataFrame) -> dict[str, np.ndarray]: ...


def unique_rows(frame: pl.DataFrame) -> tuple[pl.DataFrame, np.ndarray]:
    """The distinct rows of ``frame`` (first-seen order, nulls equal) and, per row of ``frame``, the index of its
    distinct row: ``unique[inverse]`` is ``frame``."""
    g = frame.with_row_index("__row").group_by(frame.columns, maintain_order=True).agg(pl.col("__row"))
    rows = g.get_column("__row")
    inverse = np.empty(frame.height, dtype=np.int64)
    inverse[rows.explode().to_numpy()] = np.repeat(np.arange(g.height), rows.list.len().to_numpy())
    return g.drop("__row"), inverse


def position_effect(p: np.ndarray, position: np.ndarray, bias: float) -> np.ndarray:
    """``sigmoid(logit p − bias · log1p(position))`` (``p`` clipped into ``[1e-9, 1 − 1e-9]`` first)."""
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    z = np.log(q) - np.log1p(-q) - float(bias) * np.log1p(np.asarray(position, dtype=np.float64))
    return 1.0 / (1.0 + np.exp(-z))


class FittedWorld:
    """Requests from the real log's contexts and catalogue, engagements from the fitted response model."""

    def __init__(
        self, cfg: FittedWorldConfig, catalogue: Catalogue, response: Response, info: Mapping[str, Any] | None = None
    ) -> None:
        missing = [t for t in cfg.tasks if t not in response.tasks]
        if missing:
            raise ValueError(f"the response model does not predict world.response.tasks {missing}")
        self.cfg = cfg
        self.catalogue = catalogue
        self.response = response
        self.info = dict(info or {})

    # ------------------------------------------------------------------ RankingWorld
    @property
    def tasks(self) -> tuple[str, ...]:
        return self.cfg.tasks

    @property
    def candidates_per_request(self) -> int:
        return self.cfg.candidates_per_request

    def describe(self) -> dict[str, Any]:
        return {"kind": "fitted", **self.cfg.to_dict(), **self.info}

    def sample_requests(self, n_requests: int, rng: np.random.Generator, start_request_id: int = 0) -> pl.DataFrame:
        """``n_requests * K`` rows: a real context each (user, time, context columns), K distinct real items in
        retrieval order (``position``, ``retrieval_score``) with their item columns. Request ids in time order."""
        R, K, cfg, cat = int(n_requests), self.cfg.candidates_per_request, self.cfg, self.catalogue
        if R < 0:
            raise ValueError("n_requests must be >= 0")
        ctx = rng.integers(0, cat.contexts.height, size=R)
        ctx = ctx[np.argsort(cat.contexts.get_column(cfg.time).to_numpy()[ctx], kind="stable")]
        cand, score = cat.retrieve(ctx, K, cfg.history_fraction, cfg.retrieval_noise, rng)
        rows = np.repeat(ctx, K)
        items = cand.reshape(-1)
        frame = pl.DataFrame(
            {
                "request_id": pl.Series(np.repeat(np.arange(R, dtype=np.int64) + int(start_request_id), K)),
                "position": pl.Series(np.tile(np.arange(K, dtype=np.int32), R), dtype=pl.Int32),
                "retrieval_score": pl.Series(score.reshape(-1), dtype=pl.Float64),
            }
        )
        return pl.concat([frame, cat.contexts[rows], cat.item_table[items]], how="horizontal")

    def true_probabilities(self, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        if "position" not in frame.columns:
            raise KeyError("frame lacks the column 'position' needed for the true probabilities")
        pos = frame.get_column("position").to_numpy()
        if pos.size and pos.min() < 0:
            raise ValueError("position must be >= 0")
        c = self.cfg
        # a request context drawn twice with the same item is the same row for the response model: scored once
        rows, inverse = unique_rows(frame.select(c.user, c.time, *c.context, c.item, *c.item_columns))
        base = {t: v[inverse] for t, v in self.response.probabilities(rows).items()}
        return {t: position_effect(base[t], pos, self.cfg.position_bias[t]) for t in self.tasks}

    def draw_labels(self, frame: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
        p = self.true_probabilities(frame)
        u = rng.random((len(self.tasks), frame.height))
        return frame.with_columns(
            [pl.Series(t, (u[i] < p[t]).astype(np.int8), dtype=pl.Int8) for i, t in enumerate(self.tasks)]
            + [pl.Series(f"p_true_{t}", p[t], dtype=pl.Float64) for t in self.tasks]
        )
