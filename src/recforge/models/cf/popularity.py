"""`popularity`: recommend the most interacted-with items — the baseline learned models must beat."""

from __future__ import annotations

import numpy as np
import torch

from recforge.models.base import Family, ModelConfig, RecommenderNetwork, no_batches, no_loss


class PopularityConfig(ModelConfig):
    pass


class Popularity(RecommenderNetwork):
    def __init__(self, counts: np.ndarray) -> None:
        super().__init__()
        self.n_items = len(counts)
        self.register_buffer("log_count", torch.log1p(torch.as_tensor(counts, dtype=torch.float32)))

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.log_count[item]  # (B,)

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.log_count.expand(user.shape[0], -1)  # (B, I)

    def score_cold_items(self, user: torch.Tensor, content) -> torch.Tensor:
        """A cold item has no training interactions: log(1 + 0) = 0, below every item bought at
        least once — the honest popularity baseline for new items (they rank last)."""
        return self.log_count.new_zeros(user.shape[0], len(content))  # (B, C)

    def score_cold_users(self, history: torch.Tensor) -> torch.Tensor:
        return self.log_count.expand(history.shape[0], -1)  # (B, I): the user does not matter


def build(config: PopularityConfig, train, item_vectors=None) -> Popularity:
    net = Popularity(train.item_popularity)
    net.n_users = train.n_users
    return net


FAMILY = Family(
    name="popularity", config=PopularityConfig, build=build, batches=no_batches, loss=no_loss,
    trainable=False, paper="baseline",
)
