"""The simulator's configuration and constants: engagement types, their true weights, feature columns."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
SIMULATOR_VERSION = 3  # 3: requests drawn in blocks of their own random stream (streamed generation)


# Weights on (aff, rel, -pos, lp, g, act) per task; long_click and checkout are conditional on click.
TASK_WEIGHTS: dict[str, tuple[float, float, float, float, float, float]] = {
    #              aff   rel   -pos   lp    g     act
    "hide": (-0.6, -1.5, 0.25, 0.0, -0.8, 0.0),
    "closeup": (0.7, 1.5, 0.45, 0.15, 0.45, 0.1),
    "save": (1.6, 0.7, 0.35, 0.1, 0.35, 0.15),
    "click": (1.1, 1.6, 0.55, -0.2, 0.3, 0.2),
    "long_click": (0.5, 0.2, 0.0, 0.0, 0.4, 0.0),
    "checkout": (0.5, 0.2, 0.0, -0.4, 0.2, 0.2),
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
        for name in (
            "n_impressions",
            "candidates_per_request",
            "n_users",
            "n_queries",
            "n_products",
            "n_categories",
            "n_segments",
            "latent_dim",
            "n_days",
            "n_files",
        ):
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
    def from_mapping(cls, mapping: Mapping[str, Any]) -> SimulatorConfig:
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in mapping if k not in allowed]
        if unknown:
            raise ValueError(f"unknown simulator config key(s) {sorted(map(str, unknown))}; allowed keys: {allowed}")
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
