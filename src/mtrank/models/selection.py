"""The net of per-head model selection: each head scored with the weights of its own best validation epoch.

:class:`PerHeadNet` holds one copy of a net per distinct best epoch and scores head h with the copy of h's epoch;
the callback that builds it after fitting is :class:`mtrank.training.selection.PerHeadSelection`
(``callbacks.per_head_selection``). Checkpoints name this class as the net's ``_target_``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from mtrank.data.spec import FeatureSpec

__all__ = ["PerHeadNet"]


class PerHeadNet(nn.Module):
    """``n_copies`` copies of the net described by ``base``; head h's logit comes from copy ``head_copy[h]``."""

    def __init__(
        self, spec: FeatureSpec, heads: Sequence[str], base: Mapping[str, Any], head_copy: Sequence[int], n_copies: int
    ) -> None:
        super().__init__()
        if isinstance(base, DictConfig):
            base = OmegaConf.to_container(base, resolve=True)
        self.heads = tuple(str(h) for h in heads)
        head_copy = [int(i) for i in head_copy]
        if len(head_copy) != len(self.heads) or not all(0 <= i < int(n_copies) for i in head_copy):
            raise ValueError(f"head_copy {head_copy} must give a copy in [0, {n_copies}) for each head {self.heads}")
        self.spec = spec
        make = hydra.utils.instantiate(dict(base), _partial_=True, _convert_="all")
        self.copies = nn.ModuleList([make(spec=spec, heads=self.heads) for _ in range(int(n_copies))])
        self.register_buffer("head_copy", torch.tensor(head_copy, dtype=torch.long))

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        idx = self.head_copy.tolist()
        logits = {i: self.copies[i](batch) for i in sorted(set(idx))}
        return torch.stack([logits[i][:, h] for h, i in enumerate(idx)], dim=1)
