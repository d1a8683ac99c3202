"""`deepfm`: DeepFM (Guo, Tang, Ye, Li & He 2017, "DeepFM: A Factorization-Machine based Neural
Network for CTR Prediction").

An FM component and a DNN share one embedding table: the DNN reads the fields' embeddings
concatenated (a multi-hot field's slots pooled), the FM its 1st and 2nd order terms.

    ŷ = w0 + Σ_i w_i x_i + Σ_{i<j} ⟨v_i, v_j⟩ x_i x_j + MLP([e_field_1, …, e_field_m])
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from recforge.models.features.field_layers import (
    FieldConfig,
    FieldCore,
    FieldLayout,
    field_family,
    grid_first_layer,
    grid_linear,
    grid_power,
    mlp,
)
from recforge.models.features.interactions import pairwise


class DeepFMConfig(FieldConfig):
    layers: list[int] = Field(default_factory=lambda: [128, 64])
    dropout: float = Field(0.1, ge=0, lt=1)


class DeepFM(FieldCore):
    def __init__(self, layout: FieldLayout, config: DeepFMConfig) -> None:
        super().__init__(layout, config.dim)
        width = layout.n_fields * config.dim
        self.dnn = mlp([width, *config.layers], config.dropout)
        self.out = nn.Linear(config.layers[-1] if config.layers else width, 1)

    def forward(self, index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:  # (B, S) x2 -> (B,)
        e = self.embed(index, value)  # (B, S, D)
        fm = self.linear(index, value) + pairwise(e).sum(-1)  # (B,)
        deep = self.out(self.dnn(self.fields(e).flatten(1))).squeeze(-1)  # (B, F·D) -> (B,)
        return fm + deep

    @property
    def grid_width(self) -> int:
        return self.embedding.embedding_dim * 3 + self.dnn[0].out_features if len(self.dnn) else 64

    def score_grid(self, parts) -> torch.Tensor:  # users x items at once: (B, C)
        p1, p2 = grid_power(self.embedding, parts, 1), grid_power(self.embedding, parts, 2)
        fm = grid_linear(self.weight, self.bias, parts) + 0.5 * (p1 * p1 - p2).sum(-1)
        fields = list(range(self.layout.n_fields))
        if not len(self.dnn):  # no tower: the output layer reads the embeddings themselves
            return fm + grid_first_layer(self.embedding, self.out, parts, self.slot_field, fields).squeeze(-1)
        first = grid_first_layer(self.embedding, self.dnn[0], parts, self.slot_field, fields)
        return fm + self.out(self.dnn[1:](first)).squeeze(-1)


def core(config: DeepFMConfig, layout: FieldLayout) -> DeepFM:
    return DeepFM(layout, config)


FAMILY = field_family("deepfm", DeepFMConfig, core, paper="Guo et al. 2017 (DeepFM)")
