"""`nfm`: Neural Factorization Machine.

Deck 002 writes it with factorised terms of orders 1, 2 and 3, concatenated and fed to dense
layers; He & Chua 2017 ("Neural Factorization Machines for Sparse Predictive Analytics") use the
2nd-order *bi-interaction pooling* alone. With e_i = x_i v_i over a row's active slots:

    h1 = Σ_i e_i                          (B, k)
    h2 = Σ_{i<j} e_i ∘ e_j                (B, k)  bi-interaction pooling (He & Chua eq. 4)
    h3 = Σ_{i<j<k} e_i ∘ e_j ∘ e_k        (B, k)  Newton's identity: O(k·n), no triple loop
    ŷ  = w0 + Σ_i w_i x_i + hᵀ MLP([h_o for o in orders])

`orders: [2]` is He & Chua's model; the default `[1, 2, 3]` is the deck's. `deck_powers: true`
uses the deck's literal h_o = (Σ_i e_i)^o (element-wise), which also counts self-products.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator
from torch import nn

from recforge.models.features.field_layers import FieldConfig, FieldCore, FieldLayout, field_family, grid_linear, grid_power, mlp
from recforge.models.features.interactions import deck_power, pairwise, triplewise


class NFMConfig(FieldConfig):
    orders: list[int] = Field(default_factory=lambda: [1, 2, 3])
    layers: list[int] = Field(default_factory=lambda: [64, 32])
    dropout: float = Field(0.1, ge=0, lt=1)
    deck_powers: bool = False

    @field_validator("orders")
    @classmethod
    def _orders(cls, v: list[int]) -> list[int]:
        if not v or any(o not in (1, 2, 3) for o in v) or len(set(v)) != len(v):
            raise ValueError(f"orders must be distinct values among 1, 2, 3; got {v}")
        return sorted(v)


class NFM(FieldCore):
    def __init__(self, layout: FieldLayout, config: NFMConfig) -> None:
        super().__init__(layout, config.dim)
        self.orders, self.deck_powers = tuple(config.orders), config.deck_powers
        width = config.dim * len(self.orders)
        self.bn = nn.BatchNorm1d(width)
        self.dnn = mlp([width, *config.layers], config.dropout)
        self.out = nn.Linear(config.layers[-1] if config.layers else width, 1)

    def terms(self, e: torch.Tensor) -> torch.Tensor:
        """(B, S, D) -> (B, D·len(orders)): the concatenated interaction terms."""
        if self.deck_powers:
            parts = [deck_power(e, o) for o in self.orders]
        else:
            by_order = {1: lambda: e.sum(1), 2: lambda: pairwise(e), 3: lambda: triplewise(e)}
            parts = [by_order[o]() for o in self.orders]
        return torch.cat(parts, dim=1)

    def forward(self, index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:  # (B, S) x2 -> (B,)
        h = self.bn(self.terms(self.embed(index, value)))  # (B, D·o)
        return self.linear(index, value) + self.out(self.dnn(h)).squeeze(-1)

    @property
    def grid_width(self) -> int:
        return self.embedding.embedding_dim * 4 + max((m.out_features for m in self.dnn if isinstance(m, nn.Linear)), default=0)

    def score_grid(self, parts) -> torch.Tensor:  # users x items at once: (B, C), from the power sums
        p = {r: grid_power(self.embedding, parts, r) for r in range(1, max(self.orders) + 1)}  # (B, C, D)
        if self.deck_powers:
            terms = [p[1].pow(o) for o in self.orders]
        else:
            by_order = {1: lambda: p[1], 2: lambda: 0.5 * (p[1] * p[1] - p[2]),
                        3: lambda: (p[1].pow(3) - 3.0 * p[1] * p[2] + 2.0 * p[3]) / 6.0}  # fmt: skip
            terms = [by_order[o]() for o in self.orders]
        h = torch.cat(terms, dim=-1)  # (B, C, D·o)
        b, c, w = h.shape
        deep = self.out(self.dnn(self.bn(h.reshape(b * c, w)))).view(b, c)
        return grid_linear(self.weight, self.bias, parts) + deep


def core(config: NFMConfig, layout: FieldLayout) -> NFM:
    return NFM(layout, config)


FAMILY = field_family("nfm", NFMConfig, core, paper="He & Chua 2017 (NFM); deck 002's 1st-3rd order form")
