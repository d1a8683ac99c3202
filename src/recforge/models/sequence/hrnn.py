"""`hrnn`: a hierarchical RNN that personalises session-based recommendation — a session GRU over
the items of a session, and a user GRU over the user's sessions (Quadrana, Karatzoglou, Hidasi &
Cremonesi 2017, "Personalizing Session-based Recommendations with Hierarchical Recurrent Neural
Networks").

At the end of session m the user state absorbs the session's final state,
c_m = GRU_usr(s_m, c_{m-1}); the next session starts from s_0 = tanh(W_init c_m + b_init)
(and, with `user_to_input`, reads c_m at every step: the paper's HRNN All). A session's last item
is read too, so s_m summarises the whole session.

Training walks users' sessions in time order with user-parallel mini-batches: B users side by
side, each slot playing one user's sessions back to back, chunks of `bptt` steps, both states
carried across chunks inside the network. Without a session column, sessions are cut after
`session_gap_s` seconds of inactivity. After training (when the network is put in eval mode),
`user_state` and `session_state` are recomputed for every user by reading all of their training
sessions: a user's scores continue their last session, and `score_sequence(items, user)` starts
a new session from their user state.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from pydantic import Field
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
    run_prefix,
)
from recforge.models.sequence.session_steps import (
    Steps,
    parallel_batches,
    row_layout,
    sequence_steps,
    training_sequences,
)
from recforge.models.sequence.sequence import SequenceNetwork


class HRNNConfig(RNNConfig):
    user_hidden: int = Field(64, gt=0)
    user_to_input: bool = False
    session_gap_s: int = Field(3600, gt=0)
    bptt: int = Field(8, gt=0, description="steps per batch; the batch's slots are batch_size // bptt")
    max_len: int = Field(20, gt=0)


class HRNN(SequenceNetwork):
    def __init__(self, n_users: int, n_items: int, config: HRNNConfig) -> None:
        super().__init__()
        h, hu = config.hidden, config.user_hidden
        self.item = embedding(n_items, config.dim)
        self.input_gates = nn.Linear(config.dim, 3 * h)
        self.user_input = nn.Linear(hu, 3 * h, bias=False) if config.user_to_input else None
        self.session = GRUCell(h)
        self.user_gates = nn.Linear(h, 3 * hu)
        self.user = GRUCell(hu)
        self.init = nn.Linear(hu, h)
        self.drop = nn.Dropout(config.dropout)
        self.head = ItemHead(n_items, h, self.item if config.tie_embeddings else None)
        self.hidden_size, self.user_size = h, hu
        self.register_buffer("user_state", torch.zeros(n_users, hu))  # where a new session starts
        self.register_buffer("session_state", torch.zeros(n_users, h))  # after the last session
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None  # (s, c) across chunks
        self.steps: Steps | None = None  # the training sessions, read again by `refresh`
        self.stale = False  # parameters changed since user_state / session_state were computed

    def start_session(self, c: torch.Tensor) -> torch.Tensor:  # (B, Hu) -> (B, H)
        return torch.tanh(self.init(c))

    def step(
        self,
        xg: torch.Tensor,
        s: torch.Tensor,
        c: torch.Tensor,
        start: torch.Tensor,
        user_start: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step for every slot: (B, 3H) input gates, states s (B, H) and c (B, Hu), and where
        a session and a user start (B,). A new session first folds the finished one into c."""
        c_next = self.user(self.user_gates(s), c)  # (B, Hu)
        c = torch.where(start[:, None], c_next, c).masked_fill(user_start[:, None], 0.0)
        s = torch.where(start[:, None], self.start_session(c), s)
        if self.user_input is not None:
            xg = xg + self.user_input(c)
        return self.session(xg, s), c

    def gates(self, items: torch.Tensor) -> torch.Tensor:  # (...,) -> (..., 3H)
        return self.input_gates(self.drop(self.item(items.clamp_min(0))))

    def run_chunk(self, items: torch.Tensor, start: torch.Tensor, user_start: torch.Tensor) -> torch.Tensor:
        """User-parallel steps, (C, B) each -> (C, B, H) session states; both states are kept."""
        xg = self.gates(items)  # (C, B, 3H)
        b = items.shape[1]
        if self.state is None or self.state[0].shape[0] != b:
            c = xg.new_zeros(b, self.user_size)
            self.state = (self.start_session(c), c)
        s, c = self.state
        out = []
        for x_t, start_t, user_t in zip(xg.unbind(0), start.unbind(0), user_start.unbind(0)):
            s, c = self.step(x_t, s, c, start_t, user_t)
            out.append(s)
        self.state = (s.detach(), c.detach())
        return torch.stack(out)  # (C, B, H)

    @torch.no_grad()
    def refresh(self) -> None:
        """Read every user's training sessions with the current parameters: `session_state` is
        the state after a user's last event, `user_state` the one a new session would start from."""
        self.stale = False
        steps = self.steps
        if steps is None or len(steps) == 0:
            return
        layout = row_layout(steps.unit)  # one user per slot
        dev = self.user_state.device
        grid = {k: torch.from_numpy(layout.grid(v, False if v.dtype == bool else 0)).to(dev)
                for k, v in (("item", steps.item), ("start", steps.start), ("user_start", steps.unit_start))}
        active = torch.from_numpy(layout.grid(np.ones(len(steps), bool), False)).to(dev)  # (T, U')
        c = torch.zeros(layout.slots, self.user_size, device=dev)
        s = self.start_session(c)
        for t in range(layout.length):
            xg = self.gates(grid["item"][t])  # (U', 3H)
            s_new, c_new = self.step(xg, s, c, grid["start"][t], grid["user_start"][t])
            s = torch.where(active[t][:, None], s_new, s)
            c = torch.where(active[t][:, None], c_new, c)
        users = torch.from_numpy(steps.user[steps.unit[:-1]]).to(dev)
        self.session_state[users] = s
        self.user_state[users] = self.user(self.user_gates(s), c)

    def train(self, mode: bool = True) -> HRNN:
        super().train(mode)
        if not mode and self.stale:
            self.refresh()
        return self

    def score_sequence(self, items: torch.Tensor, user: torch.Tensor | None = None) -> torch.Tensor:
        """A new session's prefixes (B, L) -> (B, I), starting from these users' state (or from a
        user never seen before)."""
        c = self.user_state[user] if user is not None else items.new_zeros(
            items.shape[0], self.user_size, dtype=torch.float32)
        xg = self.gates(items)  # (B, L, 3H)
        if self.user_input is not None:
            xg = xg + self.user_input(c)[:, None, :]
        s = run_prefix(self.session, xg, items, self.start_session(c))  # (B, H)
        return self.head(s)

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.head(self.session_state[user])  # (B, I): continue the last session

    def item_embeddings(self) -> torch.Tensor:
        return self.head.item.weight


