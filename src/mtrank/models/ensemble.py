"""Seed ensembling inside one model (``model.ensemble_size``): k independently initialised copies of the net.

:class:`EnsembleNet` holds ``size`` copies ("members") of the net described by ``base``, each built with its own
draw of the initial weights (they are built one after the other from the seeded global generator) and its own
dropout masks. Training sums the members' own losses (:meth:`mtrank.training.module.RankingModule.training_step`
asks :meth:`EnsembleNet.member_logits`), so each member gets exactly the gradient it would get trained alone: the
members are independent nets, not a mixture. The served output (:meth:`EnsembleNet.forward`) is, per head, the
logit of the mean of the members' probabilities, so everything downstream of the logits (Eq. 3, calibration,
metrics, per-head selection, export, serving, checkpoints) works unchanged. ``model.ensemble_size: 1`` (the default)
builds the plain net, not an ensemble of one.

Cost: k times the parameters and about k times the training and scoring time.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.nn import functional as F

from mtrank.data.spec import FeatureSpec

__all__ = ["EnsembleNet", "ensemble_config", "mean_probability_logit"]

_TARGET = f"{__name__}.EnsembleNet"


def mean_probability_logit(logits: Tensor, dim: int = 0) -> Tensor:
    """``logit(mean_k sigmoid(logits_k))`` along ``dim``, computed in log space (finite for any finite logits):
    ``log mean p - log mean (1 - p)`` with ``log p = logsigmoid(z)`` and ``log (1 - p) = logsigmoid(-z)``."""
    return torch.logsumexp(F.logsigmoid(logits), dim=dim) - torch.logsumexp(F.logsigmoid(-logits), dim=dim)


def ensemble_config(net: Mapping[str, Any], size: Any, key: str = "model.ensemble_size") -> dict[str, Any]:
    """The net config for ``model.ensemble_size``: ``net`` itself for 1, else an :class:`EnsembleNet` of ``size``
    copies of ``net``. A config that already is an ensemble is returned as is (a checkpoint's saved config)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{key} = {size!r}: expected an integer ≥ 1 (1 = the plain net)")
    net = dict(net)
    if size == 1 or net.get("_target_") == _TARGET:
        return net
    return {"_target_": _TARGET, "_recursive_": False, "base": net, "size": int(size)}


class EnsembleNet(nn.Module):
    """``size`` independently initialised copies of the net described by ``base``; logits = logit of the mean of
    the members' probabilities, per head."""

    def __init__(self, spec: FeatureSpec, heads: Sequence[str], base: Mapping[str, Any], size: int) -> None:
        super().__init__()
        if isinstance(base, DictConfig):
            base = OmegaConf.to_container(base, resolve=True)
        if int(size) < 2:
            raise ValueError(f"EnsembleNet needs size ≥ 2 (got {size}); size 1 is the plain net")
        self.spec = spec
        self.heads = tuple(str(h) for h in heads)
        make = hydra.utils.instantiate(dict(base), _partial_=True, _convert_="all")
        self.members = nn.ModuleList([make(spec=spec, heads=self.heads) for _ in range(int(size))])

    @property
    def size(self) -> int:
        return len(self.members)

    def member_logits(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Each member's logits, [size, B, n_heads]."""
        return torch.stack([m(batch) for m in self.members], dim=0)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        return mean_probability_logit(self.member_logits(batch).float(), dim=0)

    def named_member_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Every member's parameters under their names inside the member (``wide.weight``, not
        ``members.0.wide.weight``): what ``model.param_groups``' prefixes are matched against."""
        for member in self.members:
            yield from member.named_parameters()

    def compile(self, *args: Any, **kwargs: Any) -> None:
        # training calls the members, not this module's forward: compile each of them
        for member in self.members:
            member.compile(*args, **kwargs)
