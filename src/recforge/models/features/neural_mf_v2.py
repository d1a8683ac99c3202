"""`neural_mf_v2`: deck 002's Neural MF with side features, version 2: the same user and item
towers as V1, but their element-wise product goes through dense layers instead of being summed.

    r̂(u, i) = b + MLP(p_u ∘ q_i)
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from recforge.models.features.field_layers import FieldLayout, field_family, mlp
from recforge.models.features.neural_mf_v1 import NeuralMFConfig, Towers


class NeuralMFV2Config(NeuralMFConfig):
    head: list[int] = Field(default_factory=lambda: [16])


class NeuralMFV2(Towers):
    def __init__(self, layout: FieldLayout, config: NeuralMFV2Config) -> None:
        super().__init__(layout, config)
        width = config.layers[-1] if config.layers else None
        if width is None:
            raise ValueError("neural_mf_v2 needs tower layers (the product's width)")
        self.head = mlp([width, *config.head], 0.0)
        self.out = nn.Linear(config.head[-1] if config.head else width, 1)

    def forward(self, index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:  # (B, S) x2 -> (B,)
        p, q = self.towers(index, value)  # (B, H) each
        return self.bias + self.out(self.head(p * q)).squeeze(-1)


def core(config: NeuralMFV2Config, layout: FieldLayout) -> NeuralMFV2:
    return NeuralMFV2(layout, config)


FAMILY = field_family("neural_mf_v2", NeuralMFV2Config, core, paper="deck 002 (Neural MF with side features, V2)")
