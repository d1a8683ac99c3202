"""Item sequences as the word2vec family reads them, and the per-epoch sampling of their windows.

A `Corpus` is the training split's sessions (or per-user histories) in time order, flattened:
token t is item `tokens[t]` of sequence `sequence[t]`. It is built from the TRAIN split only, so
no valid/test event leaks into the vectors. Each epoch then draws, all vectorised:

- frequent-item subsampling (Mikolov et al. 2013): an occurrence of an item of frequency f is kept
  with probability (sqrt(f / (s·N)) + 1) · s·N / f, capped at 1 — gensim's formula;
- dynamic windows: each kept token gets an effective window b ~ U{1..window}, so nearer
  neighbours are sampled more often (word2vec's "reduced window");
- the (center, context) position pairs of skip-gram, or the context bags of CBOW.

Positions, not items, are returned, so callers can map them to items, metadata or sequence owners.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from recforge.data.interactions import InteractionData
from recforge.data.sequences import build_sequences

logger = logging.getLogger(__name__)


class SequenceConfig(BaseModel):
    """How the training split becomes sentences: one per session, or one per user in time order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    by: Literal["session", "user"] = "session"
    # view -> add_to_cart -> purchase of one item is one step of a journey, not three
    collapse_repeats: bool = True
    min_length: int = Field(2, ge=1)


@dataclass(frozen=True)
class Corpus:
    """Flat item sequences: `tokens[t]` belongs to sequence `sequence[t]` (non-decreasing)."""

    tokens: np.ndarray  # (N,) int64 item_idx
    sequence: np.ndarray  # (N,) int64
    owner: np.ndarray  # (S,) int64 user_idx of each sequence
    n_items: int
    n_users: int

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def n_sequences(self) -> int:
        return len(self.owner)

    @cached_property
    def counts(self) -> np.ndarray:
        """Occurrences of each item, (n_items,) float64."""
        return np.bincount(self.tokens, minlength=self.n_items).astype(np.float64)


def build_corpus(data: InteractionData, config: SequenceConfig) -> Corpus:
    """The sentences of `data` (the TRAIN split): grouped, time-ordered, repeats collapsed."""
    by = config.by
    if by == "session" and data.session is None:
        logger.warning("the split has no session_id: building per-user sequences instead")
        by = "user"
    seqs = build_sequences(data, by=by, min_length=1)
    tokens = seqs.items.astype(np.int64)
    sequence = np.repeat(np.arange(len(seqs.lengths)), seqs.lengths)
    if config.collapse_repeats and len(tokens):
        keep = np.r_[True, (tokens[1:] != tokens[:-1]) | (sequence[1:] != sequence[:-1])]
        tokens, sequence = tokens[keep], sequence[keep]
    lengths = np.bincount(sequence, minlength=len(seqs.lengths))
    long_enough = lengths >= config.min_length
    keep = long_enough[sequence]
    renumber = np.cumsum(long_enough) - 1
    corpus = Corpus(
        tokens=tokens[keep],
        sequence=renumber[sequence[keep]].astype(np.int64),
        owner=np.asarray(seqs.users, dtype=np.int64)[long_enough],
        n_items=data.n_items,
        n_users=data.n_users,
    )
    logger.info(
        "corpus by %s: %d sequences, %d tokens, %d of %d items",
        by, corpus.n_sequences, len(corpus), int((corpus.counts > 0).sum()), data.n_items,
    )
    return corpus


def last_items(data: InteractionData, n: int) -> np.ndarray:
    """(n_users, n) each user's last `n` distinct-in-a-row items in time order, most recent first,
    -1 where the user has fewer (or no) training events."""
    out = np.full((data.n_users, n), -1, dtype=np.int64)
    if not len(data):
        return out
    order = np.lexsort((np.arange(len(data)), data.timestamp, data.user_idx))  # user, time, row
    user, item = data.user_idx[order], data.item_idx[order]
    keep = np.r_[True, (item[1:] != item[:-1]) | (user[1:] != user[:-1])]
    user, item = user[keep], item[keep]
    last = np.r_[user[1:] != user[:-1], True]
    end = np.flatnonzero(last)  # (U',) last position of each user
    from_end = np.repeat(end, np.diff(np.r_[-1, end])) - np.arange(len(user))  # 0 = most recent
    take = from_end < n
    out[user[take], from_end[take]] = item[take]
    return out


def gather(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`values[index]` for an index of any shape, by `index_select`: several times faster than
    advanced indexing on CPU, and these gathers run over every token of every epoch."""
    return values.index_select(0, index.reshape(-1)).view(*index.shape, *values.shape[1:])


def keep_probabilities(counts: np.ndarray, sample: float) -> np.ndarray:
    """Per-item probability of keeping an occurrence under frequent-item subsampling (gensim's)."""
    counts = np.asarray(counts, dtype=np.float64)
    if sample <= 0:
        return np.ones_like(counts)
    threshold = sample * counts.sum()
    with np.errstate(divide="ignore"):
        p = (np.sqrt(counts / threshold) + 1.0) * threshold / counts
    return np.minimum(np.nan_to_num(p, nan=1.0, posinf=1.0), 1.0)


def subsample(corpus: Corpus, keep_prob: np.ndarray, generator: torch.Generator) -> torch.Tensor:
    """Positions (M,) of the tokens kept this epoch, in corpus order."""
    u = torch.rand(len(corpus), generator=generator, dtype=torch.float32)
    keep = u < torch.from_numpy(keep_prob.astype(np.float32))[torch.from_numpy(corpus.tokens)]
    return torch.nonzero(keep).squeeze(1)


def window_pairs(
    sequence: torch.Tensor, window: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(center, context) index pairs into `sequence` (M,) within each token's dynamic window.

    One pass per distance d = 1..window over the whole array (never per token): token i pairs
    with i+d when both are in the same sequence and d is within i's window, and symmetrically.
    """
    n = len(sequence)
    b = torch.randint(1, window + 1, (n,), generator=generator)  # (M,) effective windows
    pos = torch.arange(n)
    centers, contexts = [], []
    for d in range(1, min(window, n - 1) + 1):
        same = sequence[d:] == sequence[:-d]  # (M-d,)
        right = same & (b[:-d] >= d)  # center i, context i+d
        left = same & (b[d:] >= d)  # center i+d, context i
        centers += [pos[:-d][right], pos[d:][left]]
        contexts += [pos[d:][right], pos[:-d][left]]
    if not centers:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    return torch.cat(centers), torch.cat(contexts)


def window_bags(
    sequence: torch.Tensor, window: int, generator: torch.Generator, *, keep_empty: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CBOW examples: (center (E,), bag (E, 2·window) indices into `sequence`, mask (E, 2·window)).

    A center's bag holds the tokens of its sequence within its dynamic window on either side;
    centers with an empty bag (single-token sequences) are dropped unless `keep_empty` (PV-DM
    adds the user to every bag).
    """
    n = len(sequence)
    b = torch.randint(1, window + 1, (n,), generator=generator)  # (M,)
    pos = torch.arange(n)
    offsets = torch.cat([-torch.arange(1, window + 1), torch.arange(1, window + 1)])  # (2W,)
    bag = pos[:, None] + offsets[None, :]  # (M, 2W)
    inside = (bag >= 0) & (bag < n)
    bag = bag.clamp(0, max(n - 1, 0))
    mask = inside & (gather(sequence, bag) == sequence[:, None]) & (offsets.abs()[None, :] <= b[:, None])
    if keep_empty:
        return pos, bag, mask
    has = mask.any(dim=1)
    return pos[has], bag[has], mask[has]
