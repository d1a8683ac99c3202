"""The random-hyperplane LSH recforge used for approximate cosine neighbours before faiss, kept
only as the baseline of bench/bench_ann.py (the library now searches through
`recforge.encoders.ann`, faiss). Copied unchanged from the former `recforge.encoders.ann`,
with just what it needs: `normalise`, `exact_neighbours` (its fallback), `_ragged`.

`RandomHyperplaneLSH` is random-hyperplane locality-sensitive hashing for the angle between
vectors (Charikar 2002, "Similarity estimation techniques from rounding algorithms"): a vector's
code in a table is the sign pattern of its projections on `n_bits` random directions, and two
vectors collide with probability (1 - θ/π)^n_bits. Several tables, each also probed at the codes
one bit flip away (multi-probe LSH, Lv et al. 2007), gather candidates; the candidates are then
ranked by their exact cosine. A query with fewer than k candidates falls back to exact search.
"""

from __future__ import annotations

import numpy as np
import torch


def normalise(vectors: np.ndarray | torch.Tensor) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), float32."""
    v = np.asarray(vectors.detach().cpu() if isinstance(vectors, torch.Tensor) else vectors, dtype=np.float32)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norm, 1e-12)


def exact_neighbours(
    vectors: np.ndarray, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(indices (Q, k), cosines (Q, k)) of the k most similar rows of `vectors` to each query,
    best first; `exclude` (Q,) names one row per query to skip (the query item itself)."""
    base = torch.from_numpy(normalise(vectors))  # (n, D)
    q = torch.from_numpy(normalise(queries))  # (Q, D)
    k = min(k, len(base) - (exclude is not None))
    idx = np.empty((len(q), k), dtype=np.int64)
    sim = np.empty((len(q), k), dtype=np.float32)
    chunk = max(1, 2**24 // max(len(base), 1))
    for start in range(0, len(q), chunk):
        s = q[start:start + chunk] @ base.T  # (C, n)
        if exclude is not None:
            s[torch.arange(len(s)), torch.from_numpy(exclude[start:start + chunk])] = -torch.inf
        top = torch.topk(s, k, dim=1)
        idx[start:start + chunk], sim[start:start + chunk] = top.indices.numpy(), top.values.numpy()
    return idx, sim


class RandomHyperplaneLSH:
    """An LSH index over `vectors` (n, D) for cosine similarity; seeded, so rebuilt identically."""

    def __init__(
        self, vectors: np.ndarray | torch.Tensor, n_bits: int = 12, n_tables: int = 8,
        multiprobe: bool = True, seed: int = 0,
    ) -> None:
        if not 1 <= n_bits <= 62:
            raise ValueError(f"n_bits must be in [1, 62], got {n_bits}")
        self.vectors = normalise(vectors)  # (n, D)
        self.n_bits, self.n_tables, self.multiprobe = n_bits, n_tables, multiprobe
        rng = np.random.default_rng(seed)
        self.planes = rng.standard_normal((n_tables, self.vectors.shape[1], n_bits)).astype(np.float32)
        codes = self._codes(self.vectors)  # (T, n)
        self.order = np.argsort(codes, axis=1, kind="stable")  # (T, n) items sorted by code
        self.sorted_codes = np.take_along_axis(codes, self.order, axis=1)  # (T, n)

    def __len__(self) -> int:
        return len(self.vectors)

    def _codes(self, v: np.ndarray) -> np.ndarray:
        bits = np.einsum("nd,tdb->tnb", v, self.planes) > 0  # (T, n, bits)
        return (bits.astype(np.int64) << np.arange(self.n_bits, dtype=np.int64)).sum(-1)  # (T, n)

    def candidates(self, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distinct (query row, item) pairs that share a probed bucket in some table."""
        q = normalise(queries)
        codes = self._codes(q)  # (T, Q)
        flips = [0] + ([1 << b for b in range(self.n_bits)] if self.multiprobe else [])
        rows, items = [], []
        for t in range(self.n_tables):
            for flip in flips:
                probe = codes[t] ^ flip  # (Q,)
                lo = np.searchsorted(self.sorted_codes[t], probe, side="left")
                hi = np.searchsorted(self.sorted_codes[t], probe, side="right")
                r, pos = _ragged(lo, hi)  # every (query, position in the bucket)
                rows.append(r)
                items.append(self.order[t][pos])
        row, item = np.concatenate(rows), np.concatenate(items)
        key = np.unique(row * len(self) + item)
        return key // len(self), key % len(self)

    def query(
        self, queries: np.ndarray | torch.Tensor, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(indices (Q, k), cosines (Q, k)), best first; exact search for queries whose buckets
        hold fewer than k candidates. `exclude` (Q,) names one item per query to skip."""
        q = normalise(queries)
        k = min(k, len(self) - (exclude is not None))
        row, item = self.candidates(q)
        if exclude is not None:
            keep = item != exclude[row]
            row, item = row[keep], item[keep]
        sim = np.einsum("pd,pd->p", q[row], self.vectors[item])  # (P,)
        order = np.lexsort((-sim, row))  # by query, best first
        row, item, sim = row[order], item[order], sim[order]
        start = np.searchsorted(row, np.arange(len(q)))  # (Q,) first candidate of each query
        rank = np.arange(len(row)) - start[row]
        top = rank < k
        idx = np.full((len(q), k), -1, dtype=np.int64)
        out = np.full((len(q), k), -np.inf, dtype=np.float32)
        idx[row[top], rank[top]] = item[top]
        out[row[top], rank[top]] = sim[top]
        short = np.flatnonzero((idx < 0).any(axis=1))
        if len(short):
            ex = None if exclude is None else exclude[short]
            idx[short], out[short] = exact_neighbours(self.vectors, q[short], k, ex)
        return idx, out


def _ragged(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner (L,), value (L,)) listing lo[i]..hi[i]-1 for every i, without a Python loop."""
    lengths = hi - lo
    owner = np.repeat(np.arange(len(lo)), lengths)
    starts = np.cumsum(lengths) - lengths  # (Q,) offset of each range in the output
    value = np.arange(lengths.sum()) - starts[owner] + lo[owner]
    return owner, value
