"""What a ranking request gets back (:class:`Ranking`) and why one is refused (:class:`RequestError`, naming the field)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

# the maths shared with training and evaluation (the same functions, so the probabilities are the same)

MISSING = object()


class RequestError(ValueError):
    """A request the artifact cannot rank; ``loc`` is the path of the offending field, e.g.
    ``("candidates", 3, "price")``, and ``field`` the same as text (``candidates[3].price``)."""

    def __init__(self, loc: Sequence[str | int], message: str, kind: str = "value_error") -> None:
        self.loc = tuple(loc)
        self.kind = kind
        self.message = message
        super().__init__(f"{self.field}: {message}")

    @property
    def field(self) -> str:
        out = ""
        for part in self.loc:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out


@dataclass
class Ranking:
    """The ranking of one request's candidates.

    ``probabilities`` [N, T] float32: per type, corrected (Eq. 3) and calibrated, candidates in input order;
    ``raw`` [N, T]: the heads' sigmoid on the downsampled scale; ``utility`` [N] float64: Σ_t w_t p_t;
    ``order`` [N]: candidate indices by decreasing utility (ties keep input order); ``item_ids``: the
    candidates' item ids (input order) when the rows carry them.
    """

    tasks: list[str]
    probabilities: np.ndarray
    raw: np.ndarray
    utility: np.ndarray
    order: np.ndarray
    weights: dict[str, float]
    item_ids: list[Any] | None = None

    def to_frame(self) -> pl.DataFrame:
        """One row per candidate in input order: ``item_id`` (when known), ``rank`` (0 = first), ``utility``,
        ``p_<task>`` and ``p_raw_<task>``."""
        rank = np.empty(len(self.order), dtype=np.int64)
        rank[self.order] = np.arange(len(self.order))
        cols: dict[str, Any] = {}
        if self.item_ids is not None:
            cols["item_id"] = self.item_ids
        cols["rank"] = rank
        cols["utility"] = self.utility
        for j, t in enumerate(self.tasks):
            cols[f"p_{t}"] = self.probabilities[:, j]
        for j, t in enumerate(self.tasks):
            cols[f"p_raw_{t}"] = self.raw[:, j]
        return pl.DataFrame(cols)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``order``, ``item_ids`` (ranked, when known), ``utility`` and ``probabilities`` per task
        (input order), ``weights``."""
        out: dict[str, Any] = {"order": self.order.tolist()}
        if self.item_ids is not None:
            out["item_ids"] = [self.item_ids[i] for i in out["order"]]
        out["utility"] = self.utility.tolist()
        out["probabilities"] = {t: self.probabilities[:, j].tolist() for j, t in enumerate(self.tasks)}
        out["weights"] = dict(self.weights)
        return out


def is_finite(v: int | float) -> bool:
    try:
        return math.isfinite(float(v))
    except OverflowError:  # an integer too large for a float
        return False


def request_error(cls: type[Exception], loc: tuple, message: str) -> Exception:
    if cls is RequestError:
        return RequestError(loc, message)
    return cls(".".join(map(str, loc)) + ": " + message)