def training_steps(train: InteractionData, config: HRNNConfig) -> Steps:
    seqs = training_sequences(train, "session", session_gap_s=config.session_gap_s)
    return sequence_steps(seqs, config.max_len, last_as_input=True, units="user")


def build(
    config: HRNNConfig, train: InteractionData, item_vectors: torch.Tensor | None = None
) -> HRNN:
    net = HRNN(train.n_users, train.n_items, config)
    prepare_recurrent(net, train, config, item_vectors)
    net.steps = training_steps(train, config) if len(train) else None
    return net


def batches(
    network: HRNN,
    train: InteractionData,
    config: HRNNConfig,
    batch_size: int,
    generator: torch.Generator,
) -> Iterator[Batch]:
    network.state = None  # every slot starts a fresh user at the first step of an epoch
    steps = network.steps if network.steps is not None else training_steps(train, config)
    yield from parallel_batches(
        steps, batch_size, config.bptt, generator,
        n_negatives=config.n_extra_negatives, neg_probs=network.neg_probs.cpu(), fields=("unit_start",),
    )


def loss(network: HRNN, batch: Batch, config: HRNNConfig) -> torch.Tensor:
    network.stale = True
    h = network.drop(network.run_chunk(batch["item"], batch["start"], batch["unit_start"]))  # (C, B, H)
    return next_item_loss(
        network.head, h, batch["target"], batch["rows"], config, batch.get("negatives"),
        network.target_probs, network.neg_probs,
    )


FAMILY = Family(
    name="hrnn", config=HRNNConfig, build=build, batches=batches, loss=loss,
    paper="Quadrana et al. 2017", next_item=True,
)
