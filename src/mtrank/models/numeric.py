"""Numeric features as embeddings (Gorishniy et al. 2022, "On Embeddings for Numerical Features in Tabular Deep
Learning") instead of one normalised scalar each.

``model.net.numeric_embedding`` selects the encoding of the numeric features in the feature layer:

* ``null`` (default): the normalised scalars enter the MLP as they are (and, with ``numeric_projection``, one
  ``Linear(n_numeric, d)`` vector joins the interaction);
* ``{type: piecewise_linear, n_bins: 16}``: each numeric x_j is encoded by the piecewise-linear encoding over
  ``n_bins`` quantile bins of its train distribution (PLE: bin t gives 1 below x_j's bin, 0 above it and the
  position inside x_j's own bin), then ``Linear(n_bins, d)`` per feature: one d-sized vector per numeric feature;
* ``{type: periodic, n_frequencies: 16, sigma: 1.0}``: ``[sin(2π c x), cos(2π c x)]`` with trainable
  frequencies c ~ N(0, σ²) per feature, then ``Linear(2 k, d)`` and ReLU (the PLR variant).

The bin edges of the piecewise-linear encoding are fitted on train rows (:meth:`NumericEmbedding.fit`, called by
:func:`fit_numeric_encoders` before training) and stored as a buffer, so checkpoints carry them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["NumericEmbedding", "build_numeric_embedding", "fit_numeric_encoders", "needs_fitting", "NUMERIC_EMBEDDINGS"]

NUMERIC_EMBEDDINGS = ("piecewise_linear", "periodic")


class NumericEmbedding(nn.Module):
    """``[B, n_numeric]`` -> ``[B, n_numeric, d]``: one embedding-sized vector per numeric feature."""

    def __init__(
        self,
        n_numeric: int,
        dim: int,
        type: str = "piecewise_linear",
        n_bins: int = 16,
        n_frequencies: int = 16,
        sigma: float = 1.0,
    ) -> None:
        super().__init__()
        key = "model.net.numeric_embedding"
        if type not in NUMERIC_EMBEDDINGS:
            raise ValueError(f"{key}.type = {type!r}: expected one of {list(NUMERIC_EMBEDDINGS)}")
        if n_numeric <= 0:
            raise ValueError(f"{key} needs numeric features, the data has none")
        self.type, self.n_numeric, self.dim = type, int(n_numeric), int(dim)
        if type == "piecewise_linear":
            if int(n_bins) < 2:
                raise ValueError(f"{key}.n_bins must be >= 2, got {n_bins}")
            self.n_bins = int(n_bins)
            # default edges: even on [-2, 2] (z-scored inputs), replaced by train quantiles in fit()
            edges = torch.linspace(-2.0, 2.0, self.n_bins + 1).repeat(self.n_numeric, 1)
            self.register_buffer("edges", edges)
            self.weight = nn.Parameter(torch.empty(self.n_numeric, self.n_bins, self.dim))
            self.bias = nn.Parameter(torch.zeros(self.n_numeric, self.dim))
            nn.init.normal_(self.weight, std=self.n_bins**-0.5)
        else:
            if int(n_frequencies) < 1:
                raise ValueError(f"{key}.n_frequencies must be >= 1, got {n_frequencies}")
            if not float(sigma) > 0:
                raise ValueError(f"{key}.sigma must be > 0, got {sigma}")
            self.frequencies = nn.Parameter(torch.randn(self.n_numeric, int(n_frequencies)) * float(sigma))
            self.weight = nn.Parameter(torch.empty(self.n_numeric, 2 * int(n_frequencies), self.dim))
            self.bias = nn.Parameter(torch.zeros(self.n_numeric, self.dim))
            nn.init.normal_(self.weight, std=(2 * int(n_frequencies)) ** -0.5)

    @torch.no_grad()
    def fit(self, x: Tensor) -> None:
        """Quantile bin edges per feature from train rows ``x [N, n_numeric]`` (piecewise-linear only). Repeated
        quantiles (a feature with few distinct values) collapse into bins of zero width, which encode nothing."""
        if self.type != "piecewise_linear":
            return
        q = torch.linspace(0.0, 1.0, self.n_bins + 1, dtype=torch.float64)
        edges = torch.quantile(x.double(), q, dim=0).T  # [n_numeric, n_bins + 1]
        edges = torch.cummax(edges, dim=1).values
        self.edges.copy_(edges.to(self.edges.dtype))

    def encode(self, x: Tensor) -> Tensor:
        """The fixed encoding ``[B, n_numeric, n_bins]`` (PLE) or ``[B, n_numeric, 2k]`` (periodic)."""
        if self.type == "piecewise_linear":
            lo, hi = self.edges[:, :-1], self.edges[:, 1:]  # [n, T]
            width = hi - lo
            pos = (x.unsqueeze(-1) - lo) / width.clamp_min(1e-12)
            pos = torch.where(width > 0, pos, (x.unsqueeze(-1) >= hi).to(pos.dtype))
            # first bin open to the left, last open to the right (values outside the train range extrapolate)
            inner = pos.clamp(0.0, 1.0)
            enc = torch.cat(
                [
                    torch.minimum(pos[..., :1], torch.ones_like(pos[..., :1])),
                    inner[..., 1:-1],
                    torch.maximum(pos[..., -1:], torch.zeros_like(pos[..., -1:])),
                ],
                dim=-1,
            )
            return enc
        angles = 2 * math.pi * x.unsqueeze(-1) * self.frequencies
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.einsum("bnt,ntd->bnd", self.encode(x.float()), self.weight) + self.bias
        return torch.relu(out) if self.type == "periodic" else out


def build_numeric_embedding(options: Mapping[str, Any] | None, n_numeric: int, dim: int) -> NumericEmbedding | None:
    """``model.net.numeric_embedding`` (null or a mapping with ``type`` and its settings) -> the module or None."""
    if options is None or options is False or n_numeric == 0:
        return None  # off, or nothing to embed (a data set without numeric features)
    if not isinstance(options, Mapping):
        raise ValueError(f"model.net.numeric_embedding = {options!r}: expected null or a mapping with 'type'")
    options = dict(options)
    allowed = {"type", "n_bins", "n_frequencies", "sigma"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"model.net.numeric_embedding has unknown key(s) {unknown}; allowed: {sorted(allowed)}")
    if "type" not in options:
        raise ValueError(f"model.net.numeric_embedding needs 'type', one of {list(NUMERIC_EMBEDDINGS)}")
    return NumericEmbedding(n_numeric, dim, **options)


def needs_fitting(net: nn.Module) -> bool:
    """Whether ``net`` has numeric encodings to fit on train rows before training."""
    return any(isinstance(m, NumericEmbedding) and m.type == "piecewise_linear" for m in net.modules())


def fit_numeric_encoders(net: nn.Module, batches: Iterable[Mapping[str, Tensor]], max_rows: int = 1_000_000) -> int:
    """Fit every :class:`NumericEmbedding` of ``net`` on the numerics of ``batches`` (train rows, up to
    ``max_rows``); returns the number of rows used (0 when the net has nothing to fit)."""
    modules = [m for m in net.modules() if isinstance(m, NumericEmbedding) and m.type == "piecewise_linear"]
    if not modules:
        return 0
    parts, n = [], 0
    for batch in batches:
        parts.append(batch["numeric"].float().cpu())
        n += parts[-1].shape[0]
        if n >= max_rows:
            break
    if not parts:
        raise ValueError("model.net.numeric_embedding: no train rows to fit the quantile bins on")
    x = torch.cat(parts)[:max_rows]
    for m in modules:
        m.fit(x)
    return int(x.shape[0])
