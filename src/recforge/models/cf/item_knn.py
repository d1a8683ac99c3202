"""`item_knn`: item-based collaborative filtering with cosine similarity on the interaction matrix
(Sarwar et al. 2001, "Item-based collaborative filtering recommendation algorithms")."""

from __future__ import annotations

import torch
from pydantic import Field

from recforge.models.base import Family, ModelConfig, RecommenderNetwork, no_batches, no_loss


class ItemKNNConfig(ModelConfig):
    neighbours: int = Field(100, gt=0)
    shrinkage: float = Field(10.0, ge=0)


class ItemKNN(RecommenderNetwork):
    """score(u, i) = sum over the user's items j of sim(j, i), sims pruned to the top neighbours."""

    def __init__(self, similarity: torch.Tensor, n_users: int) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, similarity.shape[0]
        self.register_buffer("similarity", similarity)  # (I, I)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("item_knn scores from a user's history: use score_all")

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return history @ self.similarity  # (B, I) @ (I, I)

    def score_cold_users(self, history: torch.Tensor) -> torch.Tensor:
        return history @ self.similarity  # the user id was never used: a history is all it needs

    def item_embeddings(self) -> torch.Tensor:
        return self.similarity


def cosine_similarity(csr, neighbours: int, shrinkage: float) -> torch.Tensor:
    """Dense (I, I) cosine similarity with shrinkage, zero diagonal, top-`neighbours` per row kept."""
    co = torch.as_tensor((csr.T @ csr).toarray(), dtype=torch.float32)  # (I, I), sparse product
    norms = torch.sqrt(torch.diagonal(co)).clamp_min(1e-12)  # (I,)
    sim = co / (norms[:, None] * norms[None, :] + shrinkage)
    sim.fill_diagonal_(0.0)
    k = min(neighbours, sim.shape[1])
    top = torch.topk(sim, k, dim=1)
    pruned = torch.zeros_like(sim).scatter_(1, top.indices, top.values)
    return pruned.T.contiguous()  # column i holds the neighbours of item i that vote for it


def build(config: ItemKNNConfig, train, item_vectors=None) -> ItemKNN:
    return ItemKNN(cosine_similarity(train.csr, config.neighbours, config.shrinkage), train.n_users)


FAMILY = Family(
    name="item_knn", config=ItemKNNConfig, build=build, batches=no_batches, loss=no_loss,
    trainable=False, paper="Sarwar et al. 2001",
)
