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
from recforge.models.layers import init_embedding_from_vectors, pairs_in_batches
from recforge.training.losses import bpr as bpr_loss
from recforge.training.samplers import uniform_negatives


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


def build(config: BPRConfig, train, item_vectors=None) -> BPRMF:
    net = BPRMF(train.n_users, train.n_items, config.dim, config.sparse)
    if item_vectors is not None:
        init_embedding_from_vectors(net.item, item_vectors, freeze=config.freeze_item_vectors)
    return net


def batches(network, train, config, batch_size, generator):
    csr = train.csr
    for batch in pairs_in_batches(
        torch.as_tensor(train.user_idx), torch.as_tensor(train.item_idx), batch_size, generator
    ):
        batch["negative"] = uniform_negatives(batch["user"], csr, 1, generator)[:, 0]  # (B,)
        yield batch


def loss(network: BPRMF, batch, config: BPRConfig) -> torch.Tensor:
    u, i, j = batch["user"], batch["item"], batch["negative"]
    pu, qi, qj = network.user(u), network.item(i), network.item(j)  # (B, D) each
    pos = (pu * qi).sum(-1) + network.item_bias(i).squeeze(-1)
    neg = (pu * qj).sum(-1) + network.item_bias(j).squeeze(-1)
    reg = pu.pow(2).sum(-1) + qi.pow(2).sum(-1) + qj.pow(2).sum(-1)
    return bpr_loss(pos, neg) + config.l2 * reg.mean()


FAMILY = Family(
    name="bpr", config=BPRConfig, build=build, batches=batches, loss=loss,
    paper="Rendle et al. 2009",
)
