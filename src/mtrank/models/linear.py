"""Logistic regression per head, as a network the :class:`~mtrank.training.module.RankingModule` can train
(``model=logistic``): the baseline beside the shared-bottom and MMoE numbers.

For head h the logit is ``b_h + Σ_j w_h[feature j = value] + Σ_k v_h,k · x_k``: one weight per categorical
value (one-hot features, stored as an embedding of width ``len(heads)``; the out-of-vocabulary index 0 has its
own weight) plus a linear term in the normalised numerics. Heads share no parameter, so training them together
with Eq. 2 and equal task weights is the same as fitting one logistic regression per task; L2 is the optimiser's
``weight_decay``. ``dropout`` drops whole feature terms (a categorical feature's weight, a numeric's product) in
training, scaled by 1/(1-p) (feature dropout, a regulariser for sparse one-hot models). ``weight_decay`` (a number
for every head or ``{head: value}``, default none) is an L2 per head on the weights (not the bias): ``λ_h · w_h`` is
added to their gradient in the backward pass, as the optimiser's ``weight_decay`` does for a whole tensor, so that
a rare head's weights can be held closer to zero than a frequent head's (``model.net.wide_weight_decay`` of the
nets' wide part). A map's entries for tasks that are not heads of this model (a preset's value in a single-task
run) are skipped with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mtrank.data.spec import FeatureSpec

__all__ = ["LogisticNet"]

log = logging.getLogger(__name__)


class LogisticNet(nn.Module):
    """Per-head logistic regression on one-hot categoricals and numerics; ``forward(batch) -> [B, len(heads)]``."""

    def __init__(
        self,
        spec: FeatureSpec,
        heads: Sequence[str],
        head_bias_init: float | Mapping[str, float] | None = None,
        dropout: float = 0.0,
        weight_decay: float | Mapping[str, float] | None = None,
        weight_decay_key: str = "weight_decay",
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.p = float(dropout)
        heads = tuple(str(h) for h in heads)
        if not heads:
            raise ValueError("a network needs at least one head")
        if len(set(heads)) != len(heads):
            raise ValueError(f"head names must be unique, got {list(heads)}")
        if spec.n_categorical == 0 and spec.n_numeric == 0:
            raise ValueError("LogisticNet needs at least one categorical or numeric feature")
        self.heads = heads
        self.spec = spec
        n = len(heads)
        self.weights = nn.ModuleList()
        for f in spec.categorical:
            if f.cardinality <= 0:
                raise ValueError(f"categorical feature '{f.name}' has cardinality {f.cardinality}")
            emb = nn.Embedding(f.cardinality, n)
            nn.init.zeros_(emb.weight)
            self.weights.append(emb)
        self.numeric = nn.Linear(spec.n_numeric, n, bias=False) if spec.n_numeric else None
        if self.numeric is not None:
            nn.init.zeros_(self.numeric.weight)
        self.bias = nn.Parameter(torch.zeros(n))
        with torch.no_grad():
            for i, h in enumerate(heads):
                self.bias[i] = _bias_for(h, heads, head_bias_init)
        l2 = _per_head_l2(heads, weight_decay, weight_decay_key)
        # not persistent: checkpoints are the same with or without the option (it acts in training only)
        self.register_buffer("l2", torch.tensor(l2, dtype=torch.float32), persistent=False)
        if any(v > 0 for v in l2):
            for emb in self.weights:  # [cardinality, heads]
                emb.weight.register_hook(self._decay_hook(emb.weight, head_dim=1))
            if self.numeric is not None:  # [heads, n_numeric]
                self.numeric.weight.register_hook(self._decay_hook(self.numeric.weight, head_dim=0))

    def _decay_hook(self, param: nn.Parameter, head_dim: int):
        def hook(grad: Tensor) -> Tensor:
            l2 = self.l2.to(grad.dtype)
            return grad + param.detach() * (l2[None, :] if head_dim == 1 else l2[:, None])

        return hook

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Logits ``[B, len(heads)]``, columns in ``heads`` order."""
        parts = []
        if self.weights:
            cat = batch["categorical"]
            if cat.dim() != 2 or cat.shape[1] != len(self.weights):
                raise ValueError(f"batch['categorical'] must be [B, {len(self.weights)}], got {tuple(cat.shape)}")
            parts.extend(w(cat[:, j]) for j, w in enumerate(self.weights))
        if self.numeric is not None:
            num = batch["numeric"]
            if num.dim() != 2 or num.shape[1] != self.numeric.in_features:
                raise ValueError(f"batch['numeric'] must be [B, {self.numeric.in_features}], got {tuple(num.shape)}")
            num = num.float()
            parts.extend(num[:, k : k + 1] * self.numeric.weight[:, k] for k in range(num.shape[1]))
        terms = torch.stack(parts, dim=1)  # [B, n_features, n_heads]
        if self.training and self.p > 0:
            keep = torch.rand(terms.shape[0], terms.shape[1], 1, device=terms.device) >= self.p
            terms = terms * keep.to(terms.dtype) / (1.0 - self.p)
        return terms.sum(dim=1) + self.bias


def _per_head_l2(heads: tuple[str, ...], value: float | Mapping[str, float] | None, key: str) -> list[float]:
    if value is None:
        return [0.0] * len(heads)
    if isinstance(value, Mapping):
        extra = sorted(set(value) - set(heads))
        if extra:  # a preset's value for a task this run does not train (tasks.names=[t]): skipped, said once
            log.warning("%s names %s, not head(s) of this model %s: skipped", key, extra, list(heads))
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
            raise ValueError(f"{key} = {value!r}: expected a number ≥ 0 per head")
        out = [float(value.get(h, 0.0)) for h in heads]
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} = {value!r}: expected a number ≥ 0 or {{head: number}}")
    else:
        out = [float(value)] * len(heads)
    if any(not v >= 0 for v in out):
        raise ValueError(f"{key} = {value!r}: every value must be ≥ 0")
    return out


def _bias_for(head: str, heads: tuple[str, ...], init: float | Mapping[str, float] | None) -> float:
    if init is None:
        return 0.0
    if isinstance(init, Mapping):
        extra = sorted(set(init) - set(heads))
        if extra:
            raise ValueError(f"head_bias_init names unknown heads {extra}; heads are {list(heads)}")
        return float(init.get(head, 0.0))
    return float(init)
