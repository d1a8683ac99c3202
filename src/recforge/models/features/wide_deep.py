"""`wide_deep`: Wide & Deep (Cheng et al. 2016, "Wide & Deep Learning for Recommender Systems").

The wide part is a linear model over every sparse slot, crossed fields included (the
memorisation of feature co-occurrences); the deep part is a ReLU tower over the concatenated
embeddings of the non-crossed fields (generalisation). They are trained jointly: one logit.

    ŷ = w_wideᵀ [x, φ(x)] + w_deepᵀ a^(l_f) + b
"""

from __future__ import annotations

import torch
from typing import Literal

from pydantic import Field
from torch import nn

from recforge.models.features.field_layers import FieldConfig, FieldCore, FieldLayout, field_family, grid_first_layer, grid_linear, mlp


class WideDeepConfig(FieldConfig):
    layers: list[int] = Field(default_factory=lambda: [128, 64])
    dropout: float = Field(0.1, ge=0, lt=1)
    # the paper trains the wide part with FTRL + L1 and the deep part with AdaGrad; here the wide
    # part can have an optimiser of its own (FTRL-Proximal, training.ftrl, or Adagrad / SGD, at
    # `wide_lr_scale` x the loop's lr) while the rest follows `training.optimizer` ("adagrad" there
    # is the paper's split). "same": one optimiser for both.
    wide_optimizer: Literal["same", "ftrl", "adagrad", "sgd"] = "same"
    wide_lr_scale: float = Field(1.0, gt=0)


class WideDeep(FieldCore):
    def __init__(self, layout: FieldLayout, config: WideDeepConfig) -> None:
        super().__init__(layout, config.dim)
        deep = [f for f, kind in enumerate(layout.field_kind) if kind != "cross"]
        self.register_buffer("deep_fields", torch.tensor(deep, dtype=torch.int64), persistent=False)
        width = len(deep) * config.dim
        self.dnn = mlp([width, *config.layers], config.dropout)
        self.out = nn.Linear(config.layers[-1] if config.layers else width, 1)
        self.wide_optimizer, self.wide_lr_scale = config.wide_optimizer, config.wide_lr_scale

    def optimizer_overrides(self) -> list[tuple[list[nn.Parameter], str, float]]:
        """The wide part's weights under their own optimiser (see `training.loop.build_optimizers`)."""
        if self.wide_optimizer == "same":
            return []
        return [([self.weight.weight, self.bias], self.wide_optimizer, self.wide_lr_scale)]

    def forward(self, index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:  # (B, S) x2 -> (B,)
        wide = self.linear(index, value)  # (B,)
        e = self.fields(self.embed(index, value))  # (B, F, D)
        if self.deep_fields.numel() != e.shape[1]:
            e = e.index_select(1, self.deep_fields)  # (B, F', D): the crossed fields stay wide
        return wide + self.out(self.dnn(e.flatten(1))).squeeze(-1)

    @property
    def grid_width(self) -> int:
        return self.dnn[0].out_features if len(self.dnn) else 64

    def score_grid(self, parts) -> torch.Tensor:  # users x items at once: (B, C)
        wide = grid_linear(self.weight, self.bias, parts)
        fields = self.deep_fields.tolist()
        if not len(self.dnn):  # no tower: the output layer reads the embeddings themselves
            return wide + grid_first_layer(self.embedding, self.out, parts, self.slot_field, fields).squeeze(-1)
        first = grid_first_layer(self.embedding, self.dnn[0], parts, self.slot_field, fields)
        return wide + self.out(self.dnn[1:](first)).squeeze(-1)


def core(config: WideDeepConfig, layout: FieldLayout) -> WideDeep:
    return WideDeep(layout, config)


FAMILY = field_family("wide_deep", WideDeepConfig, core, paper="Cheng et al. 2016 (Wide & Deep)")
