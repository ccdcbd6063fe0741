"""Soft sharing: Multi-gate Mixture-of-Experts (MMoE) and its single-level PLE variant (CGC).

Both reuse :class:`~mtrank.models.networks.MultiHeadNet` (feature layer, towers) and replace only the
sharing step, :meth:`head_inputs`:

* **MMoE** (Ma et al. 2018; used for ranking by Zhao et al. 2019, the post's reference [2]):
  ``n_experts`` expert MLPs over the shared feature vector ``x``; for every head k a softmax gate
  ``g^k(x) = softmax(W_k x)`` weighs the experts, and the head's tower reads
  ``f^k(x) = Σ_i g^k_i(x) · expert_i(x)``.
* **PLE / CGC** (Tang et al. 2020, one extraction level): besides the ``n_experts`` shared experts,
  every head owns ``n_task_experts`` experts of its own; head k's gate mixes its own experts and the
  shared ones only, so a head can keep capacity that other heads' gradients never touch.

Every gate is a :class:`~mtrank.models.layers.SoftmaxGate` in the ``gates`` ModuleDict (keyed by head),
whose output ``[B, n_experts_of_head]`` lists the weights in the order of :meth:`gate_expert_names`;
:class:`mtrank.training.callbacks.GateStatistics` hooks these modules to log the mean weight per expert per head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mtrank.data.spec import FeatureSpec
from mtrank.models.layers import MLP, SoftmaxGate
from mtrank.models.networks import MultiHeadNet

__all__ = ["ExpertMixtureNet", "MMoENet", "PLENet"]


class ExpertMixtureNet(MultiHeadNet):
    """FeatureLayer -> experts (shared + optional per-head) -> one softmax gate per head -> towers.

    Args:
        spec, heads, embedding_dim, interaction, numeric_projection: as for
            :class:`~mtrank.models.networks.SharedBottomNet`.
        n_experts: number of shared experts (every head's gate sees them).
        expert: hidden sizes of each expert MLP (all experts alike); the last one is the size of the
            mixture that the towers read. Must not be empty.
        n_task_experts: experts owned by each head (0 = MMoE; > 0 = PLE's CGC layer).
        tower: hidden sizes of each head's tower, then ``Linear(-> 1)``.
        dropout, norm, activation: for experts and towers alike.
        gate_temperature: softmax temperature of the gates (1 = the paper's gate).
        head_bias_init: each head's final bias (float or {head: value}), e.g. the prior log-odds.
        options: ``numeric_embedding``, ``wide``, ``wide_dropout``, ``wide_weight_decay`` (see :class:`MultiHeadNet`).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        heads: Sequence[str],
        embedding_dim: int = 16,
        interaction: str = "dot",
        n_experts: int = 4,
        expert: Sequence[int] = (128, 64),
        n_task_experts: int = 0,
        tower: Sequence[int] = (64,),
        dropout: float = 0.0,
        norm: str | None = None,
        activation: str = "relu",
        gate_temperature: float = 1.0,
        numeric_projection: bool = True,
        head_bias_init: float | Mapping[str, float] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            spec,
            heads,
            embedding_dim=embedding_dim,
            interaction=interaction,
            numeric_projection=numeric_projection,
            **options,
        )
        n_experts, n_task_experts = int(n_experts), int(n_task_experts)
        if n_experts < 0 or n_task_experts < 0:
            raise ValueError(f"n_experts ({n_experts}) and n_task_experts ({n_task_experts}) must be >= 0")
        if n_experts + n_task_experts == 0:
            raise ValueError("a mixture needs experts: set model.net.n_experts (or n_task_experts) >= 1")
        if len(tuple(expert)) == 0:
            raise ValueError("model.net.expert must list at least one hidden size (the expert output size)")
        self.n_experts = n_experts
        self.n_task_experts = n_task_experts
        in_dim = self.feature_layer.out_dim

        def make_expert() -> MLP:
            return MLP(in_dim, expert, dropout=dropout, activation=activation, norm=norm)

        # experts[0:n_experts] are shared; then n_task_experts per head, in ``heads`` order
        self.experts = nn.ModuleList([make_expert() for _ in range(n_experts + n_task_experts * len(self.heads))])
        self.expert_dim = self.experts[0].out_dim
        self.gates = nn.ModuleDict()
        for k, h in enumerate(self.heads):
            idx = self._expert_indices(k)
            self.register_buffer(f"_gate_index_{k}", torch.tensor(idx, dtype=torch.long), persistent=False)
            self.gates[h] = SoftmaxGate(in_dim, len(idx), temperature=gate_temperature)
        self._build_towers(self.expert_dim, tower, dropout, activation, norm, head_bias_init)

    def _expert_indices(self, k: int) -> list[int]:
        own = range(self.n_experts + k * self.n_task_experts, self.n_experts + (k + 1) * self.n_task_experts)
        return list(range(self.n_experts)) + list(own)

    def gate_expert_names(self, head: str) -> list[str]:
        """Names of the experts head ``head``'s gate weighs, in the order of its output columns:
        ``expert_<i>`` for the shared experts, then ``own_<j>`` for the head's own (PLE)."""
        if head not in self.heads:
            raise KeyError(f"unknown head '{head}'; heads are {list(self.heads)}")
        return [f"expert_{i}" for i in range(self.n_experts)] + [f"own_{j}" for j in range(self.n_task_experts)]

    def expert_outputs(self, features: Tensor) -> Tensor:
        """All experts' outputs ``[B, n_experts_total, expert_dim]``."""
        return torch.stack([e(features) for e in self.experts], dim=1)

    def mixture(self, features: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Per head: the gated mixture ``[B, expert_dim]`` and the gate weights ``[B, n_experts_of_head]``."""
        outs = self.expert_outputs(features)
        inputs, weights = [], []
        for k, h in enumerate(self.heads):
            w = self.gates[h](features)
            chosen = outs if self.n_task_experts == 0 else outs.index_select(1, getattr(self, f"_gate_index_{k}"))
            inputs.append(torch.einsum("be,bed->bd", w, chosen))
            weights.append(w)
        return inputs, weights

    def head_inputs(self, features: Tensor) -> list[Tensor]:
        return self.mixture(features)[0]

    def gate_weights(self, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Gate weights per head ``{head: [B, n_experts_of_head]}`` for a batch (rows sum to 1)."""
        _, weights = self.mixture(self.forward_features(batch))
        return dict(zip(self.heads, weights))


class MMoENet(ExpertMixtureNet):
    """MMoE: ``n_experts`` shared experts, one softmax gate per head, one tower per head (the other arguments
    as for :class:`ExpertMixtureNet`)."""

    def __init__(self, spec: FeatureSpec, heads: Sequence[str], n_experts: int = 4, **kwargs: Any) -> None:
        if int(n_experts) < 1:
            raise ValueError(f"MMoE needs model.net.n_experts >= 1, got {n_experts}")
        super().__init__(spec, heads, n_experts=n_experts, n_task_experts=0, **kwargs)


class PLENet(ExpertMixtureNet):
    """PLE with one extraction level (CGC): shared experts plus ``n_task_experts`` per head; head k's gate
    mixes its own experts and the shared ones (the other arguments as for :class:`ExpertMixtureNet`)."""

    def __init__(
        self, spec: FeatureSpec, heads: Sequence[str], n_experts: int = 2, n_task_experts: int = 1, **kwargs: Any
    ) -> None:
        if int(n_task_experts) < 1:
            raise ValueError(f"PLE needs model.net.n_task_experts >= 1 (0 is MMoE), got {n_task_experts}")
        super().__init__(spec, heads, n_experts=n_experts, n_task_experts=n_task_experts, **kwargs)
