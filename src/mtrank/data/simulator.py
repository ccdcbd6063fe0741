"""A synthetic engagement-log world whose engagement model is KNOWN.

The simulator stands in for Pinterest's "Related Products" logs: a user looks at a query pin, the
candidate generator retrieves ``K`` products, they are shown in retrieval order, and the user
engages with some of them. Because the true engagement probabilities are known, every impression
carries ``p_true_<task>`` and models can be compared against the oracle (e.g. oracle AUROC, or the
engagement a re-ranking policy would get in a simulated online A/B test, via
:meth:`World.true_probabilities`).

The world (all latent vectors live in ``R^d``, ``d = latent_dim``; ``N_d(0, s)`` below means a
vector with i.i.d. ``N(0, s^2/d)`` entries, so its norm is about ``s``)
-----------------------------------------------------------------------------------------------------
* **Categories** ``c = 0..C-1``: a unit-norm centre ``m_c``; a log-price level ``mu_c ~ N(3, 0.6)``.
* **Segments** ``s = 0..S-1``: a taste vector ``t_s = 1.6 * normalise(sum_k w_k m_{f_k})`` pulled
  towards 3 favourite categories ``f_k`` with Dirichlet(1) weights ``w``.
* **Users**: a segment ``s_u`` (uniform), latent taste ``u = t_{s_u} + N_d(0, id_noise)``, an activity
  level ``a_u ~ LogNormal(0, 0.8)`` (normalised to mean 1); observed ``user_activity ~ Poisson(8 a_u)``.
* **Query pins**: a ``query_category`` (uniform), latent ``q = m_cat + N_d(0, id_noise)``; a popularity
  weight ``~ LogNormal(0, 1)`` used when requests pick a query.
* **Products**: a ``candidate_category`` (balanced), latent ``v = m_cat + N_d(0, id_noise)``, a
  latent quality ``g ~ N(0, 1)``, ``price = exp(mu_cat + 0.5 eps)`` (``eps ~ N(0,1)``, rounded to
  cents); observed ``candidate_popularity ~ Poisson(exp(3 + 0.8 g))``.

Requests
--------
A request picks a user (probability proportional to ``a_u``) and a query pin (probability
proportional to its popularity weight). ``K = candidates_per_request`` candidates are retrieved:
``round(in_category_fraction * K)`` distinct products from the query's category, the rest distinct
products from the other categories. The candidate generator's observed score is
``retrieval_score = q . v + N(0, retrieval_noise)``; candidates are shown in decreasing
``retrieval_score`` order, ``position = 0..K-1``. Requests are spread uniformly over ``n_days`` days
starting 2026-01-01T00:00:00Z (``timestamp`` = int64 seconds since the epoch); request ids are
assigned in time order and rows are sorted by (timestamp, request_id, position).

Engagement model (the truth)
----------------------------
For an impression of product ``v`` to user ``u`` under query ``q`` at position ``p`` let::

    aff  = u . v                      (user x candidate affinity)
    rel  = q . v                      (query x candidate relevance)
    pos  = position_bias * log1p(p)   (position-bias term, grows with p)
    lp   = log(price) - 3             (centred log price)
    g    = product quality
    act  = log(a_u)                   (user activity level)

and, for each task ``t``, ``z_t = base_logits[t] + W[t] . (aff, rel, -pos, lp, g, act)`` with the
weights in :data:`TASK_WEIGHTS`. With ``sigma`` the logistic function::

    p_hide              = sigma(z_hide)            (higher for low affinity / low relevance)
    p_closeup | ~hide   = sigma(z_closeup)
    p_save    | ~hide   = sigma(z_save)
    p_click   | ~hide   = sigma(z_click)
    p_long    | click   = sigma(z_long_click)
    p_checkout| click   = sigma(z_checkout)

Labels are drawn as: ``hide ~ Bernoulli(p_hide)``; if hidden nothing else happens; otherwise
closeup, save and click are drawn independently (so types co-occur); ``long_click = click AND
Bernoulli(p_long|click)``, ``checkout = click AND Bernoulli(p_checkout|click)``. The
``p_true_<task>`` columns are the exact marginals of the labels as drawn::

    p_true_hide       = p_hide
    p_true_closeup    = (1 - p_hide) p_closeup
    p_true_save       = (1 - p_hide) p_save
    p_true_click      = (1 - p_hide) p_click
    p_true_long_click = (1 - p_hide) p_click p_long
    p_true_checkout   = (1 - p_hide) p_click p_checkout

The truth depends only on (user, query, candidate, position); the retrieval noise does not enter it.
Most of the signal is reachable from observed features (segment x category, query category x
candidate category, retrieval_score, position, price, popularity, user_activity); the per-id
latent noise (``id_noise``) is kept modest. With the defaults the positive rates are roughly
click 3.5%, closeup 4.5%, save 1.8%, long_click 1.05%, checkout 0.23%, hide 0.45%
(oracle AUROCs about 0.76-0.85).

Public API: :data:`TASKS`, :class:`SimulatorConfig`, :class:`World`, :func:`simulate`,
:func:`write_logs`, :func:`generate_logs`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import polars as pl

__all__ = [
    "TASKS",
    "TASK_WEIGHTS",
    "DEFAULT_BASE_LOGITS",
    "SimulatorConfig",
    "World",
    "simulate",
    "write_logs",
    "generate_logs",
]

TASKS: tuple[str, ...] = ("save", "click", "long_click", "closeup", "hide", "checkout")

# 2026-01-01T00:00:00Z in seconds since the epoch.
EPOCH_START = 1_767_225_600
SECONDS_PER_DAY = 86_400

FEATURE_COLUMNS = (
    "request_id",
    "timestamp",
    "user_id",
    "query_id",
    "candidate_id",
    "position",
    "user_segment",
    "user_activity",
    "query_category",
    "candidate_category",
    "price",
    "candidate_popularity",
    "retrieval_score",
)

# Bump when the engagement model or the world's construction changes: cached logs are keyed by it.
SIMULATOR_VERSION = 2

CONFIG_FILE = "simulator_config.json"
FILE_PATTERN = "impressions-{:05d}.parquet"

# Weights on (aff, rel, -pos, lp, g, act) per task; long_click and checkout are conditional on click.
TASK_WEIGHTS: dict[str, tuple[float, float, float, float, float, float]] = {
    #              aff   rel   -pos   lp    g     act
    "hide":       (-0.6, -1.5, 0.25, 0.0, -0.8, 0.0),
    "closeup":    (0.7, 1.5, 0.45, 0.15, 0.45, 0.1),
    "save":       (1.6, 0.7, 0.35, 0.1, 0.35, 0.15),
    "click":      (1.1, 1.6, 0.55, -0.2, 0.3, 0.2),
    "long_click": (0.5, 0.2, 0.0, 0.0, 0.4, 0.0),
    "checkout":   (0.5, 0.2, 0.0, -0.4, 0.2, 0.2),
}

# Intercepts tuned so the default world has "real feed" positive rates (see module docstring).
DEFAULT_BASE_LOGITS: dict[str, float] = {
    "hide": -4.4,
    "closeup": -3.8,
    "save": -4.6,
    "click": -4.15,
    "long_click": -1.45,
    "checkout": -3.4,
}


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything that determines a simulated log (same config -> byte-identical data)."""

    seed: int = 0
    n_impressions: int = 1_000_000
    candidates_per_request: int = 20
    n_users: int = 20_000
    n_queries: int = 5_000
    n_products: int = 20_000
    n_categories: int = 24
    n_segments: int = 12
    latent_dim: int = 8
    n_days: int = 14
    n_files: int = 8
    # --- engagement-model knobs ---
    base_logits: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_BASE_LOGITS))
    position_bias: float = 1.0  # multiplier on every task's position-bias weight
    id_noise: float = 0.2  # norm of the idiosyncratic per-user/query/product latent noise
    retrieval_noise: float = 0.1  # std of the candidate generator's score noise
    in_category_fraction: float = 0.75  # share of candidates retrieved from the query's category

    def __post_init__(self) -> None:
        bl = dict(DEFAULT_BASE_LOGITS)
        given = dict(self.base_logits)
        unknown = sorted(set(given) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown} in base_logits; allowed: {list(TASKS)}")
        bl.update({k: float(v) for k, v in given.items()})
        object.__setattr__(self, "base_logits", {t: bl[t] for t in TASKS})
        for name in ("n_impressions", "candidates_per_request", "n_users", "n_queries", "n_products",
                     "n_categories", "n_segments", "latent_dim", "n_days", "n_files"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"SimulatorConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.in_category_fraction <= 1.0:
            raise ValueError(f"in_category_fraction must be in [0, 1], got {self.in_category_fraction}")
        if self.id_noise < 0 or self.retrieval_noise < 0 or self.position_bias < 0:
            raise ValueError("id_noise, retrieval_noise and position_bias must be >= 0")
        k = self.candidates_per_request
        n_in = self.n_in_category
        per_cat = self.n_products // self.n_categories
        if n_in > per_cat:
            raise ValueError(
                f"each category holds about {per_cat} products, fewer than the {n_in} in-category "
                f"candidates a request needs; raise n_products or lower candidates_per_request"
            )
        if k - n_in > self.n_products - (per_cat + 1):
            raise ValueError("n_products too small for the out-of-category candidates of a request")
        if self.n_impressions < k:
            raise ValueError(f"n_impressions ({self.n_impressions}) < candidates_per_request ({k})")

    @property
    def n_in_category(self) -> int:
        return int(round(self.in_category_fraction * self.candidates_per_request))

    @property
    def n_requests(self) -> int:
        """Whole requests only: ``n_impressions // candidates_per_request``."""
        return self.n_impressions // self.candidates_per_request

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> "SimulatorConfig":
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in mapping if k not in allowed]
        if unknown:
            raise ValueError(
                f"unknown simulator config key(s) {sorted(map(str, unknown))}; allowed keys: {allowed}"
            )
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in mapping:
                continue
            v = mapping[f.name]
            if f.name == "base_logits":
                kwargs[f.name] = {str(k): float(x) for k, x in dict(v).items()}
            elif f.type in ("int", int):
                kwargs[f.name] = int(v)
            else:
                kwargs[f.name] = float(v)
        return cls(**kwargs)


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
    """All entity tables of the simulated world (deterministic for ``cfg.seed``)."""

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
    def build(cls, cfg: SimulatorConfig) -> "World":
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

    # ------------------------------------------------------------------ requests
    def sample_requests(
        self, n_requests: int, rng: np.random.Generator, start_request_id: int = 0
    ) -> pl.DataFrame:
        """``n_requests * K`` candidate rows with every observed feature column (no labels).

        Columns: :data:`FEATURE_COLUMNS`. Timestamps are uniform over the config's ``n_days``;
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

        ts = np.sort(rng.integers(EPOCH_START, EPOCH_START + cfg.n_days * SECONDS_PER_DAY, size=R))
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
        for col, n in (("user_id", self.cfg.n_users), ("query_id", self.cfg.n_queries),
                       ("candidate_id", self.cfg.n_products)):
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
        c = self.conditional_probabilities(frame)
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
        labels = {"save": save, "click": click, "long_click": long_click, "closeup": closeup,
                  "hide": hide, "checkout": checkout}
        p = self.true_probabilities(frame)
        return frame.with_columns(
            [pl.Series(t, labels[t].astype(np.int8), dtype=pl.Int8) for t in TASKS]
            + [pl.Series(f"p_true_{t}", p[t], dtype=pl.Float64) for t in TASKS]
        )


# ---------------------------------------------------------------------- whole logs
def simulate(cfg: SimulatorConfig) -> pl.DataFrame:
    """The whole log: ``cfg.n_impressions // K`` whole requests (so ``n_requests * K`` rows, which is
    ``n_impressions`` rounded down to a multiple of ``K``), features, labels and ``p_true_*``."""
    world = World.build(cfg)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(cfg.seed), 1])))
    frame = world.sample_requests(cfg.n_requests, rng)
    return world.draw_labels(frame, rng)


def _config_payload(cfg: SimulatorConfig, files: list[str] | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"config": cfg.to_dict()}
    if files is not None:
        payload["files"] = files
    return payload


def write_logs(
    df: pl.DataFrame, out_dir: str | os.PathLike, n_files: int, cfg: SimulatorConfig | None = None
) -> list[Path]:
    """Split the time-sorted log into ``n_files`` Parquet files of contiguous time ranges.

    Requests are never split between files (files hold about equal numbers of requests). Files are
    named ``impressions-00000.parquet`` ...; a ``simulator_config.json`` (the config, when given,
    and the file list) is written next to them. The write is atomic: everything goes to a temporary
    sibling directory that is then ``os.replace``-d onto ``out_dir``, which must not exist or be
    empty (otherwise :class:`FileExistsError`).
    """
    out_dir = Path(out_dir)
    n_files = int(n_files)
    if n_files < 1:
        raise ValueError("n_files must be >= 1")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"refusing to write logs into non-empty {out_dir}")

    req = df.get_column("request_id").to_numpy()
    ts = df.get_column("timestamp").to_numpy()
    if len(req) and (np.any(np.diff(ts) < 0)):
        raise ValueError("log must be sorted by timestamp")
    starts = np.flatnonzero(np.r_[True, req[1:] != req[:-1]]) if len(req) else np.zeros(0, np.int64)
    if len(np.unique(req)) != len(starts):
        raise ValueError("each request's rows must be contiguous in the log")
    if len(starts) < n_files:
        raise ValueError(f"cannot split {len(starts)} requests into {n_files} non-empty files")
    chunks = np.array_split(np.arange(len(starts)), n_files)
    bounds = [int(starts[c[0]]) for c in chunks] + [len(req)]

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        names = []
        for i in range(n_files):
            name = FILE_PATTERN.format(i)
            df.slice(bounds[i], bounds[i + 1] - bounds[i]).write_parquet(tmp / name, statistics=True)
            names.append(name)
        payload = {"config": cfg.to_dict() if cfg is not None else None, "files": names}
        (tmp / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out_dir / n for n in names]


def _existing_log(cfg: SimulatorConfig, out_dir: Path) -> list[Path] | None:
    meta = out_dir / CONFIG_FILE
    if not meta.is_file():
        return None
    try:
        payload = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if payload.get("config") != json.loads(json.dumps(cfg.to_dict())):
        return None
    files = [out_dir / n for n in payload.get("files", [])]
    if len(files) != cfg.n_files or not all(f.is_file() for f in files):
        return None
    return files


def generate_logs(cfg: SimulatorConfig, out_dir: str | os.PathLike) -> list[Path]:
    """``simulate`` + ``write_logs``; reuses ``out_dir`` when it already holds a complete log written
    with the same config (raises :class:`FileExistsError` if it holds anything else)."""
    out_dir = Path(out_dir)
    existing = _existing_log(cfg, out_dir)
    if existing is not None:
        return existing
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(
            f"{out_dir} is not empty and does not hold a complete log for this simulator config"
        )
    return write_logs(simulate(cfg), out_dir, cfg.n_files, cfg=cfg)
