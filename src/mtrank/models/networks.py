"""Multi-head networks: feature layer -> sharing structure -> one tower + logit per head.

The network is split into three steps so that other sharing structures (e.g. MMoE) can reuse the
rest by overriding :meth:`MultiHeadNet.head_inputs` only:

1. :meth:`forward_features`  batch -> flat features ``[B, F]`` (the :class:`FeatureLayer`);
2. :meth:`head_inputs`       features -> one representation per head (shared bottom: the same trunk
   output for every head; MMoE: one gated mixture of experts per head);
3. :meth:`forward_heads`     representations -> logits ``[B, len(heads)]`` through the towers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mtrank.data.spec import FeatureSpec
from mtrank.models.conditional import FORMS, implied_links, own_prior_logits, tie_logits
from mtrank.models.layers import MLP, FeatureLayer
from mtrank.models.linear import LogisticNet

__all__ = ["Tower", "MultiHeadNet", "SharedBottomNet"]


class Tower(nn.Module):
    """A per-head MLP followed by ``Linear(-> 1)`` that produces the head's logit."""

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        dropout: float = 0.0,
        activation: str = "relu",
        norm: str | None = None,
    ) -> None:
        super().__init__()
        self.mlp = MLP(in_dim, hidden, dropout=dropout, activation=activation, norm=norm)
        self.out = nn.Linear(self.mlp.out_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.mlp(x)).squeeze(-1)


def _resolve_bias_init(heads: tuple[str, ...], head_bias_init: float | Mapping[str, float] | None) -> dict[str, float]:
    if head_bias_init is None:
        return {}
    if isinstance(head_bias_init, Mapping):
        extra = sorted(set(head_bias_init) - set(heads))
        if extra:
            raise ValueError(f"head_bias_init names unknown heads {extra}; heads are {list(heads)}")
        return {h: float(v) for h, v in head_bias_init.items()}
    return {h: float(head_bias_init) for h in heads}


