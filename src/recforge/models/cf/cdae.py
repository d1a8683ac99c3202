"""`cdae`: Collaborative Denoising Auto-Encoder for top-N recommendation (Wu, DuBois, Zheng & Ester
2016, "Collaborative Denoising Auto-Encoders for Top-N Recommender Systems").

A one-hidden-layer denoising auto-encoder over a user's row of the interaction matrix, with one
extra input node per user:

    ỹ_u = dropout(y_u, q)              corruption: drop each observed item with prob. q, scale 1/(1-q)
    h_u = f(Wᵀ ỹ_u + V_u + b)          W: (I, H) item vectors, V_u: (H,) the user node
    ŷ_u = σ(W' h_u + b')               reconstruction of the uncorrupted row

The loss (log loss or squared) is taken over the full row, or — the paper's negative sampling —
over the observed items plus a random subset of the unobserved ones, `negative_ratio` times as
many as the user has observed. The item table W is an `nn.Embedding`, so pretrained item vectors
initialise it as in every other family.

The user-row batching and the masked reconstruction loss defined here are shared by `sdae`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.models.base import Batch, Family, ModelConfig, RecommenderNetwork
from recforge.models.layers import init_embedding_from_vectors
from recforge.training.losses import bce, mse
from recforge.training.samplers import shuffled_batches

Activation = Literal["sigmoid", "tanh", "relu"]
ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}


class CDAEConfig(ModelConfig):
    hidden: int = Field(50, gt=0)
    corruption: float = Field(0.2, ge=0, lt=1)
    activation: Activation = "sigmoid"
    loss: Literal["bce", "squared"] = "bce"
    # 0 = reconstruct the full row (fine for small catalogues); > 0 = the paper's negative sampling
    negative_ratio: float = Field(0.0, ge=0)
    freeze_item_vectors: bool = False


class CDAE(RecommenderNetwork):
    def __init__(
        self, n_users: int, n_items: int, hidden: int, corruption: float, activation: Activation
    ) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.corruption = corruption
        self.act = ACTIVATIONS[activation]
        self.item = nn.Embedding(n_items, hidden)  # W: row i is item i's input weights
        self.item_bias = nn.Parameter(torch.zeros(hidden))  # b
        self.user = nn.Embedding(n_users, hidden)  # V_u
        self.decoder = nn.Linear(hidden, n_items)  # W', b'
        bound = 1.0 / n_items**0.5  # nn.Linear's init for a (I -> H) layer
        nn.init.uniform_(self.item.weight, -bound, bound)
        # zero: a user without training rows is scored from their history alone
        nn.init.zeros_(self.user.weight)

    def logits(self, user: torch.Tensor, rows: torch.Tensor, corrupt: bool) -> torch.Tensor:
        """(B,), (B, I) -> (B, I) pre-sigmoid reconstruction of `rows`."""
        x = F.dropout(rows, self.corruption, training=corrupt)  # (B, I)
        h = self.act(x @ self.item.weight + self.item_bias + self.user(user))  # (B, H)
        return self.decoder(h)  # (B, I)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("cdae scores from a user's history: use score_all")

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.logits(user, history, corrupt=False)  # (B, I); σ is monotone, so logits rank

    def score_cold_users(self, history: torch.Tensor) -> torch.Tensor:
        """A user unseen in training has no node V_u: it is zero, as every user node starts, and
        her fold-in history alone is encoded."""
        return self.decoder(self.act(history @ self.item.weight + self.item_bias))  # (B, I)

    def item_embeddings(self) -> torch.Tensor:
        return self.item.weight  # (I, H)


def user_rows_in_batches(
    train: InteractionData, batch_size: int, generator: torch.Generator, negative_ratio: float = 0.0
) -> Iterator[Batch]:
    """One epoch of {"user": (B,), "rows": (B, I)} over the users with a training row, shuffled.

    Rows are densified per batch from the CSR by fancy indexing (one scipy call, no per-user loop).
    With `negative_ratio` > 0 the batch also holds "mask" (B, I): the observed items plus each
    unobserved item independently with probability ratio·n_u / (I − n_u), i.e. on average `ratio`
    negatives per positive, drawn from `generator` so a checkpoint replays them.
    """
    csr = train.csr
    users = torch.from_numpy(np.flatnonzero(np.diff(csr.indptr)))  # (U',) users with a row
    for idx in shuffled_batches(len(users), batch_size, generator):
        user = users[idx]  # (B,)
        rows = torch.from_numpy(csr[user.numpy()].toarray())  # (B, I)
        batch = {"user": user, "rows": rows}
        if negative_ratio > 0:
            n_pos = rows.sum(1, keepdim=True)  # (B, 1)
            p = (negative_ratio * n_pos / (rows.shape[1] - n_pos).clamp_min(1)).clamp(max=1)  # (B, 1)
            draw = torch.rand(rows.shape, generator=generator)  # (B, I)
            batch["mask"] = (rows > 0) | (draw < p)  # (B, I)
        yield batch


def reconstruction_loss(
    logits: torch.Tensor, rows: torch.Tensor, kind: str, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Log loss (`"bce"`) or squared error of σ(logits) (`"squared"`) against the row, averaged
    over the entries in `mask` (all entries when None)."""
    weight = None if mask is None else mask.float()
    if kind == "bce":
        return bce(logits, rows, weight)
    return mse(torch.sigmoid(logits.float()), rows, weight)


def build(config: CDAEConfig, train: InteractionData, item_vectors: torch.Tensor | None = None) -> CDAE:
    net = CDAE(train.n_users, train.n_items, config.hidden, config.corruption, config.activation)
    if item_vectors is not None:
        init_embedding_from_vectors(net.item, item_vectors, freeze=config.freeze_item_vectors)
    return net


def batches(network, train, config: CDAEConfig, batch_size, generator) -> Iterator[Batch]:
    return user_rows_in_batches(train, batch_size, generator, config.negative_ratio)


def loss(network: CDAE, batch: Batch, config: CDAEConfig) -> torch.Tensor:
    logits = network.logits(batch["user"], batch["rows"], corrupt=network.training)  # (B, I)
    return reconstruction_loss(logits, batch["rows"], config.loss, batch.get("mask"))


FAMILY = Family(
    name="cdae", config=CDAEConfig, build=build, batches=batches, loss=loss,
    paper="Wu, DuBois, Zheng & Ester 2016",
)
