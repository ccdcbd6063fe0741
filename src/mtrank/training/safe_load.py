"""No code from a loaded file: only allowlisted ``_target_`` s may be built from a checkpoint or a run's config.

A checkpoint's ``hyper_parameters`` (``net``, ``optimizer``, ``scheduler``) are Hydra configs that
:class:`~mtrank.training.module.RankingModule` passes to ``hydra.utils.instantiate``. ``torch.load(weights_only=True)``
stops pickled code, but not a config that names any callable: ``{"_target_": "builtins.open", "_args_": [path, "w"]}``
would truncate a file. Before a checkpoint is handed to ``load_from_checkpoint``, :func:`check_checkpoint` walks its
whole hyper-parameter tree (nested dicts and lists, ``_args_`` and ``_partial_`` included) and refuses every
``_target_`` that is not on the allowlist of its slot:

* ``net`` (and anything nested in it): the ``nn.Module`` classes defined in the modules of :mod:`mtrank.models`;
* ``optimizer``: the optimizers of :mod:`torch.optim`; ``scheduler``: the schedulers of ``torch.optim.lr_scheduler``;
* anywhere else: nothing.

Interpolations (``${...}``) are refused in those slots too (a saved checkpoint holds resolved values).
:func:`check_config_targets` does the same for a config read from a run folder (``config.yaml``'s ``data``).

Networks of your own package can be trusted with ``MTRANK_TRUSTED_TARGETS=pkg.module.Class,...`` (environment).
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from mtrank.errors import UserError

TRUSTED_ENV = "MTRANK_TRUSTED_TARGETS"
# the keys of a checkpoint Lightning merges into the module's constructor arguments
HPARAM_KEYS = ("hyper_parameters", "hparams", "module_arguments")
DATAMODULE_TARGETS = frozenset({"mtrank.data.datamodule.RankingDataModule"})


class UnsafeCheckpointError(UserError, ValueError):
    """A checkpoint or run config names a ``_target_`` that mtrank does not build from a loaded file."""


@lru_cache(maxsize=1)
def network_targets() -> frozenset[str]:
    """``module.Class`` of every ``nn.Module`` class defined in a module of :mod:`mtrank.models`."""
    import mtrank.models as pkg

    out = set()
    for info in pkgutil.iter_modules(pkg.__path__, prefix=f"{pkg.__name__}."):
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if inspect.isclass(obj) and obj.__module__ == mod.__name__ and issubclass(obj, torch.nn.Module):
                out.add(f"{mod.__name__}.{name}")
    return frozenset(out)


@lru_cache(maxsize=1)
def optimizer_targets() -> frozenset[str]:
    return frozenset(
        f"torch.optim.{n}"
        for n, o in vars(torch.optim).items()
        if inspect.isclass(o) and issubclass(o, torch.optim.Optimizer) and o is not torch.optim.Optimizer
    )


@lru_cache(maxsize=1)
def scheduler_targets() -> frozenset[str]:
    sched = torch.optim.lr_scheduler
    base = getattr(sched, "LRScheduler", None) or sched._LRScheduler  # noqa: SLF001 - older torch
    out = {
        f"torch.optim.lr_scheduler.{n}"
        for n, o in vars(sched).items()
        if inspect.isclass(o) and issubclass(o, base) and o is not base and not n.startswith("_")
    }
    out.add("torch.optim.lr_scheduler.ReduceLROnPlateau")
    return frozenset(out)


def _trusted_extra() -> frozenset[str]:
    return frozenset(t.strip() for t in os.environ.get(TRUSTED_ENV, "").split(",") if t.strip())


def allowed_targets(slot: str | None) -> frozenset[str]:
    """The targets a checkpoint may name under hyper-parameter ``slot`` (``net``, ``optimizer``, ``scheduler``)."""
    base = {"net": network_targets, "optimizer": optimizer_targets, "scheduler": scheduler_targets}.get(slot or "")
    return (base() if base else frozenset()) | _trusted_extra()


def _walk(node: Any, path: str) -> Iterator[tuple[str, Mapping | str]]:
    """(path, dict holding ``_target_``) and (path, interpolation string) everywhere in ``node``."""
    if isinstance(node, Mapping):
        if "_target_" in node:
            yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}[{i}]")
    elif isinstance(node, str) and "${" in node:
        yield path, node


def _problems(tree: Any, root: str, slot_of) -> list[str]:
    out = []
    for path, found in _walk(tree, root):
        slot = slot_of(path)
        if isinstance(found, str):
            if slot is not None:
                out.append(f"{path} = {found!r} (an interpolation; a checkpoint holds resolved values)")
            continue
        target = found["_target_"]
        allowed = allowed_targets(slot)
        if not isinstance(target, str) or target not in allowed:
            what = f"one of the {slot} classes mtrank builds ({_preview(allowed)})" if allowed else "no _target_ here"
            out.append(f"{path}._target_ = {target!r} (expected {what})")
    return out


def _preview(names: Iterable[str], n: int = 6) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (f", … {len(names) - n} more" if len(names) > n else "")


def _slot(path: str) -> str | None:
    """The top-level hyper-parameter a path is under (``hyper_parameters.net._args_[0]`` → ``net``)."""
    parts = path.replace("[", ".[").split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("net", "optimizer", "scheduler") else None


def check_checkpoint_dict(checkpoint: Mapping[str, Any], source: str | Path) -> None:
    """Raise :class:`UnsafeCheckpointError` naming ``source`` and every refused ``_target_`` of ``checkpoint``."""
    problems = []
    for key in HPARAM_KEYS:
        if key in checkpoint:
            problems += _problems(checkpoint[key], key, _slot)
    if problems:
        raise UnsafeCheckpointError(
            f"refusing to load the checkpoint {source}: its hyper-parameters name code mtrank does not build from a "
            f"checkpoint: " + "; ".join(problems) + ". Nothing was instantiated. Only the networks of mtrank.models, "
            f"torch.optim optimizers and schedulers may be built from a checkpoint; if you trust this file and its "
            f"classes, list them in the environment variable {TRUSTED_ENV}=pkg.module.Class,…"
        )


def check_checkpoint(path: str | Path) -> None:
    """Load ``path`` with ``weights_only=True`` (no pickled code) and check its hyper-parameters (see module doc)."""
    path = Path(path)
    try:
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # not a zip archive: mmap is not possible
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unreadable, truncated, or pickled code the weights-only loader refuses
        raise RuntimeError(f"could not load the checkpoint {path} (weights only, no pickled code): {exc}") from exc
    if not isinstance(ckpt, Mapping):
        raise UnsafeCheckpointError(f"{path} is not a Lightning checkpoint (a {type(ckpt).__name__}, not a dict)")
    check_checkpoint_dict(ckpt, path)


def check_config_targets(node: Any, key: str, allowed: Iterable[str], source: str | Path) -> None:
    """A config section read from a file (``key`` in ``source``) may only name the ``allowed`` top-level target
    and no nested one."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=False)
    allowed = frozenset(allowed) | _trusted_extra()
    problems = []
    for path, found in _walk(node, key):
        if isinstance(found, str):
            continue  # plain interpolations of a config file read nothing but config values and the environment
        target = found["_target_"]
        ok = path == key and isinstance(target, str) and target in allowed
        if not ok:
            problems.append(f"{path}._target_ = {target!r}")
    if problems:
        raise UnsafeCheckpointError(
            f"refusing to build from {source}: " + "; ".join(problems) + f" (expected {key}._target_ to be one of "
            f"{sorted(allowed)} and no other _target_). Nothing was instantiated."
        )
