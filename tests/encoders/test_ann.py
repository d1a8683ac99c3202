"""faiss retrieval (`recforge.encoders.ann`): exact flat search against a numpy brute force,
approximate IVF / HNSW recall on a clustered set, exclusions, clipping and padding, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import recforge.encoders.ann as ann
from recforge.encoders.ann import AnnConfig, AnnIndex, NonFiniteVectorsError, nearest_neighbours, recall_at_k

K = 10


def _clustered(n: int, dim: int, n_centres: int, seed: int) -> np.ndarray:
    """Points around a few Gaussian centres: neighbours are mostly in one's own cluster."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_centres, dim))
    labels = rng.integers(0, n_centres, n)
    return (centres[labels] + 0.4 * rng.standard_normal((n, dim))).astype(np.float32)


@pytest.fixture(scope="module")
def catalogue() -> tuple[np.ndarray, np.ndarray]:
    points = _clustered(5_200, 16, 50, seed=0)
    return points[:5_000], points[5_000:]  # (5000, 16) items, (200, 16) held-out queries


def _brute_force(vectors: np.ndarray, queries: np.ndarray, k: int, metric: str,
                 skip: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """numpy top-k by inner product (of unit rows for cosine); `skip` (Q, n) bool masks rows."""
    v, q = vectors.astype(np.float64), queries.astype(np.float64)
    if metric == "cosine":
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    scores = q @ v.T  # (Q, n)
    if skip is not None:
        scores[skip] = -np.inf
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(scores, idx, axis=1)


@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_flat_equals_brute_force(catalogue, metric):
    items, queries = catalogue
    idx, scores = AnnIndex(items, AnnConfig(kind="flat", metric=metric)).search(queries, K)
    want_idx, want_scores = _brute_force(items, queries, K, metric)
    assert idx.shape == scores.shape == (len(queries), K)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-4)


# Narrow settings, so that the bound means something: on this set the defaults (128 cells and
# nprobe 16; M 32 and ef_search 128) find every true neighbour, these measure 0.95-1.0 (ip, cosine).
NARROW = {"ivf": {"nprobe": 4}, "hnsw": {"hnsw_m": 8, "ef_search": 16}}


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_approximate_recall(catalogue, kind, metric):
    items, queries = catalogue
    exact, _ = AnnIndex(items, AnnConfig(kind="flat", metric=metric)).search(queries, K)
    approx, scores = AnnIndex(items, AnnConfig(kind=kind, metric=metric, **NARROW[kind])).search(queries, K)
    assert recall_at_k(approx, exact) >= 0.9
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first


def test_exclude_one_row_per_query(catalogue):
    items, queries = catalogue
    index = AnnIndex(items, AnnConfig(kind="flat", metric="cosine"))
    top, _ = index.search(queries, 1)
    exclude = top[:, 0].copy()
    exclude[::4] = -1  # -1: nothing to exclude for that query
    idx, _ = index.search(queries, K, exclude=exclude)
    skip = np.zeros((len(queries), len(items)), dtype=bool)
    rows = np.flatnonzero(exclude >= 0)
    skip[rows, exclude[rows]] = True
    assert not (idx == np.where(exclude >= 0, exclude, -2)[:, None]).any()
    np.testing.assert_array_equal(idx, _brute_force(items, queries, K, "cosine", skip)[0])
    np.testing.assert_array_equal(idx[::4], index.search(queries[::4], K)[0])  # -1 excluded nothing


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_exclude_seen_matrix(catalogue, kind):
    items, queries = catalogue
    index = AnnIndex(items, AnnConfig(kind=kind, metric="ip"))
    exact, _ = AnnIndex(items, AnnConfig(kind="flat", metric="ip")).search(queries, 30)
    rng = np.random.default_rng(1)
    skip = np.zeros((len(queries), len(items)), dtype=bool)
    skip[np.arange(len(queries))[:, None], exact[:, :15]] = True  # the best 15 of each query
    skip[rng.random(skip.shape) < 0.01] = True  # and ~50 random rows each
    skip[3] = False  # a query with nothing seen
    idx, scores = index.search(queries, K, exclude=sp.csr_matrix(skip))
    assert idx.shape == (len(queries), K) and (idx >= 0).all()
    assert not skip[np.arange(len(queries))[:, None], idx].any()
    want, _ = _brute_force(items, queries, K, "ip", skip)
    if kind == "flat":
        np.testing.assert_array_equal(idx, want)
    else:
        assert recall_at_k(idx, want) >= 0.9


