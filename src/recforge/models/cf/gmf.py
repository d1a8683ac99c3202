"""`gmf`: Generalized Matrix Factorization, the linear half of NCF (He, Liao, Zhang, Nie, Hu &
Chua 2017, "Neural Collaborative Filtering").

ŷ(u, i) = σ(hᵀ (p_u ⊙ q_i) + b)

σ is applied by the loss (BCE on logits), so the network returns the logit; with
`objective="mse"` it returns the rating. A learned h generalises MF's dot product (h = 1, b = 0).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from recforge.models.base import Family, RecommenderNetwork
from recforge.models.layers import init_embedding_from_vectors
from recforge.models.cf.ncf import (
    NCFConfig,
    init_embeddings,
    init_output,
    lookup,
    pointwise_batches,
    pointwise_loss,
)


class GMFConfig(NCFConfig):
    dim: int = Field(32, gt=0)


class GMF(RecommenderNetwork):
    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.predict = nn.Linear(dim, 1)
        init_embeddings(self.user, self.item)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.predict(lookup(self.user, user) * lookup(self.item, item)).squeeze(-1)  # (B,)

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        # hᵀ(p ⊙ q) = (p ⊙ h) · q: one matmul against the item table
        h = self.predict.weight[0]  # (D,)
        return (self.user(user) * h) @ self.item.weight.T + self.predict.bias  # (B, I)

    def item_embeddings(self) -> torch.Tensor:
        return self.item.weight

    def retrieval_items(self) -> torch.Tensor:
        q = self.item.weight
        return torch.cat([q, torch.ones_like(q[:, :1])], dim=1)  # (I, D + 1)

    def retrieval_users(self, user: torch.Tensor) -> torch.Tensor:
        ph = self.user(user) * self.predict.weight[0]  # (B, D): hᵀ(p ⊙ q) = (p ⊙ h) · q
        return torch.cat([ph, self.predict.bias.expand(len(ph), 1)], dim=1)


def build(config: GMFConfig, train, item_vectors=None) -> GMF:
    net = GMF(train.n_users, train.n_items, config.dim)
    init_output(net.predict, config, train)
    if item_vectors is not None:
        init_embedding_from_vectors(net.item, item_vectors, freeze=config.freeze_item_vectors)
    return net


def batches(network, train, config, batch_size, generator):
    return pointwise_batches(train, config, batch_size, generator)


def loss(network: GMF, batch, config: GMFConfig) -> torch.Tensor:
    return pointwise_loss(network(batch["user"], batch["item"]), batch, config)


FAMILY = Family(
    name="gmf", config=GMFConfig, build=build, batches=batches, loss=loss,
    paper="He et al. 2017 (NCF: GMF)",
)
