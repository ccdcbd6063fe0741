"""What the checks share: reading a section of the composed Hydra config as plain Python, and building a
component's typed config from it with its problems gathered (not raised)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from mtrank.errors import ConfigError, Problems

__all__ = ["UNRESOLVED", "config_value", "build", "resolved"]

T = TypeVar("T")
UNRESOLVED = object()


def config_value(cfg: DictConfig, key: str, problems: Problems, default: Any = None) -> Any:
    """The resolved value at ``key`` as plain Python (``default`` when absent); an interpolation that does not
    resolve is a problem at the key that holds it, and the value is :data:`UNRESOLVED`."""
    try:
        v = OmegaConf.select(cfg, key, default=default, throw_on_missing=True)
        if isinstance(v, DictConfig) or OmegaConf.is_list(v):
            v = OmegaConf.to_container(v, resolve=True)
    except Exception as exc:  # noqa: BLE001 - MissingMandatoryValue, InterpolationResolutionError, ...
        where = str(getattr(exc, "full_key", "") or key)
        where = where if where == key or where.startswith(key + ".") else key
        problems.add(where, f"{where} does not resolve: {str(exc).splitlines()[0]}")
        return UNRESOLVED
    return v


def resolved(cfg: DictConfig, keys: dict[str, Any], problems: Problems) -> dict[str, Any]:
    """``{key: value}`` of the keys that resolve (``keys`` maps each to its default when absent)."""
    out = {k: config_value(cfg, k, problems, default=d) for k, d in keys.items()}
    return {k: v for k, v in out.items() if v is not UNRESOLVED}


def build(problems: Problems, make: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``make(*args, **kwargs)``: a component's typed config; its :class:`ConfigError` goes to ``problems`` (each
    problem under the key it names) and the result is None."""
    try:
        return make(*args, **kwargs)
    except ConfigError as exc:
        problems.extend(exc)
        return None
