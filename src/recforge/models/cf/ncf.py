"""What the three Neural Collaborative Filtering families share — `gmf`, `mlp` and `neumf`
(He, Liao, Zhang, Nie, Hu & Chua 2017, "Neural Collaborative Filtering"): the config fields of the
objective, the MLP tower, the pointwise batches (positives plus sampled negatives) and the loss.

Objectives (the paper's section 3.1.1):
- `bce`: implicit feedback. Every observed (u, i) is a positive with label 1 and `n_negatives`
  unobserved items per positive are drawn afresh each epoch with label 0; the network outputs a
  logit and σ lives in the loss (`losses.bce`).
- `mse`: explicit ratings. The weighted squared loss Σ w_ui (y_ui - ŷ_ui)² on rating rows (the
  estimator keeps only those when `objective == "mse"`); the output is the rating itself and the
  output bias starts at the global mean. With `negative_weight > 0`, `n_negatives` unrated items
  per rating join with target 0 and weight `negative_weight` (the paper's sampled Y⁻).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.models.base import Batch, ModelConfig
from recforge.models.layers import Dropout, lookup
from recforge.training.losses import bce, mse
from recforge.training.samplers import Positives, popularity_negatives, shuffled_chunks, uniform_negatives

# Negatives are drawn for this many positives at once: one sampler call per ~32 batches keeps the
# per-batch Python cost low while memory stays bounded on large datasets.
_DRAW_ROWS = 1 << 16
# Elements of one (B, C, L0) block when the tower scores a user batch against all items.
_CROSS_ELEMS = 1 << 22


class NCFConfig(ModelConfig):
    """Objective and negative sampling, shared by `gmf`, `mlp` and `neumf`."""

    objective: Literal["bce", "mse"] = "bce"
    n_negatives: int = Field(4, ge=1, le=1000)
    negative_sampler: Literal["uniform", "popularity"] = "uniform"
    popularity_alpha: float = Field(0.75, ge=0, le=1)
    negative_weight: float = Field(0.0, ge=0)
    freeze_item_vectors: bool = False


class TowerConfig(NCFConfig):
    """Adds the MLP tower: hidden sizes after the (2·dim) input, and dropout after each ReLU."""

    layers: tuple[PositiveInt, ...] = Field((64, 32, 16), min_length=1)
    dropout: float = Field(0.0, ge=0, lt=1)


class Tower(nn.Module):
    """NCF's MLP over [p_u; q_i]: Linear → ReLU → Dropout per layer; outputs (B, layers[-1])."""

    def __init__(self, dim: int, layers: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        sizes = (2 * dim, *layers)
        self.dim = dim
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        for layer in self.layers:
            # zero biases: the paper's N(0, 0.01) embeddings feed the first layer almost zeros,
            # so a negative random bias would start a unit dead — often the whole narrow top layer
            nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        self.dropout = Dropout(dropout)
        self.out_dim = sizes[-1]

    def user_half(self, p: torch.Tensor) -> torch.Tensor:
        """W_u p + b: the user's share of the first layer, W [p; q] + b = W_u p + W_i q + b."""
        first = self.layers[0]
        return F.linear(p, first.weight[:, : self.dim], first.bias)  # (B, L0)

    def item_half(self, q: torch.Tensor) -> torch.Tensor:
        """W_i q: the item's share of the first layer."""
        return F.linear(q, self.layers[0].weight[:, self.dim :])  # (B, L0)

    def top(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU of the first layer's pre-activation (…, L0), then the remaining layers."""
        x = self.dropout(F.relu(x))
        for layer in self.layers[1:]:
            x = self.dropout(F.relu(layer(x)))  # (…, L_k)
        return x

    def forward(
        self, user_emb: nn.Embedding, item_emb: nn.Embedding, user: torch.Tensor, item: torch.Tensor
    ) -> torch.Tensor:
        """tower([p_u; q_i]) for the pairs (user, item): (B,), (B,) -> (B, L).

        The first, widest layer is computed once per distinct user and item of the batch and then
        gathered: a batch repeats ids (each positive comes with its negatives, and small catalogues
        recur), which makes this several times cheaper than projecting every pair on a CPU.
        """
        a_user = _per_distinct(self.user_half, user_emb, user)  # (B, L0)
        a_item = _per_distinct(self.item_half, item_emb, item)  # (B, L0)
        return self.top(a_user + a_item)  # (B, L)

    def cross(self, p: torch.Tensor, q: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """h · tower([p_b; q_i]) for every user b and item i: (B, D), (I, D), (L,) -> (B, I).

        With the first layer split per user and per item, the (B, I) cross product costs one add
        plus the smaller layers, in item chunks that bound memory.
        """
        a_user, a_item = self.user_half(p), self.item_half(q)  # (B, L0), (I, L0)
        b, n_items = p.shape[0], q.shape[0]
        chunk = max(1, _CROSS_ELEMS // max(1, b * a_user.shape[1]))
        out = [
            self.top(a_user[:, None, :] + a_item[None, start : start + chunk]) @ h  # (B, C)
            for start in range(0, n_items, chunk)
        ]
        return torch.cat(out, dim=1) if out else p.new_zeros(b, 0)


def _per_distinct(half, emb: nn.Embedding, idx: torch.Tensor) -> torch.Tensor:
    """half(emb(idx)) evaluated once per distinct index: (B,) -> (B, L0)."""
    if idx.device.type != "cpu":
        # on an accelerator torch.unique would stall the host every batch, and FLOPs are cheap
        return half(emb(idx))
    uniq, inverse = torch.unique(idx, return_inverse=True)  # (K,), (B,)
    return half(lookup(emb, uniq)).index_select(0, inverse)


def init_embeddings(*embeddings: nn.Embedding) -> None:
    """N(0, 0.01), the paper's initialisation of the embedding tables."""
    for emb in embeddings:
        nn.init.normal_(emb.weight, std=0.01)


def init_output(predict: nn.Linear, config: NCFConfig, train: InteractionData) -> None:
    """The output bias starts at logit 0 for `bce` and at the global mean for `mse`, so the
    network fits deviations from it rather than spending its first epochs learning the offset."""
    mean = float(train.value.mean()) if config.objective == "mse" and len(train) else 0.0
    nn.init.constant_(predict.bias, mean)


def pointwise_batches(
    train: InteractionData, config: NCFConfig, batch_size: int, generator: torch.Generator
) -> Iterator[Batch]:
    """One epoch of shuffled pointwise batches: `batch_size` observed rows, each followed by its
    sampled negatives, flattened to `user`, `item`, `target` (and `weight` when it is not uniform).
    A batch thus holds batch_size · (1 + n_negatives) pairs (batch_size for ratings alone)."""
    user = torch.as_tensor(train.user_idx, dtype=torch.int64)  # (N,)
    item = torch.as_tensor(train.item_idx, dtype=torch.int64)  # (N,)
    if config.objective == "mse":
        target = torch.as_tensor(train.value, dtype=torch.float32)  # (N,) ratings
        n_neg = config.n_negatives if config.negative_weight > 0 else 0
        neg_weight = config.negative_weight
    else:
        target = torch.ones(len(train))  # (N,) labels
        n_neg, neg_weight = config.n_negatives, 1.0
    # indexed once per epoch, so each chunk's exclusion test is one lookup per draw
    positives = Positives(train.csr) if n_neg else None
    popularity = train.item_popularity if config.negative_sampler == "popularity" else None
    for idx in shuffled_chunks(len(train), batch_size, generator, _DRAW_ROWS):  # (R,)
        u, i, t = user[idx], item[idx], target[idx]  # (R,) each
        w = None
        if n_neg:
            if popularity is None:
                neg = uniform_negatives(u, positives, n_neg, generator)  # (R, n)
            else:
                neg = popularity_negatives(
                    u, positives, n_neg, generator, popularity, config.popularity_alpha
                )
            u = u[:, None].expand(-1, 1 + n_neg)  # (R, 1 + n)
            i = torch.cat([i[:, None], neg], dim=1)  # (R, 1 + n)
            t = torch.cat([t[:, None], t.new_zeros(len(idx), n_neg)], dim=1)  # (R, 1 + n)
            if neg_weight != 1.0:
                w = torch.cat([t.new_ones(len(idx), 1), t.new_full((len(idx), n_neg), neg_weight)], dim=1)
        for b in range(0, len(idx), batch_size):
            batch = {
                "user": u[b : b + batch_size].reshape(-1),
                "item": i[b : b + batch_size].reshape(-1),
                "target": t[b : b + batch_size].reshape(-1),
            }
            if w is not None:
                batch["weight"] = w[b : b + batch_size].reshape(-1)
            yield batch


def pointwise_loss(pred: torch.Tensor, batch: Batch, config: NCFConfig) -> torch.Tensor:
    """Log loss on logits (`bce`) or the weighted squared loss (`mse`) of a pointwise batch."""
    if config.objective == "bce":
        return bce(pred, batch["target"], batch.get("weight"))
    return mse(pred, batch["target"], batch.get("weight"))
