"""S1 ∩ S2 as a box: the weights that add up to C within their bounds, mapped one-to-one onto ``[0, 1]^(k−1)``.

Searched directly, S1 ∩ S2 is a polytope: Ax hands BoTorch linear inequality constraints, and BoTorch then
draws its raw samples by hit-and-run and optimises the acquisition function with SLSQP — most of the seconds of a
GP trial. :class:`BoxMap` gives Ax a box instead (``generation.simplex: box``): one coordinate ``u_i ∈ [0, 1]``
per free weight, no parameter constraint (Sobol raw samples, L-BFGS-B), and the weights are computed from ``u``
by **stick-breaking within the bounds**. With ``R`` the total still to share out (``C`` at first), weight ``i``
can take any value in

    lo_i = max(l_i, R − Σ_{j>i} h_j)    …    hi_i = min(h_i, R − Σ_{j>i} l_j)

(the later weights, the derived one included, can still make up the rest within their own bounds), and takes
``w_i = lo_i + x_i · (hi_i − lo_i)`` with ``x_i = 1 − (1 − u_i)^(1/b_i)``, ``b_i`` the number of weights after
``i``. The last (derived) weight is ``C − Σ others``, as in the derived-parameter search, so S1 holds to float
rounding and S2 holds by construction. The ``x_i`` shaping is the inverse CDF of Beta(1, b_i): on the plain
simplex (bounds [0, C]) a uniform ``u`` gives uniform weights (a flat Dirichlet), so Sobol points in the box are
spread over the simplex as evenly as Sobol points on it. :meth:`BoxMap.to_box` is the inverse (exact wherever
``hi_i > lo_i``; on a face where a weight has a single possible value any ``u_i`` maps to it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["BOX_PREFIX", "BoxMap"]

BOX_PREFIX = "box_"  # Ax's name of the box coordinate of weight <name>: box_<name>


@dataclass(frozen=True)
class BoxMap:
    """``names``: the free weights in stick-breaking order, then ``derived``; ``lows`` / ``highs`` in that order."""

    names: tuple[str, ...]
    lows: tuple[float, ...]
    highs: tuple[float, ...]
    total: float

    def __post_init__(self) -> None:
        if not len(self.names) == len(self.lows) == len(self.highs) or len(self.names) < 2:
            raise ValueError(f"BoxMap needs >= 2 names with one low and one high each, got {self}")

    @classmethod
    def of(cls, names: Sequence[str], bounds: Mapping[str, tuple[float, float]], total: float, derived: str) -> BoxMap:
        order = [n for n in names if n != derived] + [derived]
        return cls(tuple(order), tuple(bounds[n][0] for n in order), tuple(bounds[n][1] for n in order), total)

    @property
    def free(self) -> list[str]:
        return list(self.names[:-1])

    @property
    def derived(self) -> str:
        return self.names[-1]

    @property
    def box_names(self) -> list[str]:
        return [BOX_PREFIX + n for n in self.free]

    def _interval(self, i: int, rest: float) -> tuple[float, float]:
        lo = max(self.lows[i], rest - sum(self.highs[i + 1 :]))
        hi = min(self.highs[i], rest - sum(self.lows[i + 1 :]))
        return lo, max(lo, hi)

    def to_weights(self, box: Mapping[str, float]) -> dict[str, float]:
        """Box coordinates ``{box_<name>: u}`` → every weight, the derived one as ``total − Σ others``."""
        out: dict[str, float] = {}
        rest = self.total
        for i, n in enumerate(self.free):
            u = min(1.0, max(0.0, float(box[BOX_PREFIX + n])))
            lo, hi = self._interval(i, rest)
            x = 1.0 - (1.0 - u) ** (1.0 / (len(self.names) - 1 - i))
            w = min(hi, lo + x * (hi - lo))
            out[n] = w
            rest -= w
        out[self.derived] = self.total - sum(out[n] for n in self.free)
        return out

    def to_box(self, weights: Mapping[str, float]) -> dict[str, float]:
        """Weights (the derived one may be left out) → box coordinates; ``to_weights`` maps them back."""
        out: dict[str, float] = {}
        rest = self.total
        for i, n in enumerate(self.free):
            w = float(weights[n])
            lo, hi = self._interval(i, rest)
            x = 0.0 if hi - lo <= 0.0 else min(1.0, max(0.0, (w - lo) / (hi - lo)))
            out[BOX_PREFIX + n] = 1.0 - (1.0 - x) ** (len(self.names) - 1 - i)
            rest -= w
        return out
