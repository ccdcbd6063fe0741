"""Config nodes as plain Python."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def plain(x: Any) -> Any:
    """A config node as plain Python (interpolations resolved); anything else as it is."""
    if isinstance(x, DictConfig) or OmegaConf.is_list(x):
        return OmegaConf.to_container(x, resolve=True)
    return x
