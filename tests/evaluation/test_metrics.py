"""Metrics: hand-computed cases and agreement with scikit-learn where the definitions overlap."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn import metrics as skm

from recforge.evaluation.metrics import (
    auc,
    catalogue_coverage,
    hits,
    log_loss,
    mae,
    per_user_auc,
    ranking_metrics,
    ranking_metrics_per_user,
    rmse,
    single_target_metrics,
)


def _csr(rows: list[list[int]], n_items: int) -> sp.csr_matrix:
    r = np.repeat(np.arange(len(rows)), [len(x) for x in rows])
    c = np.concatenate([np.asarray(x, dtype=np.int64) for x in rows]) if rows else np.zeros(0)
    return sp.csr_matrix((np.ones(len(c), dtype=np.float32), (r, c)), shape=(len(rows), n_items))


# Three users, 6 items, K = 3. log2(3) = 1.58496, so 1/log2(3) = 0.63093.
# user 0: top [0, 1, 2], relevant {1, 4}: hits [0, 1, 0]
#   HR 1, P 1/3, R 1/2, MRR 1/2, AP = P@2 / min(2, 3) = (1/2) / 2 = 0.25,
#   NDCG = 0.63093 / (1 + 0.63093) = 0.38685
# user 1: top [3, 4, 5], relevant {3, 5}: hits [1, 0, 1]
#   HR 1, P 2/3, R 1, MRR 1, AP = (1/1 + 2/3) / 2 = 5/6,
#   NDCG = (1 + 1/log2(4)) / (1 + 0.63093) = 1.5 / 1.63093 = 0.91972
# user 2: top [0, 1, 2], relevant {5}: no hit, every metric 0
# At K = 1: user 1 only: HR 1, P 1, R 1/2, AP = 1 / min(2, 1) = 1, NDCG 1, MRR 1.
TOPK = np.array([[0, 1, 2], [3, 4, 5], [0, 1, 2]])
REL = _csr([[1, 4], [3, 5], [5]], 6)
IDCG2 = 1 + 1 / math.log2(3)


def test_hand_computed_per_user() -> None:
    m = ranking_metrics_per_user(TOPK, REL, ks=(1, 3))
    np.testing.assert_allclose(m["hr@3"], [1, 1, 0])
    np.testing.assert_allclose(m["precision@3"], [1 / 3, 2 / 3, 0])
    np.testing.assert_allclose(m["recall@3"], [1 / 2, 1, 0])
    np.testing.assert_allclose(m["mrr@3"], [1 / 2, 1, 0])
    np.testing.assert_allclose(m["map@3"], [0.25, 5 / 6, 0])
    np.testing.assert_allclose(m["ndcg@3"], [(1 / math.log2(3)) / IDCG2, 1.5 / IDCG2, 0])
    np.testing.assert_allclose(m["ndcg@3"], [0.38685, 0.91972, 0], atol=1e-5)
    for name, want in [("hr", 1), ("precision", 1), ("recall", 0.5), ("map", 1), ("ndcg", 1), ("mrr", 1)]:
        np.testing.assert_allclose(m[f"{name}@1"], [0, want, 0], err_msg=name)


def test_hand_computed_means() -> None:
    m = ranking_metrics(TOPK, REL, ks=(3,))
    assert m["n_users"] == 3
    assert m["hr@3"] == pytest.approx(2 / 3)
    assert m["precision@3"] == pytest.approx(1 / 3)
    assert m["recall@3"] == pytest.approx(0.5)
    assert m["mrr@3"] == pytest.approx(0.5)
    assert m["map@3"] == pytest.approx((0.25 + 5 / 6) / 3)
    assert m["ndcg@3"] == pytest.approx((0.38685 + 0.91972) / 3, abs=1e-5)


def test_more_relevant_than_k_and_padding_and_empty_rows() -> None:
    # 4 relevant, 3 recommended, all hits: MAP and NDCG normalise by min(|rel|, K) = 3 -> 1;
    # recall divides by |rel| = 4. Row 1 pads with -1 (never a hit); row 2 has nothing relevant.
    topk = np.array([[0, 1, 2], [3, -1, -1], [0, 1, 2]])
    rel = _csr([[0, 1, 2, 3], [3, 4], []], 6)
    m = ranking_metrics_per_user(topk, rel, ks=(3,))
    np.testing.assert_allclose(m["map@3"][0], 1.0)
    np.testing.assert_allclose(m["ndcg@3"][0], 1.0)
    np.testing.assert_allclose(m["recall@3"][:2], [0.75, 0.5])
    np.testing.assert_allclose(m["precision@3"][1], 1 / 3)
    assert hits(topk, rel)[1].tolist() == [True, False, False]
    means = ranking_metrics(topk, rel, ks=(3,))
    assert means["n_users"] == 2  # the empty row is left out
    assert means["hr@3"] == 1.0


def test_cut_off_larger_than_topk_raises() -> None:
    with pytest.raises(ValueError, match="cut-off"):
        ranking_metrics(TOPK, REL, ks=(5,))


def _random_case(n_users: int = 40, n_items: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.random((n_users, n_items)) < 0.2
    y[np.arange(n_users), rng.integers(0, n_items, n_users)] = True  # everyone has >= 1 relevant
    scores = rng.random((n_users, n_items))
    return y, scores, np.argsort(-scores, axis=1)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_ndcg_agrees_with_sklearn(k: int) -> None:
    y, scores, order = _random_case()
    ours = ranking_metrics(order[:, :k], sp.csr_matrix(y), ks=(k,))[f"ndcg@{k}"]
    assert ours == pytest.approx(skm.ndcg_score(y.astype(int), scores, k=k))


def test_map_equals_average_precision_over_the_full_ranking() -> None:
    y, scores, order = _random_case()
    n_items = y.shape[1]
    ours = ranking_metrics_per_user(order, sp.csr_matrix(y), ks=(n_items,))[f"map@{n_items}"]
    want = [skm.average_precision_score(y[u], scores[u]) for u in range(len(y))]
    np.testing.assert_allclose(ours, want)


def test_precision_and_recall_agree_with_sklearn_on_the_top_k() -> None:
    y, scores, order = _random_case()
    k = 7
    m = ranking_metrics_per_user(order[:, :k], sp.csr_matrix(y), ks=(k,))
    predicted = np.zeros_like(y)
    np.put_along_axis(predicted, order[:, :k], True, axis=1)
    for u in range(len(y)):
        assert m[f"precision@{k}"][u] == pytest.approx(skm.precision_score(y[u], predicted[u]))
        assert m[f"recall@{k}"][u] == pytest.approx(skm.recall_score(y[u], predicted[u]))


def test_single_target_metrics() -> None:
    m = single_target_metrics(np.array([0, 2, 9, 10]), ks=(1, 10))
    np.testing.assert_allclose(m["hr@1"], [1, 0, 0, 0])
    np.testing.assert_allclose(m["hr@10"], [1, 1, 1, 0])
    np.testing.assert_allclose(m["ndcg@10"], [1, 0.5, 1 / math.log2(11), 0])
    np.testing.assert_allclose(m["mrr@10"], [1, 1 / 3, 0.1, 0])


def test_auc_agrees_with_sklearn_including_ties() -> None:
    rng = np.random.default_rng(1)
    pos, neg = rng.integers(0, 5, 50).astype(float), rng.integers(0, 4, 70).astype(float)
    y = np.r_[np.ones(50), np.zeros(70)]
    assert auc(pos, neg) == pytest.approx(skm.roc_auc_score(y, np.r_[pos, neg]))
    assert auc([1.0, 2.0], [0.0]) == 1.0
    assert auc([1.0], [1.0]) == 0.5
    with pytest.raises(ValueError):
        auc([], [1.0])


def test_per_user_auc_excludes_training_items() -> None:
    y, scores, _ = _random_case(n_users=10, n_items=25, seed=3)
    rng = np.random.default_rng(4)
    train = (rng.random(y.shape) < 0.3) & ~y
    got = per_user_auc(scores, sp.csr_matrix(y), sp.csr_matrix(train))
    for u in range(len(y)):
        keep = ~train[u]
        assert got[u] == pytest.approx(skm.roc_auc_score(y[u, keep], scores[u, keep]))
    # A row with no positive is undefined.
    assert np.isnan(per_user_auc(scores[:1], sp.csr_matrix(np.zeros((1, 25)))))[0]


def test_pointwise_metrics_agree_with_sklearn() -> None:
    rng = np.random.default_rng(5)
    y = (rng.random(200) < 0.4).astype(float)
    p = rng.uniform(0.05, 0.95, 200)
    assert log_loss(y, p) == pytest.approx(skm.log_loss(y, p))
    assert np.isfinite(log_loss([1.0, 0.0], [0.0, 1.0]))  # clipped, not inf
    r, q = rng.uniform(1, 5, 100), rng.uniform(1, 5, 100)
    assert rmse(r, q) == pytest.approx(math.sqrt(skm.mean_squared_error(r, q)))
    assert mae(r, q) == pytest.approx(skm.mean_absolute_error(r, q))


def test_catalogue_coverage() -> None:
    assert catalogue_coverage(TOPK, 6) == 1.0
    assert catalogue_coverage(np.array([[0, 1], [1, -1]]), 8) == 2 / 8


def test_per_user_auc_with_ties_agrees_with_sklearn() -> None:
    rng = np.random.default_rng(6)
    scores = rng.integers(0, 4, size=(8, 20)).astype(np.float32)  # many ties
    y = rng.random((8, 20)) < 0.3
    y[:, 0], y[:, 1] = True, False
    got = per_user_auc(scores, sp.csr_matrix(y))
    want = [skm.roc_auc_score(y[u], scores[u]) for u in range(8)]
    np.testing.assert_allclose(got, want)
