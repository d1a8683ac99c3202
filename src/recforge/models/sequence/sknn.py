"""`sknn`: session-based k-nearest neighbours (Jannach & Ludewig 2017, "When Recurrent Neural
Networks meet the Neighborhood for Session-Based Recommendation", RecSys '17).

The current session s is a binary item vector. Its candidate neighbours are the `sample_size` most
recent training sessions that share at least one item with it (the paper's sample); of those, the
`neighbours` with the highest cosine, cos(s, n) = |s ∩ n| / sqrt(|s| |n|), vote for their items:

    score(i | s) = sum over n in N_k(s) of cos(s, n) * 1[i in n]

Training sessions are stored as two sparse indexes (session -> items, item -> sessions) with the
sessions numbered oldest to newest, so "most recent" is "highest number". A batch of prefixes is
scored at once: overlaps |s ∩ n| come from the tails of the item -> session lists (the
`sample_size` newest of each, which hold the whole sample), either by counting (row, session) pairs
or, when that is not cheaper, scattered into a (rows x sessions) block chunked to a fixed budget;
the same neighbours either way, and no per-session loop.

Training "sessions" are the split's sessions, or each user's history when it has none. Scores get a
tiny popularity term so that ties, and prefixes with no neighbour at all, fall back to popularity.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from recforge.data.interactions import InteractionData
from recforge.data.sequences import PAD, build_sequences
from recforge.models.base import Family, ModelConfig, no_batches, no_loss
from recforge.models.sequence.sequence import SequenceNetwork

# Popularity only breaks ties: far below the smallest similarity a neighbour can contribute.
FALLBACK_SCALE = 1e-6
# Cells of the (rows x training sessions) overlap block held at once while scoring (64 MB float32).
BLOCK_BUDGET = 1 << 24
# Counting (row, session) pairs costs a sort: take that path only when the pairs are this many
# times fewer than the cells of the dense block.
SPARSE_PATH_RATIO = 8


class SKNNConfig(ModelConfig):
    neighbours: int = Field(100, gt=0, description="k: neighbour sessions that vote")
    sample_size: int = Field(500, gt=0, description="most recent sessions sharing an item that are candidates")
    max_len: int = Field(50, gt=0, description="most recent items of the current session (or user) used")


def distinct_items(items: torch.Tensor) -> torch.Tensor:
    """(B, L) -> (B, W <= L): each row's distinct items first, then PAD; W is the most any row has."""
    q, _ = torch.sort(items, dim=1)
    repeat = torch.zeros_like(q, dtype=torch.bool)
    repeat[:, 1:] = q[:, 1:] == q[:, :-1]
    q, _ = torch.sort(q.masked_fill(repeat | (q < 0), PAD), dim=1, descending=True)
    width = int((q >= 0).sum(dim=1).max()) if q.numel() else 0
    return q[:, : max(width, 1)]


