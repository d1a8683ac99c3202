"""`contextual_rnn`: a session GRU that reads the context of every event — its type (view, cart,
purchase, …) and the time since the previous event — (Smirnova & Vasile 2017, "Contextual
Sequence Modeling for Recommendation with Recurrent Neural Networks").

c_t = E_event[e_t] + E_gap[bucket(τ_t - τ_{t-1})]; the context enters where `context_at` says:
- input: the GRU reads [x_t ; c_t] (concatenation);
- update: the GRU's input gates are scaled by 2σ(W_u c_t), so the context decides how much of
  this event reaches the reset, update and candidate gates (multiplicative integration);
- output: h_t is scaled by 2σ(W_o E_next[e_{t+1}]), the type of the event being predicted.
Both scalings start at 1 (zero-initialised W). The time gap is log2-bucketed; a gap over
`session_gap_s` counts as a new session. With probability `context_dropout` a training event's
context is replaced by "unknown", which is also what scoring assumes where none is given.
Trained with session-parallel mini-batches like `gru4rec`.
"""

from __future__ import annotations

from collections.abc import Iterator

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.data.sequences import build_sequences
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
from recforge.models.sequence.session_steps import (
    UNKNOWN_EVENT,
    event_codes,
    gap_buckets,
    n_gap_buckets,
    parallel_batches,
    sequence_steps,
    training_sequences,
    user_tails,
)
from recforge.models.sequence.sequence import SequenceNetwork

Where = Literal["input", "update", "output"]


class ContextualRNNConfig(RNNConfig):
    context_dim: int = Field(16, gt=0)
    context_at: tuple[Where, ...] = ("input", "update", "output")
    context_dropout: float = Field(0.1, ge=0, lt=1)
    session_gap_s: int = Field(1800, gt=0)
    bptt: int = Field(8, gt=0, description="steps per batch; the batch's slots are batch_size // bptt")
    max_len: int = Field(20, gt=0)


