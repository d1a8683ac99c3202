"""Negative samplers exclude positives, are seeded and vectorised; candidate sets are exact."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recforge.training.samplers import (
    Positives,
    _contains,
    candidate_sets,
    popularity_log_probs,
    popularity_negatives,
    shuffled_batches,
    shuffled_chunks,
    uniform_negatives,
)


def random_csr(n_users: int = 60, n_items: int = 40, density: float = 0.5, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    m = sp.csr_matrix((rng.random((n_users, n_items)) < density).astype(np.float32))
    m.sort_indices()
    return m


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_contains_matches_dense_lookup():
    m = random_csr(30, 50, 0.3)
    rng = np.random.default_rng(1)
    rows, cols = rng.integers(0, 30, 5000), rng.integers(0, 50, 5000)
    assert np.array_equal(_contains(m, rows, cols), m.toarray()[rows, cols] > 0)
    assert not _contains(sp.csr_matrix((3, 4)), np.array([0, 2]), np.array([1, 3])).any()


@pytest.mark.parametrize("dense_cells", [1 << 24, 0], ids=["bitmap", "sorted-keys"])
def test_positives_match_dense_lookup(dense_cells):
    m = random_csr(30, 50, 0.3)
    rng = np.random.default_rng(1)
    rows, cols = rng.integers(0, 30, 5000), rng.integers(0, 50, 5000)
    index = Positives(m, dense_cells=dense_cells)
    assert index.shape == (30, 50)
    assert np.array_equal(index.contains(rows, cols), m.toarray()[rows, cols] > 0)
    # broadcast queries, as the samplers make them: (B, 1) users against (B, N) items
    grid = index.contains(np.arange(30)[:, None], np.broadcast_to(np.arange(50), (30, 50)))
    assert np.array_equal(grid, m.toarray() > 0)
    empty = Positives(sp.csr_matrix((3, 4)), dense_cells=dense_cells)
    assert not empty.contains(np.array([0, 2]), np.array([1, 3])).any()
    # a CSR with unsorted column indices is sorted first
    shuffled = sp.csr_matrix((m.data[::-1].copy(), m.indices.copy(), m.indptr.copy()), shape=m.shape)
    for r in range(30):
        lo, hi = m.indptr[r], m.indptr[r + 1]
        shuffled.indices[lo:hi] = m.indices[lo:hi][::-1]
    shuffled.has_sorted_indices = False
    assert np.array_equal(Positives(shuffled).contains(rows, cols), m.toarray()[rows, cols] > 0)


@pytest.mark.parametrize("dense_cells", [1 << 24, 0], ids=["bitmap", "sorted-keys"])
def test_prebuilt_positives_draw_the_same_negatives_as_the_csr(dense_cells):
    m = random_csr(density=0.4)
    users = np.repeat(np.arange(60), 5)
    index = Positives(m, dense_cells=dense_cells)
    assert torch.equal(uniform_negatives(users, index, 7, gen(3)), uniform_negatives(users, m, 7, gen(3)))
    pop = np.arange(1, 41, dtype=np.float64)
    assert torch.equal(
        popularity_negatives(users, index, 3, gen(4), pop), popularity_negatives(users, m, 3, gen(4), pop)
    )


def test_uniform_negatives_exclude_positives_and_are_seeded():
    m = random_csr(density=0.3)
    users = np.repeat(np.arange(60), 3)
    neg = uniform_negatives(users, m, 20, gen(7))
    assert neg.shape == (180, 20) and neg.dtype == torch.int64
    dense = m.toarray() > 0
    assert not dense[users[:, None], neg.numpy()].any()
    assert torch.equal(neg, uniform_negatives(torch.as_tensor(users), m, 20, gen(7)))
    assert not torch.equal(neg, uniform_negatives(users, m, 20, gen(8)))
    # every unseen item of a user can be drawn
    seen_by_user0 = set(neg[users == 0].flatten().tolist())
    assert len(seen_by_user0) > 0.8 * (~dense[0]).sum()


def test_popularity_negatives_follow_popularity_and_exclude_positives():
    m = sp.csr_matrix(np.array([[0, 0, 0, 0], [0, 0, 1, 0]], dtype=np.float32))
    pop = np.array([1.0, 0.0, 3.0, 4.0])
    neg = popularity_negatives(np.zeros(1, dtype=np.int64), m, 40_000, gen(0), pop, alpha=1.0)
    freq = np.bincount(neg.numpy().ravel(), minlength=4) / neg.numel()
    assert freq[1] == 0  # zero popularity is never drawn
    assert np.allclose(freq, [1 / 8, 0, 3 / 8, 4 / 8], atol=0.01)
    neg1 = popularity_negatives(np.ones(500, dtype=np.int64), m, 4, gen(0), pop, alpha=1.0)
    assert not (neg1 == 2).any()  # user 1's positive
    assert torch.equal(neg1, popularity_negatives(np.ones(500, dtype=np.int64), m, 4, gen(0), pop, 1.0))
    logq = popularity_log_probs(pop, alpha=1.0)
    assert torch.allclose(logq.exp(), torch.tensor([1 / 8, 0, 3 / 8, 4 / 8]))


def test_popularity_negatives_reject_bad_popularity():
    m = random_csr(4, 5)
    with pytest.raises(ValueError, match="shape"):
        popularity_negatives([0], m, 2, gen(0), np.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        popularity_negatives([0], m, 2, gen(0), -np.ones(5))


def test_candidate_sets_exact_distinct_seeded():
    m = random_csr(60, 200, 0.2)
    users = np.arange(60)
    rng = np.random.default_rng(3)
    positives = rng.integers(0, 200, 60)
    cand = candidate_sets(users, positives, m, n_neg=99, seed=5)
    assert cand.shape == (60, 100) and cand.dtype == np.int64
    assert np.array_equal(cand[:, 0], positives)
    negs = cand[:, 1:]
    assert not (m.toarray()[users[:, None], negs] > 0).any()
    assert not (negs == positives[:, None]).any()
    assert all(len(np.unique(row)) == 99 for row in negs)
    assert np.array_equal(cand, candidate_sets(users, positives, m, n_neg=99, seed=5))
    assert not np.array_equal(cand, candidate_sets(users, positives, m, n_neg=99, seed=6))


def test_candidate_sets_falls_back_to_the_exact_complement():
    # user 0 has seen all but 5 items (plus the positive): rejection sampling alone rarely ends
    dense = np.ones((2, 300), dtype=np.float32)
    dense[0, :6] = 0
    dense[1] = 0
    m = sp.csr_matrix(dense)
    cand = candidate_sets(np.array([0, 1]), np.array([0, 7]), m, n_neg=5, seed=0)
    assert sorted(cand[0, 1:].tolist()) == [1, 2, 3, 4, 5]
    assert 7 not in cand[1, 1:] and len(set(cand[1, 1:].tolist())) == 5
    with pytest.raises(ValueError, match="fewer than n_neg=6"):
        candidate_sets(np.array([0]), np.array([0]), m, n_neg=6)


def test_shuffled_batches_cover_every_index_once():
    batches = list(shuffled_batches(10, 4, gen(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    again = list(shuffled_batches(10, 4, gen(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    assert [len(b) for b in shuffled_batches(10, 4, gen(0), drop_last=True)] == [4, 4]


def test_shuffled_chunks_are_whole_batches_of_one_permutation():
    chunks = list(shuffled_chunks(23, 4, gen(0), rows=9))
    assert [len(c) for c in chunks] == [8, 8, 7]  # 9 rows round down to two batches of 4
    assert torch.equal(torch.cat(chunks), torch.randperm(23, generator=gen(0)))
    assert [len(c) for c in shuffled_chunks(5, 4, gen(0), rows=1)] == [4, 1]  # at least one batch
    with pytest.raises(ValueError, match="batch_size"):
        next(shuffled_chunks(5, 0, gen(0)))
