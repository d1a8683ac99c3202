"""Vectorised negative sampling, shuffled batching and seeded candidate sets.

Negatives are drawn for a whole batch (or many batches) at once; the draws that hit one of the
user's positives are found by a vectorised membership test and only those are redrawn, for a
bounded number of rounds. The test is a lock-step binary search in the users' (sorted) CSR rows
when a CSR is passed, or one lookup in a prebuilt `Positives` index — worth building once per
epoch when the whole epoch's negatives share it. All randomness comes from the `torch.Generator`
the fit loop hands to a family's `batches`, so a checkpointed generator state replays the same
negatives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp
import torch

IndexLike = np.ndarray | torch.Tensor


class Positives:
    """The stored (row, col) pairs of a user × item matrix, indexed for vectorised membership.

    A dense bitmap of the matrix when it has at most `dense_cells` cells (16 MiB of bools by
    default), else the sorted flat keys row · n_cols + col searched with `np.searchsorted`.
    Building costs O(nnz) once; every query after that is a single gather (bitmap) or binary
    search (keys), several times faster than searching CSR rows in lock-step. Pass it instead of
    the CSR to `uniform_negatives` / `popularity_negatives` when many draws share one matrix.
    """

    def __init__(self, csr: sp.csr_matrix, *, dense_cells: int = 1 << 24) -> None:
        csr = _sorted(csr)
        self.shape: tuple[int, int] = csr.shape
        n_rows, n_cols = csr.shape
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(csr.indptr))  # (nnz,)
        keys = rows * n_cols + csr.indices  # (nnz,) sorted: rows ascend, and columns within a row
        self._dense: np.ndarray | None = None
        self._keys: np.ndarray | None = None
        if n_rows * n_cols <= dense_cells:
            self._dense = np.zeros(n_rows * n_cols, dtype=bool)  # (R·C,)
            self._dense[keys] = True
        else:
            self._keys = keys

    def contains(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Whether each (rows[k], cols[k]) is stored; any broadcastable shapes."""
        q = rows * np.int64(self.shape[1]) + cols
        if self._dense is not None:
            return self._dense[q]
        keys = self._keys
        if len(keys) == 0:
            return np.zeros(q.shape, dtype=bool)
        at = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        return keys[at] == q


Interactions = sp.csr_matrix | Positives


def shuffled_batches(
    n: int, batch_size: int, generator: torch.Generator, *, drop_last: bool = False
) -> Iterator[torch.Tensor]:
    """Yield the indices 0..n-1 in a seeded random order, `batch_size` at a time."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    perm = torch.randperm(n, generator=generator)  # (n,)
    for idx in perm.split(batch_size):
        if drop_last and len(idx) < batch_size:
            return
        yield idx


def shuffled_chunks(
    n: int, batch_size: int, generator: torch.Generator, rows: int = 1 << 16
) -> Iterator[torch.Tensor]:
    """Yield the indices 0..n-1 in a seeded random order, in chunks of about `rows` that are whole
    multiples of `batch_size` (the last may be short): a family draws one chunk's negatives with
    one sampler call and then slices the chunk into batches, so the sampler's fixed cost is paid
    once per many batches while memory stays bounded."""
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    perm = torch.randperm(n, generator=generator)  # (n,)
    yield from perm.split(max(1, rows // batch_size) * batch_size)


def uniform_negatives(
    user_idx: IndexLike,
    csr: Interactions,
    n_neg: int,
    generator: torch.Generator,
    *,
    max_rounds: int = 20,
) -> torch.Tensor:
    """(B, n_neg) items drawn uniformly, excluding each user's positives (rows of `csr`, a CSR
    matrix or its prebuilt `Positives`).

    After `max_rounds` redraws a collision can remain only for users who have seen most of the
    catalogue; they keep it rather than stall the batch.
    """
    n_items = csr.shape[1]

    def draw(k: int) -> np.ndarray:
        return torch.randint(n_items, (k,), generator=generator).numpy()

    users = _as_index(user_idx)
    items, _ = _sample_excluding(users, n_neg, draw, _index(csr), max_rounds=max_rounds)
    return torch.from_numpy(items)


def popularity_negatives(
    user_idx: IndexLike,
    csr: Interactions,
    n_neg: int,
    generator: torch.Generator,
    popularity: np.ndarray,
    alpha: float = 0.75,
    *,
    max_rounds: int = 20,
) -> torch.Tensor:
    """(B, n_neg) items drawn ∝ popularity^alpha (word2vec's 0.75 by default), excluding each
    user's positives. `popularity_log_probs` gives the matching log q for `sampled_softmax`."""
    cdf = np.cumsum(_popularity_weights(popularity, alpha, csr.shape[1]))  # (I,)

    def draw(k: int) -> np.ndarray:
        u = torch.rand(k, generator=generator, dtype=torch.float64).numpy()
        # side="right" never lands on a zero-weight item, since its cdf equals its predecessor's
        return np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), len(cdf) - 1)

    users = _as_index(user_idx)
    items, _ = _sample_excluding(users, n_neg, draw, _index(csr), max_rounds=max_rounds)
    return torch.from_numpy(items)


