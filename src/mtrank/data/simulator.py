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

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from mtrank.data.simulator_config import EPOCH_START, SECONDS_PER_DAY, SimulatorConfig
from mtrank.data.world import World
from mtrank.utils.tmpdirs import PREFIX as TMP_PREFIX
from mtrank.utils.tmpdirs import SEP as TMP_SEP
from mtrank.utils.tmpdirs import make_tmp_dir, remove_stale

log = logging.getLogger(__name__)

CONFIG_FILE = "simulator_config.json"
FILE_PATTERN = "impressions-{:05d}.parquet"
RNG_BLOCK = 4_096  # requests drawn from one random stream: the unit the log is made of
CHUNK_REQUESTS = 16_384  # requests generated and held at once by generate_logs (memory only, not the output)
ROW_GROUP_ROWS = 131_072  # rows per Parquet row group of the written files


# ---------------------------------------------------------------------- whole logs
def _block(world: World, b: int) -> pl.DataFrame:
    """Requests ``[b * RNG_BLOCK, (b + 1) * RNG_BLOCK)`` of the log, drawn from their own random stream (seeded by
    ``(seed, 1, b)``) over their share of the time span, so the log is the same however many blocks are drawn at a
    time."""
    cfg = world.cfg
    n = cfg.n_requests
    first, stop = b * RNG_BLOCK, min(n, (b + 1) * RNG_BLOCK)
    span = cfg.n_days * SECONDS_PER_DAY
    lo = EPOCH_START + span * first // n
    hi = max(lo + 1, EPOCH_START + span * stop // n)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(cfg.seed), 1, b])))
    frame = world.sample_requests(stop - first, rng, start_request_id=first, time_range=(lo, hi))
    return world.draw_labels(frame, rng)


def iter_log(cfg: SimulatorConfig, chunk_requests: int = CHUNK_REQUESTS) -> Iterator[pl.DataFrame]:
    """The log in time order, about ``chunk_requests`` whole requests (a multiple of :data:`RNG_BLOCK`) at a time:
    memory stays flat however long the log is, and the rows do not depend on ``chunk_requests``."""
    if int(chunk_requests) < 1:
        raise ValueError(f"chunk_requests must be >= 1, got {chunk_requests}")
    world = World.build(cfg)
    per_chunk = max(1, -(-int(chunk_requests) // RNG_BLOCK))
    n_blocks = -(-cfg.n_requests // RNG_BLOCK)
    for first in range(0, n_blocks, per_chunk):
        blocks = [_block(world, b) for b in range(first, min(n_blocks, first + per_chunk))]
        yield blocks[0] if len(blocks) == 1 else pl.concat(blocks)


def simulate(cfg: SimulatorConfig) -> pl.DataFrame:
    """The whole log in memory: ``cfg.n_impressions // K`` whole requests (so ``n_requests * K`` rows, which is
    ``n_impressions`` rounded down to a multiple of ``K``), features, labels and ``p_true_*``. For long logs use
    :func:`generate_logs`, which writes them chunk by chunk."""
    return pl.concat(list(iter_log(cfg)))


def file_bounds(n_requests: int, n_files: int) -> list[int]:
    """The first request of each file (and ``n_requests``): files hold about equal numbers of whole requests."""
    if n_requests < n_files:
        raise ValueError(f"cannot split {n_requests} requests into {n_files} non-empty files")
    sizes = [len(c) for c in np.array_split(np.arange(n_requests), n_files)]
    return [int(x) for x in np.concatenate([[0], np.cumsum(sizes)])]


class _RowGroupWriter:
    """A Parquet file written in row groups of exactly ``ROW_GROUP_ROWS`` rows (the last one shorter), whatever
    the sizes of the frames appended: the bytes depend on the rows alone."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._rows = 0

    def append(self, frame: pl.DataFrame) -> None:
        self._pending.append(frame.to_arrow())
        self._rows += frame.height
        while self._rows >= ROW_GROUP_ROWS:
            self._flush(ROW_GROUP_ROWS)

    def _flush(self, n: int) -> None:
        table = pa.concat_tables(self._pending).combine_chunks()
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema, compression="zstd", write_statistics=True)
        self._writer.write_table(table.slice(0, n), row_group_size=n)
        rest = table.slice(n)
        self._pending, self._rows = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> None:
        if self._rows:
            self._flush(self._rows)
        if self._writer is not None:
            self._writer.close()


def _finish(tmp: Path, cfg: SimulatorConfig | None, names: list[str]) -> None:
    """The log's record (its config and files) beside the files; the folder readable like any other."""
    payload = {"config": cfg.to_dict() if cfg is not None else None, "files": names}
    (tmp / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, 0o755)


def _write_stream_tmp(cfg: SimulatorConfig, out_dir: Path, chunk_requests: int) -> tuple[Path, list[str]]:
    """Generate the log chunk by chunk straight into its files in a new temporary sibling folder."""
    bounds = file_bounds(cfg.n_requests, cfg.n_files)
    k = cfg.candidates_per_request
    names = [FILE_PATTERN.format(i) for i in range(cfg.n_files)]
    tmp = make_tmp_dir(out_dir.parent, out_dir.name)
    try:
        f, writer, start = 0, _RowGroupWriter(tmp / names[0]), 0  # start: first request of the next chunk
        for chunk in iter_log(cfg, chunk_requests):
            stop = start + chunk.height // k
            at = start
            while at < stop:
                cut = min(stop, bounds[f + 1])
                writer.append(chunk.slice((at - start) * k, (cut - at) * k))
                at = cut
                if at == bounds[f + 1] and f + 1 < cfg.n_files:
                    writer.close()
                    f += 1
                    writer = _RowGroupWriter(tmp / names[f])
            start = stop
        writer.close()
        _finish(tmp, cfg, names)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp, names


def write_logs(
    df: pl.DataFrame, out_dir: str | os.PathLike, n_files: int, cfg: SimulatorConfig | None = None
) -> list[Path]:
    """Split the time-sorted log into ``n_files`` Parquet files of contiguous time ranges.

    Requests are never split between files (files hold about equal numbers of requests). Files are
    named ``impressions-00000.parquet`` ...; a ``simulator_config.json`` (the config, when given,
    and the file list) is written next to them. The write is atomic: everything goes to a temporary
    sibling directory (:func:`mtrank.utils.tmpdirs.make_tmp_dir`) that is then ``os.replace``-d onto
    ``out_dir``, which must not exist or be empty (otherwise :class:`FileExistsError`).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"refusing to write logs into non-empty {out_dir}")
    tmp, names = _write_tmp(df, out_dir, n_files, cfg)
    try:
        os.replace(tmp, out_dir)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FileExistsError(f"refusing to write logs into non-empty {out_dir} (written meanwhile)") from exc
    return [out_dir / n for n in names]


def _write_tmp(df: pl.DataFrame, out_dir: Path, n_files: int, cfg: SimulatorConfig | None) -> tuple[Path, list[str]]:
    """Write the files of ``out_dir`` into a new temporary sibling folder; returns it and the file names."""
    n_files = int(n_files)
    if n_files < 1:
        raise ValueError("n_files must be >= 1")
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

    tmp = make_tmp_dir(out_dir.parent, out_dir.name)
    try:
        names = []
        for i in range(n_files):
            name = FILE_PATTERN.format(i)
            df.slice(bounds[i], bounds[i + 1] - bounds[i]).write_parquet(tmp / name, statistics=True)
            names.append(name)
        _finish(tmp, cfg, names)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp, names


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


def generate_logs(cfg: SimulatorConfig, out_dir: str | os.PathLike, chunk_requests: int = CHUNK_REQUESTS) -> list[Path]:
    """The log written chunk by chunk (:func:`iter_log`: memory flat in its length, files identical for any
    ``chunk_requests``); reuses ``out_dir`` when it already holds a complete log written with the same config
    (raises :class:`FileExistsError` if it holds anything else).

    Safe for concurrent runs: each writes into its own temporary folder and renames it into place; a run that
    finds ``out_dir`` written meanwhile by another discards its copy and uses the other's once it checked that it
    is complete. Stale temporary folders of killed runs beside ``out_dir`` are removed first
    (:func:`mtrank.utils.tmpdirs.remove_stale`)."""
    out_dir = Path(out_dir)
    # this folder's own temporary copies only (the new naming, and mkdtemp's of older versions)
    remove_stale(out_dir.parent, (f"{TMP_PREFIX}{out_dir.name}{TMP_SEP}*", f".{out_dir.name}.tmp-*"))
    existing = _existing_log(cfg, out_dir)
    if existing is not None:
        return existing
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(f"{out_dir} is not empty and does not hold a complete log for this simulator config")
    tmp, names = _write_stream_tmp(cfg, out_dir, chunk_requests)
    try:
        os.replace(tmp, out_dir)
    except OSError as exc:  # another run renamed its copy into place first
        shutil.rmtree(tmp, ignore_errors=True)
        existing = _existing_log(cfg, out_dir)
        if existing is None:
            raise FileExistsError(
                f"{out_dir} was written meanwhile by another process but does not hold a complete log for this "
                f"simulator config (missing or different {CONFIG_FILE} or files)"
            ) from exc
        log.info("%s was written meanwhile by another run: using it", out_dir)
        return existing
    return [out_dir / n for n in names]
