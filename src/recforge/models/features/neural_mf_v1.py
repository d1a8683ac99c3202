"""`neural_mf_v1`: deck 002's Neural MF with side features, version 1: a user tower and an item
tower (each the concatenated embeddings of that side's fields — id and attributes — through dense
layers) meet in an inner product; trained on ratings with MSE.

    p_u = MLP_u([e_user_id ; e_user_attrs]) ;  q_i = MLP_i([e_item_id ; e_item_attrs])
    r̂(u, i) = b + p_u · q_i
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from recforge.models.features.field_layers import FieldConfig, FieldCore, FieldLayout, Objective, field_family, mlp


class NeuralMFConfig(FieldConfig):
    objective: Objective = "mse"
    layers: list[int] = Field(default_factory=lambda: [64, 32])
    dropout: float = Field(0.0, ge=0, lt=1)


class Towers(FieldCore):
    """The two towers both versions share; `tower_out` is each tower's last width."""

    def __init__(self, layout: FieldLayout, config: NeuralMFConfig) -> None:
        super().__init__(layout, config.dim)
        for side in ("user", "item"):
            fields = layout.fields_of(side)
            if not fields:
                raise ValueError(f"neural_mf needs {side} fields (ids or attributes); the rows have none")
            self.register_buffer(f"{side}_fields", torch.tensor(fields, dtype=torch.int64), persistent=False)
            sizes = [len(fields) * config.dim, *config.layers]
            setattr(self, f"{side}_tower", mlp(sizes, config.dropout))
        self.tower_out = config.layers[-1] if config.layers else None

    def towers(self, index: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.fields(self.embed(index, value))  # (B, F, D)
        p = self.user_tower(f.index_select(1, self.user_fields).flatten(1))  # (B, H)
        q = self.item_tower(f.index_select(1, self.item_fields).flatten(1))  # (B, H)
        return p, q


class NeuralMFV1(Towers):
    def forward(self, index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:  # (B, S) x2 -> (B,)
        p, q = self.towers(index, value)
        return self.bias + (p * q).sum(-1)


def core(config: NeuralMFConfig, layout: FieldLayout) -> NeuralMFV1:
    if not config.layers and len(layout.fields_of("user")) != len(layout.fields_of("item")):
        raise ValueError("with no tower layers the user and item sides need as many fields for the inner product")
    return NeuralMFV1(layout, config)


FAMILY = field_family("neural_mf_v1", NeuralMFConfig, core, paper="deck 002 (Neural MF with side features, V1)")