def popularity_log_probs(popularity: np.ndarray, alpha: float = 0.75) -> torch.Tensor:
    """(n_items,) log-probability of each item under `popularity_negatives` (before exclusion)."""
    w = _popularity_weights(popularity, alpha, len(popularity))
    with np.errstate(divide="ignore"):
        return torch.from_numpy(np.log(w / w.sum())).float()


def candidate_sets(
    user_idx: IndexLike,
    positives: IndexLike,
    csr: sp.csr_matrix,
    n_neg: int = 99,
    seed: int = 0,
) -> np.ndarray:
    """(U, 1 + n_neg) candidates for sampled evaluation: column 0 is the held-out positive, the
    rest are distinct items the user has never interacted with (not in `csr`'s row, not the
    positive), drawn uniformly with `seed` (the protocol of He et al. 2017, NCF).

    Exact: users whose rejection sampling does not converge get their negatives from the explicit
    complement of their row. Raises ValueError for users with fewer than `n_neg` unseen items.
    """
    users, pos = _as_index(user_idx), _as_index(positives)
    if users.shape != pos.shape:
        raise ValueError(f"user_idx {users.shape} and positives {pos.shape} must be aligned")
    csr = _sorted(csr)
    n_items = csr.shape[1]
    pos_seen = _contains(csr, users, pos)  # (U,)
    unseen = n_items - np.diff(csr.indptr)[users] - (~pos_seen)  # (U,)
    short = np.flatnonzero(unseen < n_neg)
    if len(short):
        raise ValueError(
            f"{len(short)} user(s) have fewer than n_neg={n_neg} unseen items "
            f"(user_idx {users[short[:5]].tolist()}); lower n_neg"
        )
    generator = torch.Generator().manual_seed(seed)

    def draw(k: int) -> np.ndarray:
        return torch.randint(n_items, (k,), generator=generator).numpy()

    negs, bad = _sample_excluding(
        users, n_neg, draw, csr, also_excluded=pos, distinct=True, max_rounds=50
    )
    left = np.flatnonzero(bad.any(axis=1))
    if len(left):
        negs[left] = _exact_negatives(users[left], pos[left], csr, n_neg, generator)
    return np.concatenate([pos[:, None], negs], axis=1)


# ---------------------------------------------------------------- internals
def _as_index(x: IndexLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.int64).reshape(-1)


def _index(csr: Interactions) -> Interactions:
    return csr if isinstance(csr, Positives) else _sorted(csr)


def _sorted(csr: sp.csr_matrix) -> sp.csr_matrix:
    if not (sp.issparse(csr) and csr.format == "csr"):
        csr = sp.csr_matrix(csr)
    return csr if csr.has_sorted_indices else csr.sorted_indices()


def _popularity_weights(popularity: np.ndarray, alpha: float, n_items: int) -> np.ndarray:
    p = np.asarray(popularity, dtype=np.float64)
    if p.shape != (n_items,):
        raise ValueError(f"popularity has shape {p.shape}, expected ({n_items},)")
    if (p < 0).any() or not np.isfinite(p).all():
        raise ValueError("popularity must be finite and non-negative")
    w = p**alpha
    if w.sum() <= 0:
        raise ValueError("popularity gives every item zero weight")
    return w


