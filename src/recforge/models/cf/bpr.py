"""`bpr`: BPR-MF — matrix factorisation trained with Bayesian Personalised Ranking on implicit
feedback (Rendle, Freudenthaler, Gantner & Schmidt-Thieme 2009, "BPR: Bayesian Personalized Ranking
from Implicit Feedback").

x̂(u, i) = b_i + p_u · q_i ;  loss = -log σ(x̂(u, i) - x̂(u, j)) for an observed i and unobserved j.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from recforge.models.base import Family, ModelConfig, RecommenderNetwork
from recforge.models.layers import init_embedding_from_vectors, lookup
from recforge.training.losses import bpr as bpr_loss
from recforge.training.samplers import Positives, shuffled_chunks, uniform_negatives

# Negatives are drawn for this many rows at once (one sampler call per ~32 batches of 2048).
_DRAW_ROWS = 1 << 16


class BPRConfig(ModelConfig):
    dim: int = Field(64, gt=0)
    l2: float = Field(1e-5, ge=0)
    sparse: bool = False
    freeze_item_vectors: bool = False


class BPRMF(RecommenderNetwork):
    def __init__(self, n_users: int, n_items: int, dim: int, sparse: bool = False) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.user = nn.Embedding(n_users, dim, sparse=sparse)
        self.item = nn.Embedding(n_items, dim, sparse=sparse)
        self.item_bias = nn.Embedding(n_items, 1, sparse=sparse)
        nn.init.normal_(self.user.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)
        nn.init.zeros_(self.item_bias.weight)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return (self.user(user) * self.item(item)).sum(-1) + self.item_bias(item).squeeze(-1)  # (B,)

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.user(user) @ self.item.weight.T + self.item_bias.weight.T  # (B, I)

    def item_embeddings(self) -> torch.Tensor:
        return self.item.weight

    def retrieval_items(self) -> torch.Tensor:
        return torch.cat([self.item.weight, self.item_bias.weight], dim=1)  # (I, D + 1)

    def retrieval_users(self, user: torch.Tensor) -> torch.Tensor:
        p = self.user(user)
        return torch.cat([p, torch.ones_like(p[:, :1])], dim=1)  # (B, D + 1)


def build(config: BPRConfig, train, item_vectors=None) -> BPRMF:
    net = BPRMF(train.n_users, train.n_items, config.dim, config.sparse)
    if item_vectors is not None:
        init_embedding_from_vectors(net.item, item_vectors, freeze=config.freeze_item_vectors)
    return net


def batches(network, train, config, batch_size, generator):
    """Shuffled (user, item, negative) triples; one uniform negative per observed pair, drawn for
    a whole chunk of batches at a time against the epoch's indexed positives."""
    user = torch.as_tensor(train.user_idx, dtype=torch.int64)  # (N,)
    item = torch.as_tensor(train.item_idx, dtype=torch.int64)  # (N,)
    positives = Positives(train.csr)
    for idx in shuffled_chunks(len(user), batch_size, generator, _DRAW_ROWS):  # (R,)
        u, i = user.index_select(0, idx), item.index_select(0, idx)  # (R,) each
        j = uniform_negatives(u, positives, 1, generator)[:, 0]  # (R,)
        for b in range(0, len(idx), batch_size):
            yield {"user": u[b : b + batch_size], "item": i[b : b + batch_size],
                   "negative": j[b : b + batch_size]}


def loss(network: BPRMF, batch, config: BPRConfig) -> torch.Tensor:
    u, i, j = batch["user"], batch["item"], batch["negative"]
    b = len(u)
    # the positive and the negative item go through one lookup per table, which halves the
    # gathers and backward scatters of looking them up apart
    items = torch.cat([i, j])  # (2B,)
    pu = lookup(network.user, u)  # (B, D)
    q = lookup(network.item, items).view(2, b, -1)  # (2, B, D)
    bias = lookup(network.item_bias, items).view(2, b)  # (2, B)
    # unbind, not q[0] and q[1]: its backward is one stack, where each select's would fill a
    # zero (2, B, D) tensor
    (qi, qj), (bi, bj) = q.unbind(0), bias.unbind(0)  # (B, D) each, (B,) each
    # BPR sees only x̂_ui - x̂_uj = p_u · (q_i - q_j) + b_i - b_j: one (B, D) product, not two
    x_uij = (pu * (qi - qj)).sum(-1) + (bi - bj)  # (B,)
    loss = bpr_loss(x_uij, torch.zeros_like(x_uij))
    if config.l2:
        # the mean over the batch of ‖p_u‖² + ‖q_i‖² + ‖q_j‖²
        loss = loss + config.l2 * (pu.square().sum() + q.square().sum()) / b
    return loss


FAMILY = Family(
    name="bpr", config=BPRConfig, build=build, batches=batches, loss=loss,
    paper="Rendle et al. 2009",
)
