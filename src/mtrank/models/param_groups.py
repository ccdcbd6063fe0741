"""Per-part optimiser settings (``model.param_groups``): a learning rate or weight decay for one part of the net.

``model.param_groups`` maps a parameter-name prefix inside the net (as in ``net.named_parameters()``, e.g.
``wide`` for the wide part, ``feature_layer.embeddings`` for the id embeddings) to the optimiser settings of the
parameters under it (``lr``, ``weight_decay``, any key the optimiser accepts per group); every other parameter
keeps ``model.optimizer``'s. A prefix may also be written nested, ``{towers: {hide: {weight_decay: 0.1}}}`` for
``towers.hide`` (a command-line override cannot name a key with a dot in it). A parameter under two prefixes takes
the longest one. A prefix that names no
parameter is an error (a typo would otherwise silently change nothing). In a seed ensemble
(:class:`mtrank.models.ensemble.EnsembleNet`) the prefixes are matched inside each member (``wide`` is every
member's wide part).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

__all__ = ["build_param_groups"]


def build_param_groups(
    net: nn.Module, groups: Mapping[str, Mapping[str, Any]] | None, key: str = "model.param_groups"
) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: one per prefix of ``groups`` (with its settings), then the rest."""
    source = getattr(net, "named_member_parameters", None) or net.named_parameters  # an ensemble: per member
    named = [(n, p) for n, p in source() if p.requires_grad]
    if not groups:
        return [{"params": [p for _, p in named]}]
    if not isinstance(groups, Mapping):
        raise ValueError(f"{key} = {groups!r}: expected a mapping {{parameter-name prefix: {{lr: ..., ...}}}}")
    groups = _flat(groups, key)
    prefixes = sorted(groups, key=len, reverse=True)
    for prefix in prefixes:
        if "params" in groups[prefix]:
            raise ValueError(f"{key}.{prefix} may not set 'params'")
    chosen: dict[str, list] = {p: [] for p in prefixes}
    rest = []
    for name, param in named:
        match = next((p for p in prefixes if name == p or name.startswith(p + ".")), None)
        (chosen[match] if match is not None else rest).append(param)
    empty = [p for p in prefixes if not chosen[p]]
    if empty:
        tops = sorted({n.split(".")[0] for n, _ in named})
        raise ValueError(f"{key}: prefix(es) {empty} name no parameter of the net; its parts are {tops}")
    out = [{"params": chosen[p], **dict(groups[p])} for p in prefixes]
    if rest:
        out.append({"params": rest})
    return out


def _flat(groups: Mapping[str, Any], key: str, prefix: str = "") -> dict[str, Mapping[str, Any]]:
    """``{prefix: settings}`` with nested prefixes joined by dots: a mapping whose values are all mappings is a level
    of the prefix, one whose values are all settings is a group's settings."""
    out: dict[str, Mapping[str, Any]] = {}
    for name, value in groups.items():
        full = f"{prefix}.{name}" if prefix else str(name)
        if not isinstance(value, Mapping):
            raise ValueError(f"{key}.{full} = {value!r}: expected a mapping of optimiser settings")
        nested = [isinstance(v, Mapping) for v in value.values()]
        if nested and all(nested):
            out.update(_flat(value, key, full))
        elif any(nested):
            raise ValueError(
                f"{key}.{full} mixes optimiser settings and nested prefixes ({sorted(value)}): write one or the other"
            )
        else:
            out[full] = value
    return out
