"""`gru4rec`: session-based recommendation with a GRU over the session's items, trained with
session-parallel mini-batches and ranking losses (Hidasi, Karatzoglou, Baltrunas & Tikk 2016,
"Session-based Recommendations with Recurrent Neural Networks"; Hidasi & Karatzoglou 2018,
"Recurrent Neural Networks with Top-k Gains for Session-based Recommendations").

h_t = GRU(x_t, h_{t-1}),  x_t = one-hot(i_t) or an item embedding;  s(i | i_1..t) = h_t · w_i + b_i.

Training: B sessions run side by side, one event at a time; when a session ends, the next one
takes its slot and the slot's state is reset. A batch of the fit loop is a chunk of `bptt` steps
of all slots (truncated back-propagation through time); the state carries from one chunk to the
next inside the network and every slot restarts at the first step of an epoch. Negatives are the
other slots' targets at the same step (+ `n_extra_negatives` popularity-sampled items); `loss` picks
BPR, TOP1, BPR-max, TOP1-max, a sampled softmax or the full softmax cross-entropy.
"""

from __future__ import annotations

from collections.abc import Iterator

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.models.base import Batch, Family
from recforge.models.sequence.rnn_common import (
    GRUCell,
    ItemHead,
    RNNConfig,
    embedding,
    next_item_loss,
    prepare_recurrent,
    run_parallel,
    run_prefix,
)
from recforge.models.sequence.session_steps import parallel_batches, sequence_steps, training_sequences
from recforge.models.sequence.sequence import SequenceNetwork


class GRU4RecConfig(RNNConfig):
    input: Literal["onehot", "embedding"] = "embedding"
    bptt: int = Field(8, gt=0, description="steps per batch; the batch's slots are batch_size // bptt")
    max_len: int = Field(20, gt=0)

    @model_validator(mode="after")
    def _tie_needs_an_embedding(self) -> GRU4RecConfig:
        if self.tie_embeddings and self.input == "onehot":
            raise ValueError("tie_embeddings needs input='embedding': a one-hot input has no item table")
        return self


class GRU4Rec(SequenceNetwork):
    def __init__(self, n_items: int, config: GRU4RecConfig) -> None:
        super().__init__()
        h = config.hidden
        if config.input == "embedding":
            self.item = embedding(n_items, config.dim)
            self.input_gates = nn.Linear(config.dim, 3 * h)
        else:
            # a one-hot input times W_x is a row of W_x: an embedding straight into the gates
            self.item = None
            self.input_gates = embedding(n_items, 3 * h, std=0.05)
            self.input_bias = nn.Parameter(torch.zeros(3 * h))
        self.cell = GRUCell(h)
        self.drop = nn.Dropout(config.dropout)
        self.head = ItemHead(n_items, h, self.item if config.tie_embeddings else None)
        self.hidden_size = h
        self.state: torch.Tensor | None = None  # (B, H) carried across chunks; not a parameter

    def gates(self, items: torch.Tensor) -> torch.Tensor:  # (...,) -> (..., 3H)
        items = items.clamp_min(0)
        if self.item is None:
            return self.input_gates(items) + self.input_bias
        return self.input_gates(self.drop(self.item(items)))

    def run_chunk(self, items: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        """Session-parallel steps: (C, B) items and restart flags -> (C, B, H) states; the final
        state is kept for the next chunk."""
        xg = self.gates(items)  # (C, B, 3H)
        h = self.state
        if h is None or h.shape[0] != items.shape[1]:
            h = xg.new_zeros(items.shape[1], self.hidden_size)  # (B, H)
        out, h = run_parallel(self.cell, xg, start, h)  # (C, B, H)
        self.state = h.detach()
        return out

    def score_sequence(self, items: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, I)
        h0 = items.new_zeros(items.shape[0], self.hidden_size, dtype=torch.float32)
        h = run_prefix(self.cell, self.gates(items), items, h0)  # (B, H)
        return self.head(h)

    def item_embeddings(self) -> torch.Tensor:
        return self.head.item.weight


def build(
    config: GRU4RecConfig, train: InteractionData, item_vectors: torch.Tensor | None = None
) -> GRU4Rec:
    net = GRU4Rec(train.n_items, config)
    prepare_recurrent(net, train, config, item_vectors, net.item if net.item is not None else net.head.item)
    return net


def batches(
    network: GRU4Rec,
    train: InteractionData,
    config: GRU4RecConfig,
    batch_size: int,
    generator: torch.Generator,
) -> Iterator[Batch]:
    network.state = None  # every slot starts a fresh session at the first step of an epoch
    steps = sequence_steps(training_sequences(train, config.by), config.max_len)
    yield from parallel_batches(
        steps, batch_size, config.bptt, generator,
        n_negatives=config.n_extra_negatives, neg_probs=network.neg_probs.cpu(),
    )


def loss(network: GRU4Rec, batch: Batch, config: GRU4RecConfig) -> torch.Tensor:
    h = network.drop(network.run_chunk(batch["item"], batch["start"]))  # (C, B, H)
    return next_item_loss(
        network.head, h, batch["target"], batch["rows"], config, batch.get("negatives"),
        network.target_probs, network.neg_probs,
    )


FAMILY = Family(
    name="gru4rec", config=GRU4RecConfig, build=build, batches=batches, loss=loss,
    paper="Hidasi et al. 2016; Hidasi & Karatzoglou 2018", next_item=True,
)