def spread_rows(
    rows: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For CSR row slices [starts, starts + lengths): (owner index (T,), flat position (T,))."""
    owner = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), lengths)  # (T,)
    offset = torch.cumsum(lengths, 0) - lengths  # (R,) where each slice begins in the output
    pos = torch.arange(int(lengths.sum()), device=rows.device) - offset[owner] + starts[owner]  # (T,)
    return owner, pos


class SessionKNN(SequenceNetwork):
    """Neighbour sessions by cosine on binary session vectors; see the module docstring."""

    def __init__(self, config: SKNNConfig) -> None:
        super().__init__()
        self.neighbours, self.sample_size = config.neighbours, config.sample_size

    def fit_sessions(self, train: InteractionData) -> None:
        """Session -> items and item -> sessions indexes (sessions oldest first), and popularity."""
        by = "session" if train.session is not None else "user"
        seqs = build_sequences(train, by=by) if len(train) else None
        if seqs is not None and len(seqs):
            last_event = np.maximum.reduceat(seqs.timestamps, seqs.offsets[:-1])  # (S,)
            rank = np.empty(len(seqs), dtype=np.int64)
            rank[np.argsort(last_event, kind="stable")] = np.arange(len(seqs))  # 0 = oldest
            rows = rank[seqs.sequence_of(seqs.items)]
            m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, seqs.items)), shape=(len(seqs), train.n_items))
        else:
            m = sp.csr_matrix((0, train.n_items), dtype=np.float32)
        m.sum_duplicates()  # binary vectors: an item counts once per session
        m.sort_indices()
        mt = m.T.tocsr()
        mt.sort_indices()
        self.register_buffer("session_indptr", torch.as_tensor(m.indptr.astype(np.int64)))  # (S+1,)
        self.register_buffer("session_items", torch.as_tensor(m.indices.astype(np.int64)))  # (nnz,)
        self.register_buffer("item_indptr", torch.as_tensor(mt.indptr.astype(np.int64)))  # (I+1,)
        self.register_buffer("item_sessions", torch.as_tensor(mt.indices.astype(np.int64)))  # (nnz,)
        self.register_buffer("popularity", torch.as_tensor(train.item_popularity, dtype=torch.float32))  # (I,)

    @torch.no_grad()
    def score_sequence(self, items: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, I)
        q = distinct_items(items[:, -self.max_len :])  # (B, W)
        b = q.shape[0]
        pop = self.popularity
        out = (FALLBACK_SCALE * torch.log1p(pop) / torch.log1p(pop.max().clamp_min(1.0))).expand(b, -1).clone()
        n_sessions = len(self.session_indptr) - 1
        if n_sessions == 0:
            return out
        step = max(1, BLOCK_BUDGET // n_sessions)
        for start in range(0, b, step):
            self._add_neighbour_votes(q[start : start + step], out[start : start + step])
        return out

    def _overlaps(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every (row, session) sharing an item, sorted by row then session: (r, s, |q_r ∩ s|)."""
        n_sessions = len(self.session_indptr) - 1
        b, t = torch.nonzero(q >= 0, as_tuple=True)  # (V,) known (row, item) pairs
        item = q[b, t]
        # Only each item's sample_size most recent sessions: a session in the row's sample has fewer
        # than sample_size newer sharing sessions, so it is among those of every item it shares
        # with the row, and its overlap stays exact.
        end = self.item_indptr[item + 1]
        lengths = torch.clamp(end - self.item_indptr[item], max=self.sample_size)
        owner, pos = spread_rows(item, end - lengths, lengths)  # (P,) sessions, oldest first per item
        if SPARSE_PATH_RATIO * int(lengths.sum()) < q.shape[0] * n_sessions:
            # Few postings for the block size: a session listed under k of the row's distinct items
            # shares k items with it, so counting the (row, session) pairs gives the overlaps.
            key, overlap = torch.unique(b[owner] * n_sessions + self.item_sessions[pos], return_counts=True)
            return key // n_sessions, key % n_sessions, overlap.float()
        block = torch.zeros(q.shape[0], n_sessions, device=q.device)  # (B, S)
        block.index_put_((b[owner], self.item_sessions[pos]), torch.ones_like(pos, dtype=torch.float32),
                         accumulate=True)  # fmt: skip
        r, s = torch.nonzero(block, as_tuple=True)
        return r, s, block[r, s]

    def _add_neighbour_votes(self, q: torch.Tensor, out: torch.Tensor) -> None:
        """Add each row's neighbour-session similarities to its items' scores, in place."""
        r, s, overlap = self._overlaps(q)  # sorted by row, then session (oldest first)
        idx = torch.arange(len(r), device=r.device)
        # The sample: each row's sample_size most recent sharing sessions (the last ones of its run).
        recent = torch.searchsorted(r, r, right=True) - 1 - idx < self.sample_size
        r, s, overlap = r[recent], s[recent], overlap[recent]
        size_q = (q >= 0).sum(dim=1).float()  # (B,)
        size_n = (self.session_indptr[s + 1] - self.session_indptr[s]).float()  # (P,)
        sim = overlap / torch.sqrt(size_q[r] * size_n)  # (P,) cosine of binary vectors
        # Top-k per row: by similarity, ties to the more recent session; one order for every path.
        order = torch.flip(torch.arange(len(r), device=r.device), [0])  # row desc, session desc
        order = order[torch.argsort(sim[order], descending=True, stable=True)]
        order = order[torch.argsort(r[order], stable=True)]
        r, s, sim = r[order], s[order], sim[order]
        top = torch.arange(len(r), device=r.device) - torch.searchsorted(r, r) < self.neighbours
        r, s, sim = r[top], s[top], sim[top]
        owner, pos = spread_rows(s, self.session_indptr[s], self.session_indptr[s + 1] - self.session_indptr[s])
        out.index_put_((r[owner], self.session_items[pos]), sim[owner], accumulate=True)


def build(config: SKNNConfig, train: InteractionData, item_vectors=None) -> SessionKNN:
    net = SessionKNN(config)
    net.init_user_sequences(train, config.max_len)
    net.fit_sessions(train)
    return net


FAMILY = Family(
    name="sknn", config=SKNNConfig, build=build, batches=no_batches, loss=no_loss,
    trainable=False, paper="Jannach & Ludewig 2017", next_item=True,
)
