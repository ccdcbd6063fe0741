"""Live traffic for a simulated A/B test: fresh requests from the world, split between arms by user.

* :func:`assign_arms`: every user goes to one arm, chosen by a salted 64-bit hash of the user id
  (SplitMix64). The same (user, salt) always lands in the same arm, so every request of a user in an
  experiment sees one policy, and arms see disjoint users. Each experiment uses its own salt
  (re-randomisation), as real experimentation platforms do.
* :func:`experiment_rng`: the random generator of one experiment, from ``(seed, experiment tag)``.
* :func:`sample_traffic`: ``n_requests`` fresh requests (:meth:`RankingWorld.sample_requests`: users, query pins,
  candidate sets, in retrieval order) with an ``arm`` column. Request ids start at ``start_request_id``
  (far above the training log's ids) so traffic never shares ids with training data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import polars as pl

from mtrank.data.world_api import RankingWorld

__all__ = ["ARM_COL", "TRAFFIC_REQUEST_ID_START", "assign_arms", "salt_of", "experiment_rng", "sample_traffic"]

ARM_COL = "arm"
# Request ids of simulated live traffic start here (a training log holds n_impressions / K requests).
TRAFFIC_REQUEST_ID_START = 10**12

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser on uint64 (wrapping arithmetic): a well-mixed hash of each value."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def salt_of(*parts: object) -> int:
    """A 64-bit salt from any printable parts (seed, experiment name, round), stable across runs."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def assign_arms(user_ids: np.ndarray, n_arms: int, salt: int) -> np.ndarray:
    """Arm index in ``[0, n_arms)`` of each user id (a pure function of ``(user_id, salt)``)."""
    if n_arms < 1:
        raise ValueError(f"n_arms must be >= 1, got {n_arms}")
    u = np.asarray(user_ids)
    if u.size and np.min(u) < 0:
        raise ValueError("user ids must be >= 0 to be hashed into arms")
    h = _splitmix64(u.astype(np.uint64) ^ np.uint64(salt & 0xFFFFFFFFFFFFFFFF))
    return (h % np.uint64(n_arms)).astype(np.int32)


def experiment_rng(seed: int, *tag: object) -> np.random.Generator:
    """The generator of one experiment: independent streams for different tags, same stream for the same."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), salt_of(*tag)])))


def sample_traffic(
    world: RankingWorld,
    n_requests: int,
    arms: Sequence[str],
    rng: np.random.Generator,
    salt: int,
    start_request_id: int = TRAFFIC_REQUEST_ID_START,
) -> pl.DataFrame:
    """Fresh requests (every candidate row, retrieval order) with the ``arm`` (name) of their user."""
    if n_requests < 1:
        raise ValueError(f"traffic needs at least one request, got n_requests={n_requests}")
    if len(set(arms)) != len(arms) or not arms:
        raise ValueError(f"arm names must be distinct and non-empty, got {list(arms)}")
    frame = world.sample_requests(int(n_requests), rng, start_request_id=int(start_request_id))
    idx = assign_arms(frame.get_column("user_id").to_numpy(), len(arms), salt)
    names = pl.Series(ARM_COL, np.asarray(arms, dtype=object)[idx], dtype=pl.String)
    return frame.with_columns(names)
