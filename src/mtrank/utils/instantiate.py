"""Build callbacks and loggers from their Hydra config groups."""

from __future__ import annotations

import logging

import hydra
from omegaconf import DictConfig
from pytorch_lightning import Callback
from pytorch_lightning.loggers import Logger

from mtrank.utils.offline import is_offline_wandb_logger, use_wandb_offline

log = logging.getLogger(__name__)


def instantiate_group(cfg: DictConfig | None, kind: type, skip: frozenset[str] = frozenset()) -> list:
    """Instantiate every entry with a ``_target_`` in a config group (e.g. ``callbacks``, ``logger``), but those
    named in ``skip``."""
    out = []
    if not cfg:
        return out
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"expected a config group mapping names to {kind.__name__} configs, got {type(cfg).__name__}")
    for name, conf in cfg.items():
        if name in skip:
            continue
        if isinstance(conf, DictConfig) and "_target_" in conf:
            if is_offline_wandb_logger(conf):
                use_wandb_offline()  # offline means no socket, no DNS query (mtrank.utils.offline)
            obj = hydra.utils.instantiate(conf)
            if not isinstance(obj, kind):
                raise TypeError(f"{name}: {conf._target_} is not a {kind.__name__}")
            log.info("Instantiated %s <%s>", name, conf._target_)
            out.append(obj)
    return out


def instantiate_callbacks(cfg: DictConfig | None, progress_bar: bool = True) -> list[Callback]:
    """The callbacks of the ``callbacks`` group. With ``progress_bar=False`` (``trainer.enable_progress_bar=false``)
    a progress-bar callback is left out, so that the one switch turns the bar off (Lightning refuses a
    ``ProgressBar`` callback with the bar disabled)."""
    skip: set[str] = set()
    if not progress_bar and isinstance(cfg, DictConfig):
        from pytorch_lightning.callbacks import ProgressBar

        for name, conf in cfg.items():
            target = conf.get("_target_") if isinstance(conf, DictConfig) else None
            try:
                cls = hydra.utils.get_class(str(target)) if target else None
            except Exception:  # noqa: BLE001 - not a class: instantiate_group reports it
                cls = None
            if isinstance(cls, type) and issubclass(cls, ProgressBar):
                log.info("Leaving out callbacks.%s <%s>: trainer.enable_progress_bar is false", name, target)
                skip.add(str(name))
    return instantiate_group(cfg, Callback, frozenset(skip))


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return instantiate_group(cfg, Logger)
