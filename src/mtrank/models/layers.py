"""Building blocks: a configurable MLP and the feature layer (embeddings + DLRM-style interaction)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from mtrank.data.spec import FeatureSpec
from mtrank.models.numeric import build_numeric_embedding

__all__ = ["MLP", "FeatureLayer", "SoftmaxGate", "make_activation", "make_norm"]

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}
_NORMS = ("layernorm", "layer", "ln", "batchnorm", "batch", "bn", "none")


def make_activation(name: str) -> nn.Module:
    key = str(name).lower()
    if key not in _ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; allowed: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[key]()


def make_norm(name: str | None, dim: int) -> nn.Module | None:
    if name is None:
        return None
    key = str(name).lower()
    if key in ("layernorm", "layer", "ln"):
        return nn.LayerNorm(dim)
    if key in ("batchnorm", "batch", "bn"):
        return nn.BatchNorm1d(dim)
    if key == "none":
        return None
    raise ValueError(f"unknown norm '{name}'; allowed: None or one of {list(_NORMS)}")


class MLP(nn.Module):
    """``Linear -> (LayerNorm | BatchNorm1d | nothing) -> activation -> Dropout`` per hidden layer.

    With an empty ``hidden`` the module is the identity and ``out_dim == in_dim``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        dropout: float = 0.0,
        activation: str = "relu",
        norm: str | None = None,
    ) -> None:
        super().__init__()
        if in_dim <= 0:
            raise ValueError(f"MLP in_dim must be positive, got {in_dim}")
        layers: list[nn.Module] = []
        dim = int(in_dim)
        for h in hidden:
            h = int(h)
            if h <= 0:
                raise ValueError(f"MLP hidden sizes must be positive, got {list(hidden)}")
            layers.append(nn.Linear(dim, h))
            n = make_norm(norm, h)
            if n is not None:
                layers.append(n)
            layers.append(make_activation(activation))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            dim = h
        self.in_dim = int(in_dim)
        self.out_dim = dim
        self.net = nn.Sequential(*layers) if layers else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class FeatureLayer(nn.Module):
    """Embeds a batch (see :mod:`mtrank.data.spec`) into one flat vector per row.

    * one ``nn.Embedding(cardinality, embedding_dim)`` per categorical feature (index 0, the
      out-of-vocabulary bucket, is an ordinary learned row);
    * the numeric features, if any, enter as dense inputs as they are, and, with
      ``numeric_projection=True``, are also projected by a ``Linear(n_numeric, embedding_dim)`` to one
      more embedding-sized vector so that they take part in the interaction;
    * with ``numeric_embedding`` (see :mod:`mtrank.models.numeric`) every numeric feature is instead one
      embedding-sized vector (piecewise-linear or periodic encoding), and the scalars are not concatenated;
    * ``interaction="dot"`` appends the DLRM-style pairwise dot products of all embedding-sized vectors
      (the strict upper triangle of the Gram matrix, no diagonal); ``"none"`` only concatenates.

    Output layout: ``[embeddings (k*d) | numerics (n_numeric) | dots (k*(k-1)/2)]`` where k is the number
    of embedding-sized vectors (categoricals + the numeric projection). Works with zero numeric or zero
    categorical features (not both).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        embedding_dim: int = 16,
        interaction: str = "dot",
        numeric_projection: bool = True,
        numeric_embedding: Mapping | None = None,
    ) -> None:
        super().__init__()
        interaction = str(interaction).lower()
        if interaction not in ("dot", "none"):
            raise ValueError(f"unknown interaction '{interaction}'; allowed: ['dot', 'none']")
        if spec.n_categorical == 0 and spec.n_numeric == 0:
            raise ValueError("FeatureLayer needs at least one categorical or numeric feature")
        if embedding_dim <= 0:
            raise ValueError(f"embedding_dim must be positive, got {embedding_dim}")
        self.embedding_dim = d = int(embedding_dim)
        self.interaction = interaction
        self.n_categorical = spec.n_categorical
        self.n_numeric = spec.n_numeric
        self.feature_names = tuple(f.name for f in spec.categorical)

        self.embeddings = nn.ModuleList()
        for f in spec.categorical:
            if f.cardinality <= 0:
                raise ValueError(f"categorical feature '{f.name}' has cardinality {f.cardinality}")
            emb = nn.Embedding(f.cardinality, d)
            # std 1/sqrt(d) keeps the pairwise dot products O(1/sqrt(d)) at initialisation
            nn.init.normal_(emb.weight, mean=0.0, std=d**-0.5)
            self.embeddings.append(emb)

        self.numeric_embedding = build_numeric_embedding(numeric_embedding, self.n_numeric, d)
        self.numeric_proj: nn.Linear | None = None
        if numeric_projection and self.n_numeric > 0 and self.numeric_embedding is None:
            self.numeric_proj = nn.Linear(self.n_numeric, d)
        n_num_vectors = self.n_numeric if self.numeric_embedding is not None else int(self.numeric_proj is not None)
        self.n_scalars = 0 if self.numeric_embedding is not None else self.n_numeric

        self.n_vectors = self.n_categorical + n_num_vectors
        self.n_interactions = self.n_vectors * (self.n_vectors - 1) // 2 if interaction == "dot" else 0
        if self.n_interactions > 0:
            iu = torch.triu_indices(self.n_vectors, self.n_vectors, offset=1)
            self.register_buffer("_triu_rows", iu[0], persistent=False)
            self.register_buffer("_triu_cols", iu[1], persistent=False)
        self.out_dim = self.n_vectors * d + self.n_scalars + self.n_interactions

    def embed(self, batch: Mapping[str, Tensor]) -> tuple[Tensor | None, Tensor | None]:
        """Return (stacked embedding-sized vectors [B, k, d] or None, numerics [B, n_num] or None)."""
        vectors: list[Tensor] = []
        if self.n_categorical:
            cat = batch["categorical"]
            if cat.dim() != 2 or cat.shape[1] != self.n_categorical:
                raise ValueError(f"batch['categorical'] must be [B, {self.n_categorical}], got {tuple(cat.shape)}")
            vectors.extend(emb(cat[:, j]) for j, emb in enumerate(self.embeddings))
        num = None
        if self.n_numeric:
            num = batch["numeric"]
            if num.dim() != 2 or num.shape[1] != self.n_numeric:
                raise ValueError(f"batch['numeric'] must be [B, {self.n_numeric}], got {tuple(num.shape)}")
            num = num.float()
            if self.numeric_proj is not None:
                vectors.append(self.numeric_proj(num))
            if self.numeric_embedding is not None:
                vectors.extend(self.numeric_embedding(num).unbind(1))
                num = None  # encoded as vectors, not concatenated as scalars
        stacked = torch.stack(vectors, dim=1) if vectors else None
        return stacked, num

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        stacked, num = self.embed(batch)
        parts: list[Tensor] = []
        if stacked is not None:
            parts.append(stacked.flatten(1))
        if num is not None:
            parts.append(num)
        if self.n_interactions > 0:
            gram = torch.bmm(stacked, stacked.transpose(1, 2))  # [B, k, k]
            parts.append(gram[:, self._triu_rows, self._triu_cols])
        return torch.cat(parts, dim=1)


class SoftmaxGate(nn.Module):
    """A mixture gate: ``softmax(Linear(x) / temperature)`` over ``n_experts``; rows of the output sum to 1.

    The output ``[B, n_experts]`` is the weight each expert gets in the mixture for each row (MMoE's
    ``g^k(x)``, Zhao et al. 2019 / Ma et al. 2018). A lower ``temperature`` makes the gate sharper.
    """

    def __init__(self, in_dim: int, n_experts: int, temperature: float = 1.0) -> None:
        super().__init__()
        if in_dim <= 0:
            raise ValueError(f"SoftmaxGate in_dim must be positive, got {in_dim}")
        if n_experts <= 0:
            raise ValueError(f"SoftmaxGate needs at least one expert, got n_experts={n_experts}")
        if not temperature > 0:
            raise ValueError(f"SoftmaxGate temperature must be > 0, got {temperature}")
        self.n_experts = int(n_experts)
        self.temperature = float(temperature)
        self.proj = nn.Linear(int(in_dim), self.n_experts)

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.proj(x) / self.temperature, dim=-1)
