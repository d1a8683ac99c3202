"""Interactions as ordered sequences — the input of session and sequence families.

`Sequences` is a CSR-like layout: sequence s holds `items[offsets[s]:offsets[s+1]]` in time order
(ties broken by row order), grouped by session (session-based models) or by user (user sequences).
`next_item_examples` turns them into (prefix, target) pairs for every position, right-aligned and
left-padded with `PAD` (-1), all vectorised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from recforge.data.errors import DataError
from recforge.data.interactions import InteractionData

PAD = -1


@dataclass(frozen=True)
class Sequences:
    offsets: np.ndarray  # (S+1,) int64
    items: np.ndarray  # (N,) int64 item_idx in time order within each sequence
    users: np.ndarray  # (S,) int64 the sequence's user_idx
    timestamps: np.ndarray  # (N,) int64
    events: np.ndarray | None  # (N,) int8 event codes, or None
    n_items: int

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def sequence_of(self, row: np.ndarray) -> np.ndarray:
        """Index of the sequence each flat position belongs to: (N,)."""
        return np.repeat(np.arange(len(self)), self.lengths)


def build_sequences(
    data: InteractionData,
    by: Literal["session", "user"] = "session",
    min_length: int = 1,
    max_length: int | None = None,
) -> Sequences:
    """Group `data` by session (or user) and order each group by time.

    Sequences shorter than `min_length` are dropped; longer than `max_length` keep their most
    recent `max_length` events.
    """
    if by == "session":
        if data.session is None:
            raise DataError("no session_id in this split: use by='user'", column="session_id")
        key = data.session
    else:
        key = data.user_idx
    order = np.lexsort((np.arange(len(data)), data.timestamp, key))  # key, then time, then row
    k = key[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if len(k) else np.array([], dtype=np.int64)
    offsets = np.r_[starts, len(k)].astype(np.int64)
    lengths = np.diff(offsets)
    keep_len = lengths if max_length is None else np.minimum(lengths, max_length)
    keep = lengths >= min_length
    # positions to keep: the last keep_len[s] of each kept sequence
    seq_of = np.repeat(np.arange(len(lengths)), lengths)
    pos_from_end = offsets[1:][seq_of] - np.arange(len(k)) - 1
    mask = keep[seq_of] & (pos_from_end < keep_len[seq_of])
    rows = order[mask]
    new_len = np.where(keep, keep_len, 0)[keep]
    return Sequences(
        offsets=np.r_[0, np.cumsum(new_len)].astype(np.int64),
        items=data.item_idx[rows],
        users=data.user_idx[order[offsets[:-1]]][keep],
        timestamps=data.timestamp[rows],
        events=None if data.event is None else data.event[rows],
        n_items=data.n_items,
    )


def next_item_examples(
    seqs: Sequences, max_len: int, positions: Literal["all", "last"] = "all"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prefixes (E, max_len) right-aligned with PAD, targets (E,), sequence index (E,)).

    `all`: every position t >= 1 predicts item t from items < t (GRU4Rec's protocol);
    `last`: only the last item of each sequence.
    """
    lengths = seqs.lengths
    seq_of = np.repeat(np.arange(len(seqs)), lengths)  # (N,)
    pos = np.arange(len(seqs.items)) - seqs.offsets[seq_of]  # (N,) position within sequence
    is_target = pos >= 1
    if positions == "last":
        is_target &= pos == lengths[seq_of] - 1
    tgt = np.flatnonzero(is_target)  # flat indices of targets
    # prefix window: flat positions tgt - max_len .. tgt - 1, masked to the same sequence
    window = tgt[:, None] - max_len + np.arange(max_len)[None, :]  # (E, max_len)
    start = seqs.offsets[seq_of[tgt]][:, None]
    valid = window >= start
    prefixes = np.where(valid, seqs.items[np.clip(window, 0, None)], PAD)
    return prefixes.astype(np.int64), seqs.items[tgt], seq_of[tgt]
