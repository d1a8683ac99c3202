"""`lr`: logistic (or, with `objective: mse`, linear) regression over the sparse and crossed fields
— the wide part of Wide & Deep alone, the CTR baseline the DeepFM paper compares against (Guo et
al. 2017, Table 2; McMahan et al. 2013 for LR at ad-click scale).

ŷ(x) = w0 + Σ_i w_i x_i
"""

from __future__ import annotations

import torch
from torch import nn

from recforge.models.features.field_layers import FieldConfig, FieldLayout, field_family, grid_linear
from recforge.models.layers import lookup


class LRConfig(FieldConfig):
    pass


class LR(nn.Module):
    def __init__(self, layout: FieldLayout) -> None:
        super().__init__()
        self.layout = layout
        self.weight = nn.Embedding(layout.n_features, 1)
        self.bias = nn.Parameter(torch.zeros(()))
        nn.init.zeros_(self.weight.weight)

    def forward(self, index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:  # (B, S) x2 -> (B,)
        return self.bias + (lookup(self.weight, index).squeeze(-1) * value).sum(-1)

    def score_grid(self, parts) -> torch.Tensor:  # users x items at once: (B, C)
        return grid_linear(self.weight, self.bias, parts)


def core(config: LRConfig, layout: FieldLayout) -> LR:
    return LR(layout)


FAMILY = field_family("lr", LRConfig, core, paper="Guo et al. 2017 (the LR baseline); McMahan et al. 2013")
