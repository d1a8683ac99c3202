"""`random`: the floor every family must clear — a fixed, seeded, data-independent ranking."""

from __future__ import annotations

import torch
from pydantic import Field

from recforge.models.base import Family, ModelConfig, RecommenderNetwork, no_batches, no_loss


class RandomConfig(ModelConfig):
    seed: int = 0
    dim: int = Field(16, gt=0)


class RandomScores(RecommenderNetwork):
    """Scores are dot products of random vectors: a fixed random ranking per user, O(1) memory."""

    def __init__(self, n_users: int, n_items: int, dim: int, seed: int) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.seed = seed
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("user_vec", torch.randn(n_users, dim, generator=g))  # (U, D)
        self.register_buffer("item_vec", torch.randn(n_items, dim, generator=g))  # (I, D)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return (self.user_vec[user] * self.item_vec[item]).sum(-1)  # (B,)

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.user_vec[user] @ self.item_vec.T  # (B, I)

    def score_cold_items(self, user: torch.Tensor, content) -> torch.Tensor:
        """Fresh seeded random vectors for the C cold items (their content is ignored)."""
        g = torch.Generator().manual_seed(self.seed + 1)
        cold = torch.randn(len(content), self.item_vec.shape[1], generator=g).to(self.item_vec)  # (C, D)
        return self.user_vec[user] @ cold.T  # (B, C)

    def score_cold_users(self, history: torch.Tensor) -> torch.Tensor:
        """A random vector per history (its items' random vectors summed): still a ranking that
        knows nothing of the data, fixed for a given history."""
        return (history @ self.item_vec) @ self.item_vec.T  # (B, D) -> (B, I)


def build(config: RandomConfig, train, item_vectors=None) -> RandomScores:
    return RandomScores(train.n_users, train.n_items, config.dim, config.seed)


FAMILY = Family(
    name="random", config=RandomConfig, build=build, batches=no_batches, loss=no_loss,
    trainable=False, paper="baseline",
)
