"""`mf`: biased matrix factorisation for explicit ratings, trained with MSE and L2 — the
embedding-dot model of the seeds (Koren, Bell & Volinsky 2009, "Matrix factorization techniques for
recommender systems"). With L2 on the factors this is the MAP estimate of PMF (Salakhutdinov & Mnih
2008) with Gaussian priors, so PMF is not a separate family here.

r̂(u, i) = μ + b_u + b_i + p_u · q_i
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from recforge.models.base import Family, ModelConfig, RecommenderNetwork
from recforge.models.layers import init_embedding_from_vectors, lookup, pairs_in_batches
from recforge.training.losses import mse


class MFConfig(ModelConfig):
    dim: int = Field(32, gt=0)
    l2: float = Field(0.02, ge=0)
    freeze_item_vectors: bool = False


class BiasedMF(RecommenderNetwork):
    def __init__(self, n_users: int, n_items: int, dim: int, global_mean: float) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_bias = nn.Embedding(n_items, 1)
        for emb in (self.user, self.item):
            nn.init.normal_(emb.weight, std=0.01)
        for emb in (self.user_bias, self.item_bias):
            nn.init.zeros_(emb.weight)
        self.register_buffer("global_mean", torch.tensor(float(global_mean)))

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.pairs(user, item)[0]

    def pairs(
        self, user: torch.Tensor, item: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predicted ratings (B,) with the factors they used, p_u and q_i (B, D) each, for the
        loss's L2 term without a second lookup."""
        p, q = lookup(self.user, user), lookup(self.item, item)  # (B, D) each
        bias = lookup(self.user_bias, user) + lookup(self.item_bias, item)  # (B, 1)
        return self.global_mean + bias.squeeze(-1) + (p * q).sum(-1), p, q

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        dot = self.user(user) @ self.item.weight.T  # (B, I)
        return self.global_mean + self.user_bias(user) + self.item_bias.weight.T + dot

    def item_embeddings(self) -> torch.Tensor:
        return self.item.weight

    def retrieval_items(self) -> torch.Tensor:
        q = self.item.weight
        return torch.cat([q, self.item_bias.weight, torch.ones_like(q[:, :1])], dim=1)  # (I, D + 2)

    def retrieval_users(self, user: torch.Tensor) -> torch.Tensor:
        p = self.user(user)  # the last column carries the user's constant: mean + user bias
        return torch.cat([p, torch.ones_like(p[:, :1]), self.global_mean + self.user_bias(user)], dim=1)


def build(config: MFConfig, train, item_vectors=None) -> BiasedMF:
    mean = float(train.value.mean()) if len(train) else 0.0
    net = BiasedMF(train.n_users, train.n_items, config.dim, mean)
    if item_vectors is not None:
        init_embedding_from_vectors(net.item, item_vectors, freeze=config.freeze_item_vectors)
    return net


def batches(network, train, config, batch_size, generator):
    return pairs_in_batches(
        torch.as_tensor(train.user_idx), torch.as_tensor(train.item_idx), batch_size, generator,
        target=torch.as_tensor(train.value),
    )


def loss(network: BiasedMF, batch, config: MFConfig) -> torch.Tensor:
    pred, p, q = network.pairs(batch["user"], batch["item"])
    # the mean over the batch of ‖p_u‖² + ‖q_i‖²
    return mse(pred, batch["target"]) + config.l2 * (p.square().sum() + q.square().sum()) / len(pred)


FAMILY = Family(
    name="mf", config=MFConfig, build=build, batches=batches, loss=loss, task="rating",
    paper="Koren, Bell & Volinsky 2009; Salakhutdinov & Mnih 2008 (PMF, MAP)",
)
