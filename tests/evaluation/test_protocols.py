"""Protocols on small synthetic splits whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from scipy.stats import hypergeom
from sklearn import metrics as skm

from recforge.data.errors import DataError
from recforge.data.interactions import InteractionData
from recforge.evaluation.metrics import ranking_metrics
from recforge.evaluation.protocols import (
    evaluate_slices,
    full_ranking,
    rank_users,
    rating_prediction,
    recommend_top_k,
    sampled_ranking,
)


def _data(user: np.ndarray, item: np.ndarray, n_users: int, n_items: int, value=None) -> InteractionData:
    n = len(user)
    return InteractionData(
        user_idx=np.asarray(user, dtype=np.int64),
        item_idx=np.asarray(item, dtype=np.int64),
        value=np.ones(n, np.float32) if value is None else np.asarray(value, np.float32),
        timestamp=np.arange(n, dtype=np.int64),
        n_users=n_users,
        n_items=n_items,
    )


def _split(n_users: int, n_items: int, n_train: int, n_test: int, seed: int = 0):
    """Each user gets n_train train and n_test distinct, disjoint test items."""
    rng = np.random.default_rng(seed)
    picks = rng.random((n_users, n_items)).argsort(axis=1)[:, : n_train + n_test]  # (U, tr+te)
    users = np.repeat(np.arange(n_users), n_train + n_test).reshape(n_users, -1)
    train = _data(users[:, :n_train].ravel(), picks[:, :n_train].ravel(), n_users, n_items)
    test = _data(users[:, n_train:].ravel(), picks[:, n_train:].ravel(), n_users, n_items)
    return train, test


def _dense(data: InteractionData) -> torch.Tensor:
    return torch.from_numpy(data.csr.toarray())  # (n_users, n_items)


def _random_scorer(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return lambda user, history: torch.rand(history.shape, generator=g)


# ---------------------------------------------------------------------------- full ranking
def test_perfect_scorer_scores_one() -> None:
    train, test = _split(50, 40, n_train=5, n_test=3)
    truth = _dense(test)
    m = full_ranking(lambda u, h: truth[u], train.csr, test, ks=(3, 5, 10), with_auc=True)
    assert m["n_users"] == 50
    for name in ("ndcg", "hr", "map", "mrr", "recall"):
        for k in (3, 5, 10):
            assert m[f"{name}@{k}"] == pytest.approx(1.0), f"{name}@{k}"
    assert m["precision@5"] == pytest.approx(3 / 5)
    assert m["auc"] == pytest.approx(1.0)


def test_random_scorer_matches_expected_values() -> None:
    # 180 unseen items per user, 10 of them relevant, K = 10: hits ~ Hypergeom(180, 10, 10), so
    # E[P@10] = E[R@10] = 10/180 and, since |rel| = K, E[NDCG@10] = 10/180 too.
    train, test = _split(2000, 200, n_train=20, n_test=10, seed=1)
    m = full_ranking(_random_scorer(), train.csr, test, ks=(10,), with_auc=True)
    p = 10 / 180
    for name in ("precision", "recall", "ndcg"):
        assert m[f"{name}@10"] == pytest.approx(p, abs=0.006), name
    assert m["hr@10"] == pytest.approx(1 - hypergeom(180, 10, 10).pmf(0), abs=0.02)
    assert m["auc"] == pytest.approx(0.5, abs=0.01)


def test_training_items_never_recommended() -> None:
    train, test = _split(30, 25, n_train=8, n_test=2, seed=2)
    # A scorer that loves exactly the items the user already has.
    res = rank_users(lambda u, h: 100 * h + torch.rand(h.shape), train, test, ks=(10,))
    seen = train.csr[res.users].toarray() > 0
    rows = np.repeat(np.arange(len(res.users)), 10).reshape(-1, 10)
    assert (res.topk >= 0).all()
    assert not seen[rows, res.topk].any()


def test_user_who_has_seen_almost_everything_gets_padding() -> None:
    # User 0 saw 8 of 10 items: only 2 can be recommended, the rest of the top-5 is -1.
    train = _data(np.zeros(8), np.arange(8), 1, 10)
    top = recommend_top_k(lambda u, h: 5 * h + torch.arange(10.0), train.csr, np.array([0]), 5)
    assert top.tolist() == [[9, 8, -1, -1, -1]]


def test_batching_matches_a_numpy_reference() -> None:
    train, test = _split(60, 30, n_train=4, n_test=3, seed=3)
    rng = np.random.default_rng(0)
    p, q = torch.from_numpy(rng.normal(size=(60, 8))), torch.from_numpy(rng.normal(size=(30, 8)))
    mf = lambda u, h: p[u] @ q.T  # noqa: E731
    small = full_ranking(mf, train.csr, test, ks=(5, 10), batch_size=7)
    big = full_ranking(mf, train.csr, test, ks=(5, 10), batch_size=1024)
    scores = (p @ q.T).numpy()
    scores[train.csr.toarray() > 0] = -np.inf
    reference = ranking_metrics(np.argsort(-scores, axis=1, kind="stable")[:, :10], test.csr, ks=(5, 10))
    assert small == pytest.approx(big)
    assert small == pytest.approx(reference)


def test_only_users_with_test_items_are_evaluated() -> None:
    train, test = _split(20, 15, n_train=3, n_test=2)
    keep = test.user_idx < 5
    test5 = _data(test.user_idx[keep], test.item_idx[keep], 20, 15)
    assert full_ranking(_random_scorer(), train.csr, test5.csr, ks=(5,))["n_users"] == 5


def test_mismatched_shapes_raise() -> None:
    train, test = _split(10, 15, 3, 2)
    with pytest.raises(DataError, match="id maps"):
        full_ranking(_random_scorer(), train.csr[:, :10], test, ks=(5,))


# ------------------------------------------------------------------------- sampled ranking
class _Recorder:
    """Pair scorer that remembers every candidate it was asked about."""

    def __init__(self, scores: torch.Tensor | None = None) -> None:
        self.scores, self.users, self.items = scores, [], []

    def __call__(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        self.users.append(user.clone())
        self.items.append(item.clone())
        return self.scores[user, item] if self.scores is not None else torch.rand(user.shape)

    def candidates(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return (torch.cat(self.users).view(-1, n + 1).numpy(), torch.cat(self.items).view(-1, n + 1).numpy())


def test_sampled_negatives_are_never_positives_and_are_distinct() -> None:
    train, test = _split(40, 150, n_train=10, n_test=5, seed=4)
    rec = _Recorder()
    m = sampled_ranking(rec, train.csr, test, n_negatives=99, seed=7, ks=(10,), batch_size=33)
    users, items = rec.candidates(99)
    assert m["n_pairs"] == 200 and m["n_users"] == 40
    assert (users == users[:, :1]).all()
    seen = (train.csr + test.csr).toarray() > 0
    assert seen[users[:, 0], items[:, 0]].all()  # column 0 is the test positive
    assert not seen[users[:, 1:], items[:, 1:]].any()
    assert all(len(set(row)) == 100 for row in items.tolist())


def test_sampled_ranking_is_deterministic_by_seed() -> None:
    train, test = _split(30, 120, n_train=5, n_test=3, seed=5)
    runs = []
    for seed in (3, 3, 4):
        rec = _Recorder(torch.zeros(30, 120))
        sampled_ranking(rec, train, test, n_negatives=50, seed=seed)
        runs.append(rec.candidates(50)[1])
    assert np.array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])


def test_sampled_perfect_random_and_constant_scorers() -> None:
    train, test = _split(500, 300, n_train=10, n_test=10, seed=6)
    perfect = sampled_ranking(_Recorder(_dense(test)), train, test, seed=0, ks=(1, 10))
    assert perfect["hr@1"] == 1.0 and perfect["ndcg@10"] == 1.0 and perfect["mrr@10"] == 1.0
    torch.manual_seed(0)
    rnd = sampled_ranking(_Recorder(), train, test, seed=0, ks=(10,))
    assert rnd["hr@10"] == pytest.approx(10 / 100, abs=0.01)  # positive uniform over 100 slots
    # Ties count against the positive: a constant scorer earns nothing.
    const = sampled_ranking(_Recorder(torch.zeros(500, 300)), train, test, seed=0, ks=(10,))
    assert const["hr@10"] == 0.0


def test_sampler_handles_nearly_exhausted_users_and_refuses_impossible_ones() -> None:
    # User 0 has exactly 99 unseen items: every one must be drawn, once.
    train = _data(np.zeros(10), np.arange(10), 2, 110)
    test = _data(np.array([0, 1]), np.array([10, 10]), 2, 110)
    rec = _Recorder()
    sampled_ranking(rec, train, test, n_negatives=99, seed=0)
    users, items = rec.candidates(99)
    assert sorted(items[users[:, 0] == 0][0, 1:].tolist()) == list(range(11, 110))
    with pytest.raises(DataError, match="fewer than 100"):
        sampled_ranking(rec, train, test, n_negatives=100, seed=0)


# ----------------------------------------------------------------------- rating prediction
def test_rating_prediction_agrees_with_sklearn() -> None:
    rng = np.random.default_rng(8)
    ratings = rng.integers(1, 6, size=(20, 30)).astype(np.float32)
    u, i = rng.integers(0, 20, 300), rng.integers(0, 30, 300)
    test = _data(u, i, 20, 30, value=ratings[u, i])
    noisy = torch.from_numpy(ratings + rng.normal(0, 0.5, ratings.shape).astype(np.float32))
    m = rating_prediction(lambda a, b: noisy[a, b], test, batch_size=64)
    pred = noisy.numpy()[u, i]
    assert m["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(ratings[u, i], pred)), rel=1e-6)
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(ratings[u, i], pred), rel=1e-6)
    assert "auc" not in m and m["n"] == 300


def test_binary_prediction_adds_auc_and_logloss_from_logits() -> None:
    rng = np.random.default_rng(9)
    logit = torch.from_numpy(rng.normal(size=(10, 40)).astype(np.float32))
    u, i = rng.integers(0, 10, 400), rng.integers(0, 40, 400)
    y = (rng.random(400) < torch.sigmoid(logit).numpy()[u, i]).astype(np.float32)
    m = rating_prediction(lambda a, b: logit[a, b], _data(u, i, 10, 40, value=y), logits=True)
    prob = torch.sigmoid(logit).numpy()[u, i].astype(np.float64)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, prob))
    assert m["logloss"] == pytest.approx(skm.log_loss(y, prob), rel=1e-5)


# ---------------------------------------------------------------------------------- slices
def _slice_case():
    # Train (min_train = 5): users 0-4 own items 0-5 (6+ rows: warm), users 5-9 own items 6-7
    # (2 rows: few-shot). Items 0-7 have 5 rows (warm), item 8 one row (user 0), items 9-19
    # none: known to the id map but few-shot.
    u = np.r_[np.repeat(np.arange(5), 6), np.repeat(np.arange(5, 10), 2), 0]
    i = np.r_[np.tile(np.arange(6), 5), np.tile([6, 7], 5), 8]
    train = _data(u, i, 10, 20)
    frame = pd.DataFrame(
        {
            "user_id": ["u0", "u1", "u2", "u5", "u6", "new1", "new1", "new2", "u3", "u4"],
            "item_id": ["i10", "i6", "i8", "i0", "i9", "i3", "i4", "i5", "newA", "newA"],
            "user_idx": [0, 1, 2, 5, 6, -1, -1, -1, 3, 4],
            "item_idx": [10, 6, 8, 0, 9, 3, 4, 5, -1, -1],
        }
    )
    return train, frame


def test_slice_counts_and_shares() -> None:
    train, frame = _slice_case()
    known = frame[(frame.user_idx >= 0) & (frame.item_idx >= 0)]
    truth = torch.zeros(10, 20)
    truth[known.user_idx.to_numpy(copy=True), known.item_idx.to_numpy(copy=True)] = 1.0
    out = evaluate_slices(lambda u, h: truth[u], train, frame, ks=(1, 5), min_train=5)
    want = {"all": (5, 5), "warm": (1, 1), "few_shot_users": (2, 2), "few_shot_items": (3, 3)}
    for name, (n_rows, n_users) in want.items():
        assert out[name]["n_interactions"] == n_rows, name
        assert out[name]["share"] == pytest.approx(n_rows / 10), name
        assert out[name]["n_users"] == n_users, name
        assert out[name]["ndcg@5"] == 1.0 and out[name]["hr@1"] == 1.0, name
    assert out["cold_users"] == {"n_interactions": 3, "share": 0.3, "n_users": 2}
    assert out["cold_items"] == {"n_interactions": 2, "share": 0.2, "n_items": 1}


def test_slice_metrics_equal_full_ranking_on_the_slice() -> None:
    train, frame = _slice_case()
    g = np.random.default_rng(0)
    p, q = torch.from_numpy(g.normal(size=(10, 4))), torch.from_numpy(g.normal(size=(20, 4)))
    mf = lambda u, h: p[u] @ q.T  # noqa: E731
    out = evaluate_slices(mf, train, frame, ks=(5,), min_train=5)
    few_item = frame.iloc[[0, 2, 4]]
    rel = sp.csr_matrix((np.ones(3), (few_item.user_idx, few_item.item_idx)), shape=(10, 20))
    want = full_ranking(mf, train, rel, ks=(5,))
    assert {k: out["few_shot_items"][k] for k in want} == pytest.approx(want)
