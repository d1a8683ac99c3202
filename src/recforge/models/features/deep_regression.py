"""`deep_regression`: deck 002's deep regression on attributes.

Numeric fields go through a dense block, categorical ones through embeddings; the two are
concatenated into a tanh layer and a linear output (a logit under `objective: logloss`, so the
sigmoid is in the loss; a rating under `mse`).

    h = tanh(W [relu(D x_num) ; e_cat_1 ; … ; e_cat_m] + b) ;  ŷ = wᵀ h + c
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from recforge.models.features.field_layers import FieldConfig, FieldCore, FieldLayout, Objective, field_family

NUMERIC = ("numeric",)


class DeepRegressionConfig(FieldConfig):
    objective: Objective = "mse"
    dense: int = Field(16, gt=0)
    hidden: int = Field(64, gt=0)


class DeepRegression(FieldCore):
    def __init__(self, layout: FieldLayout, config: DeepRegressionConfig) -> None:
        super().__init__(layout, config.dim)
        numeric = [s for s, f in enumerate(layout.slot_field) if layout.field_kind[f] in NUMERIC]
        categorical = [f for f, kind in enumerate(layout.field_kind) if kind not in NUMERIC]
        self.register_buffer("numeric_slots", torch.tensor(numeric, dtype=torch.int64), persistent=False)
        self.register_buffer("categorical_fields", torch.tensor(categorical, dtype=torch.int64), persistent=False)
        self.dense = nn.Sequential(nn.Linear(len(numeric), config.dense), nn.ReLU()) if numeric else None
        width = len(categorical) * config.dim + (config.dense if numeric else 0)
        self.hidden = nn.Sequential(nn.Linear(width, config.hidden), nn.Tanh())
        self.out = nn.Linear(config.hidden, 1)

    def forward(self, index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:  # (B, S) x2 -> (B,)
        e = self.fields(self.embed(index, value)).index_select(1, self.categorical_fields)  # (B, Fc, D)
        parts = [e.flatten(1)]
        if self.dense is not None:
            parts.append(self.dense(value.index_select(1, self.numeric_slots)))  # (B, dense)
        return self.bias + self.out(self.hidden(torch.cat(parts, 1))).squeeze(-1)


def core(config: DeepRegressionConfig, layout: FieldLayout) -> DeepRegression:
    return DeepRegression(layout, config)


FAMILY = field_family("deep_regression", DeepRegressionConfig, core, paper="deck 002 (deep regression on attributes)")
