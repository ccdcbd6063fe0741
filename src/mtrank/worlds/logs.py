"""Engagement logs drawn from any :class:`mtrank.data.world_api.RankingWorld`, written as Parquet files that the
normal pipeline reads (``conf/data/kuairand_fitted.yaml`` for the fitted world).

The log is ``n_requests`` requests in ``n_files`` files of about equal numbers of whole requests; file ``f`` is
drawn in chunks of :data:`CHUNK_REQUESTS` requests, chunk ``c`` from its own generator seeded by
``(seed, f, c)``: the same world and settings give the same files. Request ids are ``0 .. n_requests - 1``.
:func:`cached_world_log` keeps the log in a folder named by a key and writes it once (into a temporary sibling,
renamed when complete).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mtrank.data.world_api import RankingWorld
from mtrank.utils.io import building_dir, write_json_atomic

log = logging.getLogger(__name__)

__all__ = ["CHUNK_REQUESTS", "MANIFEST", "write_world_log", "cached_world_log"]

CHUNK_REQUESTS = 16_384
MANIFEST = "world_log.json"
FILE_PATTERN = "impressions-{:05d}.parquet"


def write_world_log(world: RankingWorld, n_requests: int, n_files: int, seed: int, out_dir: str | Path) -> list[Path]:
    """Write the log into ``out_dir`` (created); returns the files."""
    if n_requests < n_files or n_files < 1:
        raise ValueError(f"cannot split {n_requests} requests into {n_files} non-empty files")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, n_requests, n_files + 1).round().astype(np.int64)
    files = []
    for f in range(n_files):
        parts = []
        for c, first in enumerate(range(int(bounds[f]), int(bounds[f + 1]), CHUNK_REQUESTS)):
            n = min(CHUNK_REQUESTS, int(bounds[f + 1]) - first)
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), f, c])))
            parts.append(world.draw_labels(world.sample_requests(n, rng, start_request_id=first), rng))
        path = out / FILE_PATTERN.format(f)
        pl.concat(parts).write_parquet(path)
        files.append(path)
    return files


def cached_world_log(
    world: RankingWorld, n_requests: int, n_files: int, seed: int, root: str | Path, world_key: str
) -> Path:
    """The folder of the log of ``world`` (``world_key`` names the world) with these settings, written once."""
    settings: dict[str, Any] = {"world": world_key, "n_requests": n_requests, "n_files": n_files, "seed": seed}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    final = Path(root) / f"log-{key}"
    if (final / MANIFEST).is_file():
        log.info("Reusing the world's log %s", final)
        return final
    with building_dir(final) as tmp:
        files = write_world_log(world, n_requests, n_files, seed, tmp)
        write_json_atomic(tmp / MANIFEST, {**settings, "key": key, "files": [p.name for p in files]})
    log.info("Wrote the world's log: %d requests in %s", n_requests, final)
    return final
