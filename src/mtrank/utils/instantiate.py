"""Build callbacks and loggers from their Hydra config groups."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig
from pytorch_lightning import Callback
from pytorch_lightning.loggers import Logger

from mtrank.utils.offline import is_offline_wandb_logger, use_wandb_offline

log = logging.getLogger(__name__)


def instantiate_group(cfg: DictConfig | None, kind: type) -> list:
    """Instantiate every entry with a ``_target_`` in a config group (e.g. ``callbacks``, ``logger``)."""
    out = []
    if not cfg:
        return out
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"expected a config group mapping names to {kind.__name__} configs, got {type(cfg).__name__}")
    for name, conf in cfg.items():
        if isinstance(conf, DictConfig) and "_target_" in conf:
            if is_offline_wandb_logger(conf):
                use_wandb_offline()  # offline means no socket, no DNS query (mtrank.utils.offline)
            obj = hydra.utils.instantiate(conf)
            if not isinstance(obj, kind):
                raise TypeError(f"{name}: {conf._target_} is not a {kind.__name__}")
            log.info("Instantiated %s <%s>", name, conf._target_)
            out.append(obj)
    return out


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return instantiate_group(cfg, Callback)


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return instantiate_group(cfg, Logger)