class MultiHeadNet(nn.Module):
    """Base class: feature layer + towers; subclasses define the sharing part (:meth:`head_inputs`).

    Options every sharing structure has:

    * ``numeric_embedding``: numeric features as embeddings (:mod:`mtrank.models.numeric`), null = scalars;
    * ``wide``: a wide (linear) part beside the deep one (Wide & Deep, Cheng et al. 2016): each head's logit is
      the deep logit plus a per-head logistic regression over the one-hot categoricals and the numerics
      (:class:`~mtrank.models.linear.LogisticNet`, zero-initialised, ``wide_dropout`` its feature dropout), so
      the deep model contains the linear baseline; ``wide_weight_decay`` (a number or ``{head: value}``) an L2
      per head on its weights, on top of the optimiser's;
    * ``implied``: ``{child: parent}`` engagement types that imply another (every long click is a click), their
      heads tied by ``implied_form`` (``conditional``: ``p(child) = p(parent) · p(child | parent)``, ESMM;
      ``union``: ``p(parent) = p(child) + (1 - p(child)) · p(parent | not child)``; :mod:`mtrank.models.conditional`);
      null = every head on its own.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        heads: Sequence[str],
        embedding_dim: int = 16,
        interaction: str = "dot",
        numeric_projection: bool = True,
        numeric_embedding: Mapping | None = None,
        wide: bool = False,
        wide_dropout: float = 0.0,
        wide_weight_decay: float | Mapping[str, float] | None = None,
        implied: Mapping[str, str] | None = None,
        implied_form: str = "conditional",
    ) -> None:
        super().__init__()
        heads = tuple(str(h) for h in heads)
        if not heads:
            raise ValueError("a network needs at least one head")
        if len(set(heads)) != len(heads):
            raise ValueError(f"head names must be unique, got {list(heads)}")
        self.heads = heads
        if implied_form not in FORMS:
            raise ValueError(f"model.net.implied_form = {implied_form!r}: expected one of {list(FORMS)}")
        self.implied_links = implied_links(heads, implied)  # [(child, parent)], parents first
        self.implied_form = implied_form
        self.spec = spec
        self.feature_layer = FeatureLayer(
            spec,
            embedding_dim=embedding_dim,
            interaction=interaction,
            numeric_projection=numeric_projection,
            numeric_embedding=numeric_embedding,
        )
        self.towers = nn.ModuleDict()
        if not isinstance(wide, bool):
            raise ValueError(f"model.net.wide = {wide!r}: expected true or false")
        if not 0.0 <= float(wide_dropout) < 1.0:
            raise ValueError(f"model.net.wide_dropout must be in [0, 1), got {wide_dropout}")
        # the deep towers keep the heads' bias (head_bias_init): the wide part starts at exactly zero
        self.wide = None
        if wide:
            self.wide = LogisticNet(
                spec,
                heads,
                head_bias_init=None,
                dropout=float(wide_dropout),
                weight_decay=wide_weight_decay,
                weight_decay_key="model.net.wide_weight_decay",
            )

    def _build_towers(
        self,
        in_dim: int,
        tower: Sequence[int],
        dropout: float,
        activation: str,
        norm: str | None,
        head_bias_init: float | Mapping[str, float] | None,
    ) -> None:
        for h in self.heads:
            self.towers[h] = Tower(in_dim, tower, dropout=dropout, activation=activation, norm=norm)
        # a tied head's tower starts where its output starts at the head's prior (head_bias_init)
        bias = own_prior_logits(
            _resolve_bias_init(self.heads, head_bias_init), self.heads, self.implied_links, self.implied_form
        )
        for h, b in bias.items():
            nn.init.constant_(self.towers[h].out.bias, b)

    # --- the three steps -------------------------------------------------------------------------
    def forward_features(self, batch: Mapping[str, Tensor]) -> Tensor:
        return self.feature_layer(batch)

    def head_inputs(self, features: Tensor) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_heads(self, inputs: Sequence[Tensor]) -> Tensor:
        if len(inputs) != len(self.heads):
            raise ValueError(f"expected {len(self.heads)} head inputs, got {len(inputs)}")
        return torch.stack([self.towers[h](x) for h, x in zip(self.heads, inputs)], dim=1)

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """Logits ``[B, len(heads)]``, columns in ``heads`` order."""
        logits = self.forward_heads(self.head_inputs(self.forward_features(batch)))
        if self.wide is not None:
            logits = logits + self.wide(batch)
        return tie_logits(logits, self.implied_links, self.implied_form)


class SharedBottomNet(MultiHeadNet):
    """FeatureLayer -> shared MLP trunk -> one tower MLP + ``Linear(->1)`` per head.

    ``heads`` is usually ``spec.tasks`` (multi-task, Eq. 2) or ``("engagement",)`` (the binary
    baseline, Eq. 1). ``head_bias_init`` sets each head's final bias (a float for all heads, or a
    mapping head -> value; heads left out keep PyTorch's default init), e.g. the prior log-odds
    ``log(p / (1 - p))`` of the task, which helps rare tasks.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        heads: Sequence[str],
        embedding_dim: int = 16,
        interaction: str = "dot",
        trunk: Sequence[int] = (256, 128),
        tower: Sequence[int] = (64,),
        dropout: float = 0.0,
        norm: str | None = None,
        activation: str = "relu",
        numeric_projection: bool = True,
        head_bias_init: float | Mapping[str, float] | None = None,
        **options,
    ) -> None:
        super().__init__(
            spec,
            heads,
            embedding_dim=embedding_dim,
            interaction=interaction,
            numeric_projection=numeric_projection,
            **options,
        )
        self.trunk = MLP(self.feature_layer.out_dim, trunk, dropout=dropout, activation=activation, norm=norm)
        self._build_towers(self.trunk.out_dim, tower, dropout, activation, norm, head_bias_init)

    def shared_representation(self, features: Tensor) -> Tensor:
        return self.trunk(features)

    def head_inputs(self, features: Tensor) -> list[Tensor]:
        shared = self.shared_representation(features)
        return [shared] * len(self.heads)
