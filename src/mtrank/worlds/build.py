"""Build a fitted world from its config node (``world`` of ``conf/world/<name>.yaml``), and its log.

:func:`build_fitted_world`: check the config, fit the response model or load it from the cache
(:func:`mtrank.worlds.response.ensure_fitted`), read the real log into a :class:`~mtrank.worlds.catalogue.Catalogue`.
:func:`fitted_world_log`: the folder of the world's training log (``world.log``), written once.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from mtrank.utils.train_process import train_subprocess
from mtrank.worlds.catalogue import Catalogue
from mtrank.worlds.config import FittedWorldConfig
from mtrank.worlds.fitted import FittedWorld
from mtrank.worlds.logs import cached_world_log
from mtrank.worlds.response import ResponseModel, Trainer, ensure_fitted

log = logging.getLogger(__name__)

__all__ = ["build_fitted_world", "fitted_world_log"]


def build_fitted_world(
    mapping: Mapping[str, Any], data_dir: str | Path, trainer: Trainer = train_subprocess
) -> FittedWorld:
    """The fitted world of ``mapping`` (the ``world`` node); ``data_dir``: ``paths.data_dir`` of the fitting runs."""
    cfg = FittedWorldConfig.from_mapping(mapping)
    folder = ensure_fitted(cfg, data_dir, trainer)
    response = ResponseModel(folder, cfg.tasks)
    catalogue = Catalogue.from_log(
        pl.read_parquet(cfg.log_file), cfg.user, cfg.item, cfg.time, cfg.context, cfg.item_columns
    )
    held = response.fit["held_out"]
    log.info(
        "world %s: %d contexts, %d items; response model %s, held-out AUROC %s",
        cfg.name,
        catalogue.contexts.height,
        catalogue.n_items,
        folder,
        ", ".join(f"{t} {held[t]['auroc']:.4f}" for t in cfg.tasks if held.get(t, {}).get("auroc") is not None),
    )
    return FittedWorld(cfg, catalogue, response, info={"response_model": str(folder), "fit": response.fit})


def fitted_world_log(world: FittedWorld) -> Path:
    """The folder of ``world``'s training log (``world.log`` settings), under its response model's folder."""
    cfg = world.cfg
    key = cfg.digest("log_file", "user", "item", "time", "context", "item_columns", "tasks", "position_bias")
    key += "-" + cfg.digest("candidates_per_request", "history_fraction", "retrieval_noise")
    return cached_world_log(world, cfg.n_requests, cfg.n_files, cfg.log_seed, Path(world.info["response_model"]), key)
