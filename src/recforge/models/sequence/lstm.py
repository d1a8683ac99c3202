"""`lstm`: next-purchase prediction as sequence classification — an LSTM (Hochreiter & Schmidhuber
1997, "Long Short-Term Memory") reads the user's recent actions, item ids or pretrained item
vectors, and a softmax over the catalogue predicts the next one (the "LSTM next purchase" model of
Sonie, Sarkar & Kumar's "Concept to Code" tutorial on deep learning for recommender systems).

p(i_{t+1} | i_1..t) = softmax(W h_t + b),  h_t = LSTM(x_1..t).

Every prefix of a training sequence is one example; the LSTM being causal, one pass over a run
of up to `max_len` steps classifies all of its prefixes at once. `loss: cross_entropy` is the full
softmax; `sampled_softmax` (with `n_extra_negatives` popularity-drawn items and logQ correction) is
for large catalogues.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pydantic import Field
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.models.base import Batch, Family
from recforge.models.sequence.rnn_common import (
    ItemHead,
    RNNConfig,
    embedding,
    left_align,
    next_item_loss,
    prepare_recurrent,
)
from recforge.models.sequence.session_steps import row_batches, sequence_steps, training_sequences
from recforge.models.sequence.sequence import SequenceNetwork


class LSTMConfig(RNNConfig):
    layers: int = Field(1, gt=0)
    max_len: int = Field(20, gt=0)


class LSTMNext(SequenceNetwork):
    def __init__(self, n_items: int, config: LSTMConfig) -> None:
        super().__init__()
        self.item = embedding(n_items, config.dim)
        self.lstm = nn.LSTM(
            config.dim, config.hidden, config.layers, batch_first=True,
            dropout=config.dropout if config.layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = ItemHead(n_items, config.hidden, self.item if config.tie_embeddings else None)

    def encode(self, items: torch.Tensor) -> torch.Tensor:  # (B, L) left-aligned -> (B, L, H)
        out, _ = self.lstm(self.drop(self.item(items.clamp_min(0))))
        return out

    def score_sequence(self, items: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, I)
        left, length = left_align(items)
        out = self.encode(left)  # (B, L, H)
        h = out[torch.arange(len(items), device=items.device), (length - 1).clamp_min(0)]  # (B, H)
        return self.head(h * (length > 0)[:, None])

    def item_embeddings(self) -> torch.Tensor:
        return self.head.item.weight


def build(
    config: LSTMConfig, train: InteractionData, item_vectors: torch.Tensor | None = None
) -> LSTMNext:
    net = LSTMNext(train.n_items, config)
    prepare_recurrent(net, train, config, item_vectors)
    return net


def batches(
    network: LSTMNext,
    train: InteractionData,
    config: LSTMConfig,
    batch_size: int,
    generator: torch.Generator,
) -> Iterator[Batch]:
    steps = sequence_steps(training_sequences(train, config.by), config.max_len)
    yield from row_batches(
        steps, batch_size, generator, n_negatives=config.n_extra_negatives, neg_probs=network.neg_probs.cpu()
    )


def loss(network: LSTMNext, batch: Batch, config: LSTMConfig) -> torch.Tensor:
    out = network.drop(network.encode(batch["item"]))  # (B, L, H)
    rows = batch["rows"]
    # one group: every target of the batch is a candidate for every other
    h = out.reshape(-1, out.shape[-1])[rows][None]  # (1, E, H)
    target = batch["target"].reshape(-1)[rows][None]  # (1, E)
    all_rows = torch.arange(len(rows), device=rows.device)
    return next_item_loss(
        network.head, h, target, all_rows, config, batch.get("negatives"),
        network.target_probs, network.neg_probs,
    )


FAMILY = Family(
    name="lstm", config=LSTMConfig, build=build, batches=batches, loss=loss,
    paper="Hochreiter & Schmidhuber 1997; Sonie, Sarkar & Kumar (Concept to Code)", next_item=True,
)
