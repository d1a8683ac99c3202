"""`mlp`: the MLP half of NCF (He, Liao, Zhang, Nie, Hu & Chua 2017, "Neural Collaborative
Filtering"): a ReLU tower over the concatenated user and item embeddings.

z_0 = [p_u; q_i],  z_k = ReLU(W_k z_{k-1} + b_k),  ŷ(u, i) = σ(hᵀ z_L + b)

σ is applied by the loss (BCE on logits); with `objective="mse"` the output is the rating.
`layers` are the hidden sizes after the 2·dim input, e.g. (64, 32, 16) — the paper's tower halves
at each layer.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from recforge.models.base import Family, RecommenderNetwork
from recforge.models.layers import init_embedding_from_vectors
from recforge.models.cf.ncf import (
    Tower,
    TowerConfig,
    init_embeddings,
    init_output,
    pointwise_batches,
    pointwise_loss,
)


class MLPConfig(TowerConfig):
    dim: int = Field(32, gt=0)


class MLP(RecommenderNetwork):
    def __init__(
        self, n_users: int, n_items: int, dim: int, layers: tuple[int, ...], dropout: float
    ) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.tower = Tower(dim, layers, dropout)
        self.predict = nn.Linear(self.tower.out_dim, 1)
        init_embeddings(self.user, self.item)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        z = self.tower(self.user, self.item, user, item)  # (B, L)
        return self.predict(z).squeeze(-1)  # (B,)

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        h = self.predict.weight[0]  # (L,)
        return self.tower.cross(self.user(user), self.item.weight, h) + self.predict.bias  # (B, I)

    def item_embeddings(self) -> torch.Tensor:
        return self.item.weight


def build(config: MLPConfig, train, item_vectors=None) -> MLP:
    net = MLP(train.n_users, train.n_items, config.dim, config.layers, config.dropout)
    init_output(net.predict, config, train)
    if item_vectors is not None:
        init_embedding_from_vectors(net.item, item_vectors, freeze=config.freeze_item_vectors)
    return net


def batches(network, train, config, batch_size, generator):
    return pointwise_batches(train, config, batch_size, generator)


def loss(network: MLP, batch, config: MLPConfig) -> torch.Tensor:
    return pointwise_loss(network(batch["user"], batch["item"]), batch, config)


FAMILY = Family(
    name="mlp", config=MLPConfig, build=build, batches=batches, loss=loss,
    paper="He et al. 2017 (NCF: MLP)",
)