class ContextualRNN(SequenceNetwork):
    def __init__(self, n_items: int, config: ContextualRNNConfig) -> None:
        super().__init__()
        h, dc = config.hidden, config.context_dim
        self.at = set(config.context_at)
        self.unknown_gap = n_gap_buckets(config.session_gap_s) - 1
        self.item = embedding(n_items, config.dim)
        self.event = embedding(UNKNOWN_EVENT + 1, dc)
        self.gap = embedding(self.unknown_gap + 1, dc)
        self.input_gates = nn.Linear(config.dim + (dc if "input" in self.at else 0), 3 * h)
        self.update_gate = nn.Linear(dc, 3 * h) if "update" in self.at else None
        self.next_event = embedding(UNKNOWN_EVENT + 1, dc) if "output" in self.at else None
        self.output_gate = nn.Linear(dc, h) if "output" in self.at else None
        for gate in (self.update_gate, self.output_gate):
            if gate is not None:  # 2σ(0) = 1: the context starts neutral
                nn.init.zeros_(gate.weight)
                nn.init.zeros_(gate.bias)
        self.cell = GRUCell(h)
        self.drop = nn.Dropout(config.dropout)
        self.head = ItemHead(n_items, h, self.item if config.tie_embeddings else None)
        self.hidden_size = h
        self.state: torch.Tensor | None = None  # (B, H) carried across chunks; not a parameter

    def gates(self, items: torch.Tensor, events: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        """(...,) items, event codes and gap buckets -> (..., 3H) input side of the GRU gates."""
        x = self.drop(self.item(items.clamp_min(0)))  # (..., D)
        c = self.event(events) + self.gap(gaps)  # (..., Dc)
        if "input" in self.at:
            x = torch.cat([x, c], dim=-1)
        xg = self.input_gates(x)  # (..., 3H)
        if self.update_gate is not None:
            xg = xg * 2 * torch.sigmoid(self.update_gate(c))
        return xg

    def output(self, h: torch.Tensor, next_event: torch.Tensor) -> torch.Tensor:  # (..., H), (...)
        if self.output_gate is None:
            return h
        return h * 2 * torch.sigmoid(self.output_gate(self.next_event(next_event)))

    def run_chunk(
        self, items: torch.Tensor, events: torch.Tensor, gaps: torch.Tensor, start: torch.Tensor
    ) -> torch.Tensor:
        """Session-parallel steps, (C, B) each -> (C, B, H); the final state is kept."""
        xg = self.gates(items, events, gaps)  # (C, B, 3H)
        h = self.state
        if h is None or h.shape[0] != items.shape[1]:
            h = xg.new_zeros(items.shape[1], self.hidden_size)  # (B, H)
        out, h = run_parallel(self.cell, xg, start, h)  # (C, B, H)
        self.state = h.detach()
        return out

    def score_sequence(
        self,
        items: torch.Tensor,
        events: torch.Tensor | None = None,
        gaps: torch.Tensor | None = None,
        next_event: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L) right-aligned prefixes with their (B, L) event codes and gap buckets, and the
        (B,) type of the event to predict -> (B, I). Missing context is "unknown"."""
        if events is None:
            events = torch.full_like(items, UNKNOWN_EVENT)
        if gaps is None:
            gaps = torch.full_like(items, self.unknown_gap)
        if next_event is None:
            next_event = torch.full_like(items[:, 0], UNKNOWN_EVENT)
        h0 = items.new_zeros(items.shape[0], self.hidden_size, dtype=torch.float32)
        h = run_prefix(self.cell, self.gates(items, events, gaps), items, h0)  # (B, H)
        return self.head(self.output(h, next_event))

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.score_sequence(self.user_sequence[user], self.user_events[user], self.user_gaps[user])

    def item_embeddings(self) -> torch.Tensor:
        return self.head.item.weight


def build(
    config: ContextualRNNConfig, train: InteractionData, item_vectors: torch.Tensor | None = None
) -> ContextualRNN:
    net = ContextualRNN(train.n_items, config)
    prepare_recurrent(net, train, config, item_vectors)
    # the context of each user's last max_len events, aligned with user_sequence
    seqs = build_sequences(train, by="user") if len(train) else None
    events = torch.full((train.n_users, config.max_len), UNKNOWN_EVENT, dtype=torch.long)
    gaps = torch.full((train.n_users, config.max_len), net.unknown_gap, dtype=torch.long)
    if seqs is not None:
        first = np.zeros(len(seqs.items), dtype=bool)
        first[seqs.offsets[:-1]] = True
        events = user_tails(seqs, event_codes(seqs), train.n_users, config.max_len, UNKNOWN_EVENT)
        gap = gap_buckets(seqs.timestamps, first, config.session_gap_s)
        gaps = user_tails(seqs, gap, train.n_users, config.max_len, net.unknown_gap)
    net.register_buffer("user_events", events)
    net.register_buffer("user_gaps", gaps)
    return net


def batches(
    network: ContextualRNN,
    train: InteractionData,
    config: ContextualRNNConfig,
    batch_size: int,
    generator: torch.Generator,
) -> Iterator[Batch]:
    network.state = None  # every slot starts a fresh session at the first step of an epoch
    seqs = training_sequences(train, config.by)
    steps = sequence_steps(seqs, config.max_len, session_gap_s=config.session_gap_s)
    for batch in parallel_batches(
        steps, batch_size, config.bptt, generator,
        n_negatives=config.n_extra_negatives, neg_probs=network.neg_probs.cpu(),
        fields=("event", "gap", "next_event"),
    ):
        if config.context_dropout:
            shape = batch["item"].shape
            for name, unknown in (("event", UNKNOWN_EVENT), ("gap", network.unknown_gap),
                                  ("next_event", UNKNOWN_EVENT)):
                drop = torch.rand(shape, generator=generator) < config.context_dropout
                batch[name] = batch[name].masked_fill(drop, unknown)
        yield batch


def loss(network: ContextualRNN, batch: Batch, config: ContextualRNNConfig) -> torch.Tensor:
    h = network.run_chunk(batch["item"], batch["event"], batch["gap"], batch["start"])  # (C, B, H)
    h = network.drop(network.output(h, batch["next_event"]))
    return next_item_loss(
        network.head, h, batch["target"], batch["rows"], config, batch.get("negatives"),
        network.target_probs, network.neg_probs,
    )


FAMILY = Family(
    name="contextual_rnn", config=ContextualRNNConfig, build=build, batches=batches, loss=loss,
    paper="Smirnova & Vasile 2017", next_item=True,
)
