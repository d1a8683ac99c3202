"""`rbm`: Restricted Boltzmann Machine for collaborative filtering (Salakhutdinov, Mnih & Hinton
2007, "Restricted Boltzmann Machines for Collaborative Filtering"), implicit-feedback version:
binary visible units v ∈ {0, 1}^I (a user's row), binary hidden units h ∈ {0, 1}^H.

    E(v, h) = −vᵀ W h − aᵀ v − bᵀ h
    p(h_j = 1 | v) = σ(b_j + vᵀ W_:j)        p(v_i = 1 | h) = σ(a_i + W_i: h)
    F(v) = −aᵀ v − Σ_j softplus(b_j + vᵀ W_:j)      (free energy: p(v) ∝ exp(−F(v)))

Training is contrastive divergence CD-k driven by the one fit loop. The loss of a batch is

    L = mean_u [ F(v_u) − F(v_u^(k)) ]

where v^(k) is the end of a k-step Gibbs chain started at the data, computed under no_grad so it
is a constant for autograd. Since ∂F/∂W = −v σ(b + vᵀW)ᵀ (and likewise for a, b), the gradient of L
is −(⟨v hᵀ⟩_data − ⟨v hᵀ⟩_k) with h at its conditional mean: exactly the negated CD-k update of the
paper, so gradient descent on L *is* CD-k, with any optimiser the loop offers. The last visible
step uses p(v | h) instead of a binary sample, which lowers the variance of the negative statistics
(Hinton 2010, "A Practical Guide to Training Restricted Boltzmann Machines"). L is not a
likelihood and need not fall steadily; `free_energy_gap` is the number to watch.

Scoring reconstructs a user's history: mean-field hidden ĥ = p(h | v_u), then p(v | ĥ).

The paper's explicit model (softmax visible units over K rating levels, only rated items visible)
is not implemented: `score_all` receives the binary training rows as history, not ratings.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.models.base import Batch, Family, ModelConfig, RecommenderNetwork
from recforge.models.cf.cdae import user_rows_in_batches
from recforge.models.layers import init_embedding_from_vectors


class RBMConfig(ModelConfig):
    hidden: int = Field(100, gt=0)
    cd_steps: int = Field(1, ge=1, le=100)
    freeze_item_vectors: bool = False


class RBM(RecommenderNetwork):
    def __init__(self, n_users: int, n_items: int, hidden: int) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.item = nn.Embedding(n_items, hidden)  # W: row i couples item i to the hidden units
        self.visible_bias = nn.Parameter(torch.zeros(n_items))  # a
        self.hidden_bias = nn.Parameter(torch.zeros(hidden))  # b
        nn.init.normal_(self.item.weight, std=0.01)  # Hinton's guide: small, symmetry-breaking

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        return v @ self.item.weight + self.hidden_bias  # (B, I) -> (B, H)

    def visible_logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.item.weight.T + self.visible_bias  # (B, H) -> (B, I)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v), (B, I) -> (B,)."""
        # the loss is a small difference of two large free energies: bf16 autocast would swamp it
        with torch.autocast(v.device.type, enabled=False):
            v = v.float()
            return -(v @ self.visible_bias) - F.softplus(self.hidden_logits(v)).sum(-1)

    @torch.no_grad()
    def gibbs(self, v: torch.Tensor, steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The end of a `steps`-step chain v -> h -> v started at `v`: (B, I) visible means."""
        for step in range(steps):
            h = torch.bernoulli(torch.sigmoid(self.hidden_logits(v)), generator=generator)  # (B, H)
            p_v = torch.sigmoid(self.visible_logits(h))  # (B, I)
            v = p_v if step == steps - 1 else torch.bernoulli(p_v, generator=generator)
        return v

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("rbm scores from a user's history: use score_all")

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(self.hidden_logits(history.float()))  # (B, H) mean-field hidden
        return self.visible_logits(h)  # (B, I), the logits of p(v | ĥ)

    def score_cold_users(self, history: torch.Tensor) -> torch.Tensor:
        return self.score_all(history.new_zeros(0, dtype=torch.long), history)  # no user parameters

    def item_embeddings(self) -> torch.Tensor:
        return self.item.weight  # (I, H)


def free_energy_gap(network: RBM, rows: torch.Tensor, steps: int) -> torch.Tensor:
    """mean F(data) − mean F(k-step Gibbs samples): negative once the model prefers its data."""
    with torch.no_grad():
        return (network.free_energy(rows) - network.free_energy(network.gibbs(rows, steps))).mean()


def build(config: RBMConfig, train: InteractionData, item_vectors: torch.Tensor | None = None) -> RBM:
    net = RBM(train.n_users, train.n_items, config.hidden)
    if len(train):
        # a_i = log p_i / (1 − p_i), p_i the share of users holding item i (Hinton's guide): the
        # untrained model then ranks by popularity, and W only has to learn the deviations from it
        n_rows = max(int((np.diff(train.csr.indptr) > 0).sum()), 1)
        p = np.asarray(train.csr.sum(axis=0)).ravel() / n_rows
        p = torch.as_tensor(p, dtype=torch.float32).clamp(1e-3, 1 - 1e-3)
        with torch.no_grad():
            net.visible_bias.copy_(torch.log(p / (1 - p)))
    if item_vectors is not None:
        init_embedding_from_vectors(net.item, item_vectors, freeze=config.freeze_item_vectors)
    return net


def batches(network, train, config: RBMConfig, batch_size, generator) -> Iterator[Batch]:
    return user_rows_in_batches(train, batch_size, generator)


def loss(network: RBM, batch: Batch, config: RBMConfig) -> torch.Tensor:
    v = batch["rows"]  # (B, I)
    v_k = network.gibbs(v, config.cd_steps)  # (B, I), constant for autograd
    return (network.free_energy(v) - network.free_energy(v_k)).mean()


FAMILY = Family(
    name="rbm", config=RBMConfig, build=build, batches=batches, loss=loss,
    paper="Salakhutdinov, Mnih & Hinton 2007",
)