def _contains(csr: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Whether each (rows[k], cols[k]) is stored in `csr` (sorted indices), any equal shapes.

    A binary search run in lock-step over all queries: log2(longest row) numpy passes.
    """
    indptr, indices = csr.indptr, csr.indices
    if len(indices) == 0:
        return np.zeros(cols.shape, dtype=bool)
    lo = indptr[rows].astype(np.int64)
    end = indptr[rows + 1].astype(np.int64)
    hi = end.copy()
    last = len(indices) - 1
    longest = int((end - lo).max(initial=0))
    for _ in range(max(1, longest).bit_length()):
        mid = (lo + hi) // 2
        active = lo < hi
        right = active & (indices[np.minimum(mid, last)] < cols)
        lo = np.where(right, mid + 1, lo)
        hi = np.where(active & ~right, mid, hi)
    return (lo < end) & (indices[np.minimum(lo, last)] == cols)


def _duplicates(items: np.ndarray) -> np.ndarray:
    """(B, N) mask of repeated items within a row, keeping each first occurrence unmarked."""
    order = np.argsort(items, axis=1, kind="stable")  # (B, N)
    s = np.take_along_axis(items, order, axis=1)
    dup_sorted = np.zeros(items.shape, dtype=bool)
    dup_sorted[:, 1:] = s[:, 1:] == s[:, :-1]
    dup = np.zeros(items.shape, dtype=bool)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    return dup


def _collisions(
    items: np.ndarray, users: np.ndarray, csr: Interactions, also: np.ndarray | None, distinct: bool
) -> np.ndarray:
    rows = np.broadcast_to(users[:, None], items.shape)
    if isinstance(csr, Positives):
        bad = csr.contains(rows, items)  # (B, N)
    else:
        bad = _contains(csr, rows, items)
    if also is not None:
        bad |= items == also[:, None]
    if distinct:
        bad |= _duplicates(items)
    return bad


def _sample_excluding(
    users: np.ndarray,
    n: int,
    draw: Callable[[int], np.ndarray],
    csr: Interactions,
    *,
    also_excluded: np.ndarray | None = None,
    distinct: bool = False,
    max_rounds: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """(B, n) draws with collisions redrawn; also returns the mask of collisions left over."""
    if n < 0:
        raise ValueError(f"n_neg must be non-negative, got {n}")
    items = draw(len(users) * n).astype(np.int64).reshape(len(users), n)  # (B, n)
    bad = _collisions(items, users, csr, also_excluded, distinct)
    for _ in range(max_rounds):
        rows = np.flatnonzero(bad.any(axis=1))
        if len(rows) == 0:
            break
        sub, sub_bad = items[rows], bad[rows]
        sub[sub_bad] = draw(int(sub_bad.sum()))
        items[rows] = sub
        also = also_excluded[rows] if also_excluded is not None else None
        bad[rows] = _collisions(sub, users[rows], csr, also, distinct)
    return items, bad


def _exact_negatives(
    users: np.ndarray, pos: np.ndarray, csr: sp.csr_matrix, n: int, generator: torch.Generator
) -> np.ndarray:
    """Uniform distinct unseen items from the explicit complement of each row (few rows only)."""
    n_items = csr.shape[1]
    chunk = max(1, 2**24 // max(n_items, 1))
    out = []
    for start in range(0, len(users), chunk):
        u, p = users[start : start + chunk], pos[start : start + chunk]
        seen = csr[u].toarray() > 0  # (L, I)
        seen[np.arange(len(u)), p] = True
        keys = torch.rand(len(u), n_items, generator=generator, dtype=torch.float64).numpy()
        keys[seen] = 2.0  # above every uniform key, so seen items are never among the n smallest
        out.append(np.argpartition(keys, n - 1, axis=1)[:, :n] if n else np.zeros((len(u), 0), np.int64))
    return np.concatenate(out).astype(np.int64)
