"""The base of session and sequence families: score the next item from an ordered prefix.

A `SequenceNetwork` implements `score_sequence(items (B, L)) -> (B, n_items)` over right-aligned
prefixes padded with `PAD` (-1). It also satisfies the ordinary `RecommenderNetwork` interface:
`score_all(user, history)` scores from the user's most recent training items in time order, kept
in the `user_sequence` buffer at build time, so sequence families sit on the same leaderboard and
protocols as every other family.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch

from recforge.data.interactions import InteractionData
from recforge.data.sequences import PAD, build_sequences, next_item_examples
from recforge.models.base import Batch, RecommenderNetwork
from recforge.training.samplers import shuffled_batches


class SequenceNetwork(RecommenderNetwork):
    """Next-item scorer over ordered prefixes."""

    max_len: int

    def init_user_sequences(self, train: InteractionData, max_len: int) -> None:
        """Keep each user's last `max_len` training items (time order) as the `user_sequence` buffer."""
        seqs = build_sequences(train, by="user", max_length=max_len) if len(train) else None
        buf = torch.full((train.n_users, max_len), PAD, dtype=torch.long)  # (U, L)
        if seqs is not None and len(seqs):
            lengths = seqs.lengths
            seq_of = np.repeat(np.arange(len(seqs)), lengths)
            col = max_len - lengths[seq_of] + (np.arange(len(seqs.items)) - seqs.offsets[seq_of])
            buf[torch.as_tensor(seqs.users[seq_of]), torch.as_tensor(col)] = torch.as_tensor(seqs.items)
        self.register_buffer("user_sequence", buf)
        self.n_users, self.n_items, self.max_len = train.n_users, train.n_items, max_len

    def score_sequence(self, items: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, I)
        raise NotImplementedError

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:  # (B,), (B,) -> (B,)
        # Pairs repeat users (sampled ranking): score each distinct user's prefix once.
        uniq, inverse = torch.unique(user, return_inverse=True)
        return self.score_all(uniq, None)[inverse, item]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        adopt_buffer_shapes(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.score_sequence(self.user_sequence[user])  # (B, I)


def adopt_buffer_shapes(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], prefix: str) -> None:
    """Resize `module`'s own buffers to their shapes in `state_dict` before it is loaded.

    Fitted tables (sessions, posting lists, transitions) are sized by the training data, which the
    shell a model is rebuilt from on load does not have; the saved tensors carry the real sizes.
    """
    for name, buf in list(module._buffers.items()):
        saved = state_dict.get(prefix + name)
        if buf is not None and saved is not None and saved.shape != buf.shape:
            module._buffers[name] = torch.empty(saved.shape, dtype=saved.dtype, device=buf.device)


def sequence_batches(
    train: InteractionData,
    max_len: int,
    batch_size: int,
    generator: torch.Generator,
    by: Literal["session", "user", "auto"] = "auto",
) -> Iterator[Batch]:
    """Shuffled (prefix, target) batches over every position of the training sequences:
    {"items": (B, L) right-aligned prefixes padded with PAD, "target": (B,), "user": (B,)}.
    `auto` groups by session when the split has sessions, else by user."""
    if by == "auto":
        by = "session" if train.session is not None else "user"
    seqs = build_sequences(train, by=by, min_length=2)
    prefixes, targets, seq = next_item_examples(seqs, max_len)
    prefixes, targets = torch.as_tensor(prefixes), torch.as_tensor(targets)
    users = torch.as_tensor(seqs.users[seq])
    for idx in shuffled_batches(len(targets), batch_size, generator):
        yield {"items": prefixes[idx], "target": targets[idx], "user": users[idx]}
