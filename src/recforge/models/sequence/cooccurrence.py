"""`cooccurrence`: item-to-item transitions — a first-order Markov chain over next items.

P(j | i) is estimated from how often j follows i in the training sessions (Rendle et al. 2010,
"Factorizing Personalized Markov Chains for Next-Basket Recommendation", use this chain unfactorised
as their MC baseline; Ludewig & Jannach 2018, "Evaluation of Session-based Recommendation
Algorithms", find such simple rules strong on session data). With `span > 1`, j counts as following
i up to `span` steps later with weight 1/distance (their "sequential rules"); `directed: false`
counts both orders (plain session co-occurrence). The next item is scored from the last `window` items of the prefix, the
t-th most recent weighted `decay ** t`:

    score(j | s) = sum over t < window of decay^t * P(j | s[-1 - t])

The chain is kept sparse (each item's top `neighbours` successors as CSR buffers), so memory grows
with the data, not with items squared. Training sequences are the split's sessions, or each
user's history when it has none. A tiny popularity term breaks ties and covers items never seen
with a successor.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from recforge.data.interactions import InteractionData
from recforge.data.sequences import build_sequences
from recforge.models.base import Family, ModelConfig, no_batches, no_loss
from recforge.models.sequence.sequence import SequenceNetwork
from recforge.models.sequence.sknn import FALLBACK_SCALE, spread_rows


class CooccurrenceConfig(ModelConfig):
    window: int = Field(3, gt=0, description="last items of the prefix that vote")
    decay: float = Field(0.5, gt=0, le=1, description="weight of the t-th most recent item: decay**t")
    span: int = Field(1, gt=0, description="1: direct successors only (first-order Markov)")
    directed: bool = True
    neighbours: int = Field(200, gt=0, description="successors kept per item")


def transition_matrix(train: InteractionData, span: int, directed: bool) -> sp.csr_matrix:
    """(I, I) row-stochastic P(j | i) from pairs up to `span` apart within each training sequence."""
    n = train.n_items
    if not len(train):
        return sp.csr_matrix((n, n), dtype=np.float32)
    seqs = build_sequences(train, by="session" if train.session is not None else "user")
    seq_of = seqs.sequence_of(seqs.items)
    src, dst, w = [], [], []
    for d in range(1, span + 1):  # a few shifts, each one vectorised over every sequence
        same = seq_of[:-d] == seq_of[d:]
        src.append(seqs.items[:-d][same])
        dst.append(seqs.items[d:][same])
        w.append(np.full(int(same.sum()), 1.0 / d, dtype=np.float32))
    src, dst, w = np.concatenate(src), np.concatenate(dst), np.concatenate(w)
    if not directed:
        src, dst, w = np.r_[src, dst], np.r_[dst, src], np.r_[w, w]
    counts = sp.csr_matrix((w, (src, dst)), shape=(n, n), dtype=np.float32)
    counts.sum_duplicates()
    totals = np.asarray(counts.sum(axis=1)).ravel()  # (I,)
    return sp.diags(1.0 / np.maximum(totals, 1e-12)).astype(np.float32) @ counts


def top_per_row(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """The `k` largest entries of each row (ties: lower column first)."""
    coo = m.tocoo()
    order = np.lexsort((coo.col, -coo.data, coo.row))
    row, col, val = coo.row[order], coo.col[order], coo.data[order]
    first = np.searchsorted(row, np.arange(m.shape[0]))
    keep = np.arange(len(row)) - first[row] < k
    out = sp.csr_matrix((val[keep], (row[keep], col[keep])), shape=m.shape)
    out.sort_indices()
    return out


class Cooccurrence(SequenceNetwork):
    """Sparse next-item transitions from the last items of a prefix; see the module docstring."""

    def __init__(self, config: CooccurrenceConfig) -> None:
        super().__init__()
        self.window, self.decay = config.window, config.decay

    def fit_transitions(self, train: InteractionData, config: CooccurrenceConfig) -> None:
        """The pruned transition matrix as CSR buffers, plus popularity for ties."""
        p = top_per_row(transition_matrix(train, config.span, config.directed), config.neighbours)
        self.register_buffer("indptr", torch.as_tensor(p.indptr.astype(np.int64)))  # (I+1,)
        self.register_buffer("successors", torch.as_tensor(p.indices.astype(np.int64)))  # (nnz,)
        self.register_buffer("probability", torch.as_tensor(p.data.astype(np.float32)))  # (nnz,)
        self.register_buffer("popularity", torch.as_tensor(train.item_popularity, dtype=torch.float32))  # (I,)

    @torch.no_grad()
    def score_sequence(self, items: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, I)
        last = items[:, -self.window :]  # (B, W) right-aligned: column W-1 is the most recent
        w = last.shape[1]
        weight = self.decay ** torch.arange(w - 1, -1, -1, device=items.device, dtype=torch.float32)  # (W,)
        pop = self.popularity
        out = (FALLBACK_SCALE * torch.log1p(pop) / torch.log1p(pop.max().clamp_min(1.0))).expand(len(items), -1)
        out = out.clone()  # (B, I)
        b, t = torch.nonzero(last >= 0, as_tuple=True)  # (V,), (V,) known prefix positions
        src = last[b, t]  # (V,)
        owner, pos = spread_rows(src, self.indptr[src], self.indptr[src + 1] - self.indptr[src])
        out.index_put_((b[owner], self.successors[pos]), weight[t[owner]] * self.probability[pos], accumulate=True)
        return out


def build(config: CooccurrenceConfig, train: InteractionData, item_vectors=None) -> Cooccurrence:
    net = Cooccurrence(config)
    net.init_user_sequences(train, config.window)
    net.fit_transitions(train, config)
    return net


FAMILY = Family(
    name="cooccurrence", config=CooccurrenceConfig, build=build, batches=no_batches, loss=no_loss,
    trainable=False, paper="first-order Markov chain (Rendle et al. 2010, MC baseline)", next_item=True,
)
