"""The simulated world: users, query pins, products, and the true engagement probabilities of each type."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from mtrank.data.simulator_config import (
    EPOCH_START,
    SECONDS_PER_DAY,
    TASK_WEIGHTS,
    TASKS,
    SimulatorConfig,
)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _noise(rng: np.random.Generator, n: int, d: int, scale: float) -> np.ndarray:
    return rng.standard_normal((n, d)) * (scale / np.sqrt(d))


def _distinct_sorted(rng: np.random.Generator, n_rows: int, k: int, high: np.ndarray) -> np.ndarray:
    """Per row, ``k`` distinct integers in ``[0, high_row)`` (needs ``high_row >= k``).

    Draws ``k`` i.i.d. values in ``[0, high - k + 1)``, sorts them and adds ``0..k-1``: a vectorised
    way to get distinct values (close to, not exactly, a uniform k-subset).
    """
    if k == 0:
        return np.zeros((n_rows, 0), dtype=np.int64)
    span = (np.asarray(high, dtype=np.int64) - k + 1).reshape(-1, 1)
    r = np.floor(rng.random((n_rows, k)) * span).astype(np.int64)
    r.sort(axis=1)
    return r + np.arange(k, dtype=np.int64)


@dataclass
class World:
    """All entity tables of the simulated world (deterministic for ``cfg.seed``); a
    :class:`mtrank.data.world_api.RankingWorld`."""

    cfg: SimulatorConfig
    category_centres: np.ndarray  # [C, d]
    category_log_price: np.ndarray  # [C]
    segment_taste: np.ndarray  # [S, d]
    user_segment: np.ndarray  # [U] int
    user_latent: np.ndarray  # [U, d]
    user_activity_level: np.ndarray  # [U] latent activity (mean 1)
    user_activity: np.ndarray  # [U] observed count
    query_category: np.ndarray  # [Q]
    query_latent: np.ndarray  # [Q, d]
    query_weight: np.ndarray  # [Q] request probability
    product_category: np.ndarray  # [P]
    product_latent: np.ndarray  # [P, d]
    product_quality: np.ndarray  # [P]
    product_price: np.ndarray  # [P]
    product_popularity: np.ndarray  # [P] observed count
    products_by_category: np.ndarray  # [P] product ids sorted by category
    category_offsets: np.ndarray  # [C + 1] block boundaries into products_by_category

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, cfg: SimulatorConfig) -> World:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(cfg.seed), 0])))
        C, S, d = cfg.n_categories, cfg.n_segments, cfg.latent_dim
        U, Q, P = cfg.n_users, cfg.n_queries, cfg.n_products
        sig = cfg.id_noise

        centres = rng.standard_normal((C, d))
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        cat_log_price = rng.normal(3.0, 0.6, size=C)

        n_fav = min(3, C)
        fav = np.argsort(rng.random((S, C)), axis=1)[:, :n_fav]
        w = rng.dirichlet(np.ones(n_fav), size=S)
        taste = np.einsum("sk,skd->sd", w, centres[fav])
        taste = 1.6 * taste / np.linalg.norm(taste, axis=1, keepdims=True)

        user_segment = rng.integers(0, S, size=U)
        user_latent = taste[user_segment] + _noise(rng, U, d, sig)
        act = rng.lognormal(0.0, 0.8, size=U)
        act /= act.mean()
        user_activity = rng.poisson(8.0 * act).astype(np.int64)

        query_category = rng.integers(0, C, size=Q)
        query_latent = centres[query_category] + _noise(rng, Q, d, sig)
        qw = rng.lognormal(0.0, 1.0, size=Q)
        query_weight = qw / qw.sum()

        product_category = rng.permutation(np.arange(P) % C)
        product_latent = centres[product_category] + _noise(rng, P, d, sig)
        quality = rng.standard_normal(P)
        price = np.round(np.exp(cat_log_price[product_category] + 0.5 * rng.standard_normal(P)), 2)
        price = np.maximum(price, 0.01)
        popularity = rng.poisson(np.exp(3.0 + 0.8 * quality)).astype(np.int64)

        by_cat = np.argsort(product_category, kind="stable").astype(np.int64)
        offsets = np.zeros(C + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(np.bincount(product_category, minlength=C))

        return cls(
            cfg=cfg,
            category_centres=centres,
            category_log_price=cat_log_price,
            segment_taste=taste,
            user_segment=user_segment.astype(np.int64),
            user_latent=user_latent,
            user_activity_level=act,
            user_activity=user_activity,
            query_category=query_category.astype(np.int64),
            query_latent=query_latent,
            query_weight=query_weight,
            product_category=product_category.astype(np.int64),
            product_latent=product_latent,
            product_quality=quality,
            product_price=price,
            product_popularity=popularity,
            products_by_category=by_cat,
            category_offsets=offsets,
        )

    # ------------------------------------------------------------------ the RankingWorld interface
    @property
    def tasks(self) -> tuple[str, ...]:
        return TASKS

    @property
    def candidates_per_request(self) -> int:
        return self.cfg.candidates_per_request

    def describe(self) -> dict:
        """The simulator config (what :class:`mtrank.data.world_api.RankingWorld` asks for ``results.json``)."""
        return self.cfg.to_dict()

    # ------------------------------------------------------------------ requests
    def sample_requests(
        self,
        n_requests: int,
        rng: np.random.Generator,
        start_request_id: int = 0,
        time_range: tuple[int, int] | None = None,
    ) -> pl.DataFrame:
        """``n_requests * K`` candidate rows with every observed feature column (no labels).

        Columns: :data:`FEATURE_COLUMNS`. Timestamps are uniform over ``time_range`` (seconds, ``[lo, hi)``;
        default: the config's ``n_days``);
        request ids ``start_request_id ...`` are assigned in time order; rows are sorted by
        (timestamp, request_id, position) and ``position`` ranks by decreasing ``retrieval_score``.
        """
        cfg = self.cfg
        R, K = int(n_requests), cfg.candidates_per_request
        if R < 0:
            raise ValueError("n_requests must be >= 0")
        n_in = cfg.n_in_category
        n_out = K - n_in

        users = rng.choice(cfg.n_users, size=R, p=self.user_activity_level / self.user_activity_level.sum())
        queries = rng.choice(cfg.n_queries, size=R, p=self.query_weight)
        qcat = self.query_category[queries]
        lo = self.category_offsets[qcat]
        size = self.category_offsets[qcat + 1] - lo

        inside = _distinct_sorted(rng, R, n_in, size) + lo[:, None]
        outside = _distinct_sorted(rng, R, n_out, cfg.n_products - size)
        outside = outside + np.where(outside >= lo[:, None], size[:, None], 0)  # skip the query's block
        cand = self.products_by_category[np.concatenate([inside, outside], axis=1)]  # [R, K]

        q = self.query_latent[queries]  # [R, d]
        rel = np.einsum("rd,rkd->rk", q, self.product_latent[cand])
        score = rel + cfg.retrieval_noise * rng.standard_normal((R, K))
        order = np.argsort(-score, axis=1, kind="stable")
        cand = np.take_along_axis(cand, order, axis=1)
        score = np.take_along_axis(score, order, axis=1)

        lo, hi = time_range if time_range is not None else (EPOCH_START, EPOCH_START + cfg.n_days * SECONDS_PER_DAY)
        ts = np.sort(rng.integers(lo, hi, size=R))
        req_ids = np.arange(start_request_id, start_request_id + R, dtype=np.int64)

        users_r = np.repeat(users, K)
        queries_r = np.repeat(queries, K)
        cand_f = cand.reshape(-1)
        return pl.DataFrame(
            {
                "request_id": pl.Series(np.repeat(req_ids, K), dtype=pl.Int64),
                "timestamp": pl.Series(np.repeat(ts, K).astype(np.int64), dtype=pl.Int64),
                "user_id": pl.Series(users_r.astype(np.int64), dtype=pl.Int64),
                "query_id": pl.Series(queries_r.astype(np.int64), dtype=pl.Int64),
                "candidate_id": pl.Series(cand_f, dtype=pl.Int64),
                "position": pl.Series(np.tile(np.arange(K, dtype=np.int32), R), dtype=pl.Int32),
                "user_segment": pl.Series(self.user_segment[users_r].astype(np.int32), dtype=pl.Int32),
                "user_activity": pl.Series(self.user_activity[users_r], dtype=pl.Int64),
                "query_category": pl.Series(self.query_category[queries_r].astype(np.int32), dtype=pl.Int32),
                "candidate_category": pl.Series(self.product_category[cand_f].astype(np.int32), dtype=pl.Int32),
                "price": pl.Series(self.product_price[cand_f], dtype=pl.Float64),
                "candidate_popularity": pl.Series(self.product_popularity[cand_f], dtype=pl.Int64),
                "retrieval_score": pl.Series(score.reshape(-1), dtype=pl.Float64),
            }
        )

    # ------------------------------------------------------------------ engagement model
    def _ids(self, frame: pl.DataFrame) -> tuple[np.ndarray, ...]:
        missing = [c for c in ("user_id", "query_id", "candidate_id", "position") if c not in frame.columns]
        if missing:
            raise KeyError(f"frame lacks column(s) {missing} needed for the true probabilities")
        out = []
        for col, n in (
            ("user_id", self.cfg.n_users),
            ("query_id", self.cfg.n_queries),
            ("candidate_id", self.cfg.n_products),
        ):
            ids = frame.get_column(col).to_numpy().astype(np.int64, copy=False)
            if ids.size and (ids.min() < 0 or ids.max() >= n):
                raise ValueError(f"{col} out of range [0, {n}) for this world")
            out.append(ids)
        pos = frame.get_column("position").to_numpy().astype(np.float64)
        if pos.size and pos.min() < 0:
            raise ValueError("position must be >= 0")
        out.append(pos)
        return tuple(out)

    def conditional_probabilities(self, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        """The model's per-task ``sigma(z_t)`` (hide; closeup/save/click given not hidden;
        long_click/checkout given click)."""
        users, queries, cands, pos = self._ids(frame)
        v = self.product_latent[cands]
        aff = np.einsum("nd,nd->n", self.user_latent[users], v)
        rel = np.einsum("nd,nd->n", self.query_latent[queries], v)
        feats = (
            aff,
            rel,
            -self.cfg.position_bias * np.log1p(pos),
            np.log(self.product_price[cands]) - 3.0,
            self.product_quality[cands],
            np.log(self.user_activity_level[users]),
        )
        out = {}
        for t in TASKS:
            z = np.full(len(aff), self.cfg.base_logits[t])
            for w, x in zip(TASK_WEIGHTS[t], feats):
                if w:
                    z += w * x
            out[t] = _sigmoid(z)
        return out

    def true_probabilities(self, frame: pl.DataFrame) -> dict[str, np.ndarray]:
        """Exact marginal probability of each task's label for every row of ``frame``.

        Needs ``user_id``, ``query_id``, ``candidate_id`` and ``position``; the position effect is
        recomputed from the frame's ``position`` column (so re-ranked frames are handled).
        """
        return _marginals(self.conditional_probabilities(frame))

    def draw_labels(self, frame: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
        """``frame`` plus Int8 label columns (one per task) and Float64 ``p_true_<task>`` columns."""
        c = self.conditional_probabilities(frame)
        n = frame.height
        u = rng.random((6, n))
        hide = u[0] < c["hide"]
        shown = ~hide
        closeup = shown & (u[1] < c["closeup"])
        save = shown & (u[2] < c["save"])
        click = shown & (u[3] < c["click"])
        long_click = click & (u[4] < c["long_click"])
        checkout = click & (u[5] < c["checkout"])
        labels = {
            "save": save,
            "click": click,
            "long_click": long_click,
            "closeup": closeup,
            "hide": hide,
            "checkout": checkout,
        }
        p = _marginals(c)
        return frame.with_columns(
            [pl.Series(t, labels[t].astype(np.int8), dtype=pl.Int8) for t in TASKS]
            + [pl.Series(f"p_true_{t}", p[t], dtype=pl.Float64) for t in TASKS]
        )


def _marginals(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The exact marginal probability of each task's label from the model's conditional probabilities."""
    not_hidden = 1.0 - c["hide"]
    p_click = not_hidden * c["click"]
    return {
        "save": not_hidden * c["save"],
        "click": p_click,
        "long_click": p_click * c["long_click"],
        "closeup": not_hidden * c["closeup"],
        "hide": c["hide"],
        "checkout": p_click * c["checkout"],
    }
