"""`fm`: the factorisation machine, 2nd order (Rendle 2010, "Factorization Machines").

ŷ(x) = w0 + Σ_i w_i x_i + Σ_{i<j} ⟨v_i, v_j⟩ x_i x_j

over the active slots of a row (user id, item id, attributes, context). The pairwise sum is the
O(k·n) identity ½ Σ_f [(Σ_i v_if x_i)² − Σ_i v_if² x_i²] (`models.interactions.pairwise`).
"""

from __future__ import annotations

import torch

from recforge.models.features.field_layers import FieldConfig, FieldCore, FieldLayout, field_family, grid_linear, grid_power
from recforge.models.features.interactions import pairwise


class FMConfig(FieldConfig):
    pass


class FM(FieldCore):
    def forward(self, index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:  # (B, S) x2 -> (B,)
        e = self.embed(index, value)  # (B, S, D)
        return self.linear(index, value) + pairwise(e).sum(-1)

    def score_grid(self, parts) -> torch.Tensor:  # users x items at once: (B, C)
        p1, p2 = grid_power(self.embedding, parts, 1), grid_power(self.embedding, parts, 2)  # (B, C, D)
        return grid_linear(self.weight, self.bias, parts) + 0.5 * (p1 * p1 - p2).sum(-1)


def core(config: FMConfig, layout: FieldLayout) -> FM:
    return FM(layout, config.dim)


FAMILY = field_family("fm", FMConfig, core, paper="Rendle 2010 (Factorization Machines)")