def test_k_beyond_catalogue_is_clipped_and_padded():
    items = _clustered(7, 4, 2, seed=2)
    queries = items[:3] + 0.01
    index = AnnIndex(items)
    idx, scores = index.search(queries, 20)
    assert idx.shape == (3, 7)
    assert (np.sort(idx, axis=1) == np.arange(7)).all()  # every row, once
    idx, scores = index.search(queries, 20, exclude=np.array([0, -1, 6]))
    assert (idx[[0, 2], -1] == -1).all() and np.isneginf(scores[[0, 2], -1]).all()
    assert (idx[1] >= 0).all() and np.isfinite(scores[1]).all()
    seen = sp.csr_matrix(([1, 1, 1], ([1, 1, 1], [0, 2, 4])), shape=(3, 7))
    idx, scores = index.search(queries, 20, exclude=seen)
    assert sorted(idx[1, :4].tolist()) == [1, 3, 5, 6]
    assert (idx[1, 4:] == -1).all() and np.isneginf(scores[1, 4:]).all()
    for kind in ["ivf", "hnsw"]:  # an approximate index that finds too few is searched again exactly
        got, _ = AnnIndex(items, AnnConfig(kind=kind)).search(queries, 20, exclude=seen)
        np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(idx, axis=1))


def test_short_approximate_results_are_searched_again_exactly(catalogue):
    items, queries = catalogue
    index = AnnIndex(items, AnnConfig(kind="ivf", nlist=128, nprobe=1))  # one cell: ~40 rows, fewer than k
    assert (index.index.search(queries, 200)[1] < 0).any()  # faiss alone comes back short
    idx, scores = index.search(queries, 200, exclude=np.zeros(len(queries), np.int64))
    assert (idx >= 0).all() and np.isfinite(scores).all() and not (idx == 0).any()
    assert all(len(set(row)) == 200 for row in idx.tolist())


def test_non_finite_vectors_name_the_rows(catalogue):
    items, queries = catalogue
    bad = items[:100].copy()
    bad[3, 0], bad[5, 7], bad[8, 2] = np.nan, np.inf, -np.inf
    with pytest.raises(NonFiniteVectorsError, match=r"item table: 3 of 100 row\(s\).*rows \[3, 5, 8\]"):
        AnnIndex(bad, what="item table")
    q = queries[:10].copy()
    q[4, 1] = np.nan
    with pytest.raises(NonFiniteVectorsError, match=r"queries against vectors: 1 of 10 .*rows \[4\]"):
        AnnIndex(items[:100]).search(q, K)
    with pytest.raises(NonFiniteVectorsError, match=r"rows \[0, 1, 2"):
        nearest_neighbours(np.full((30, 4), np.nan, np.float32), 3)


def test_dimension_mismatch_and_bad_arguments(catalogue):
    items, queries = catalogue
    index = AnnIndex(items[:100])
    with pytest.raises(ValueError, match="queries have 8 dims but vectors has 16"):
        index.search(queries[:5, :8], K)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        index.search(queries[:5], 0)
    with pytest.raises(ValueError, match=r"one row per query \(5,\)"):
        index.search(queries[:5], K, exclude=np.array([1, 2]))
    with pytest.raises(ValueError, match=r"expected \(queries, rows\) = \(5, 100\)"):
        index.search(queries[:5], K, exclude=sp.csr_matrix((5, 99)))
    with pytest.raises(ValueError, match="exclude names rows outside the 100 rows"):
        index.search(queries[:5], K, exclude=np.array([1, 2, 100, 3, 4]))
    with pytest.raises(ValueError, match="cannot index an empty table"):
        AnnIndex(np.zeros((0, 16), np.float32))


def test_nearest_neighbours_skips_itself_and_auto_picks_flat(catalogue, monkeypatch):
    items, _ = catalogue
    kinds: list[str] = []

    class Recording(AnnIndex):
        def __init__(self, vectors, config=None, what="vectors"):
            kinds.append(config.kind)
            super().__init__(vectors, config, what)

    monkeypatch.setattr(ann, "AnnIndex", Recording)
    rows = np.arange(0, 5_000, 50)
    idx, cos = nearest_neighbours(items, K, queries=rows)
    assert kinds == ["flat"]
    assert not (idx == rows[:, None]).any()
    skip = np.zeros((len(rows), len(items)), dtype=bool)
    skip[np.arange(len(rows)), rows] = True
    want_idx, want_cos = _brute_force(items, items[rows], K, "cosine", skip)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(cos, want_cos, atol=1e-5)
    monkeypatch.setattr(ann, "AUTO_EXACT_MAX", 1_000)  # above it, `auto` is HNSW
    idx, _ = nearest_neighbours(items, K, queries=rows)
    assert kinds == ["flat", "hnsw"] and not (idx == rows[:, None]).any()
    assert recall_at_k(idx, want_idx) >= 0.95


def test_ivf_is_deterministic_for_a_seed(catalogue):
    items, queries = catalogue
    runs = [AnnIndex(items, AnnConfig(kind="ivf", nprobe=2, seed=s)).search(queries, K) for s in (7, 7, 8)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert (runs[0][0] != runs[2][0]).any()  # the seed reaches the k-means: other cells, other misses


def test_recall_at_k():
    exact = np.array([[0, 1, 2, 3], [4, 5, -1, -1]])
    approx = np.array([[0, 1, 9, 8], [5, 7, -1, -1]])
    assert recall_at_k(approx, exact) == pytest.approx((2 / 4 + 1 / 2) / 2)
    with pytest.raises(ValueError, match="approx has 1 queries, exact 2"):
        recall_at_k(approx[:1], exact)
