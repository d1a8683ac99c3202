"""`sknn` and `cooccurrence`: hand-checked scores, both beat popularity on the synthetic shop's
sessions (whose order carries signal), save/load by state_dict, and sparse memory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recforge.data.filters import filter_interactions
from recforge.data.interactions import InteractionData
from recforge.data.sequences import PAD
from recforge.data.splits import SplitConfig, split_interactions
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.evaluation.sessions import evaluate_sessions, session_examples, session_leaderboard
from recforge.models.sequence import sknn
from recforge.models.sequence.cooccurrence import Cooccurrence, CooccurrenceConfig
from recforge.models.sequence.cooccurrence import build as build_cooccurrence
from recforge.models.sequence.sknn import SessionKNN, SKNNConfig
from recforge.models.sequence.sknn import build as build_sknn
from recforge.training.recommender import Recommender


def sessions_data(sessions: list[list[int]], n_items: int = 6) -> InteractionData:
    """Training data from item lists; session k happens at time 100 k (later = more recent)."""
    items = np.concatenate([np.asarray(s) for s in sessions])
    sess = np.repeat(np.arange(len(sessions)), [len(s) for s in sessions])
    ts = np.concatenate([100 * k + np.arange(len(s)) for k, s in enumerate(sessions)])
    return InteractionData(
        user_idx=sess.astype(np.int64), item_idx=items.astype(np.int64), value=np.ones(len(items), np.float32),
        timestamp=ts.astype(np.int64), n_users=len(sessions), n_items=n_items, session=sess.astype(np.int64),
    )  # fmt: skip


def prefix(*items: int, width: int = 4) -> torch.Tensor:
    return torch.tensor([[PAD] * (width - len(items)) + list(items)])


def test_sknn_scores_are_summed_cosines_of_the_neighbours() -> None:
    train = sessions_data([[0, 1], [0, 2, 2], [3, 4], [0, 5, 1]])
    net = build_sknn(SKNNConfig(), train)
    s = net.score_sequence(prefix(0, 1)).squeeze(0)
    # |q| = 2. Session 0 {0,1}: 2/sqrt(2*2) = 1; session 1 {0,2}: 1/sqrt(4); session 3 {0,5,1}: 2/sqrt(6).
    c0, c1, c3 = 1.0, 0.5, 2 / math.sqrt(6)
    expected = [c0 + c1 + c3, c0 + c3, c1, 0.0, 0.0, c3]
    np.testing.assert_allclose(s.numpy(), expected, atol=1e-5)
    # k = 1: only the most similar session votes.
    one = build_sknn(SKNNConfig(neighbours=1), train).score_sequence(prefix(0, 1)).squeeze(0)
    np.testing.assert_allclose(one.numpy(), [1, 1, 0, 0, 0, 0], atol=1e-5)
    # sample_size = 1: only the most recent session sharing an item (session 3) is a candidate.
    recent = build_sknn(SKNNConfig(sample_size=1), train).score_sequence(prefix(0, 1)).squeeze(0)
    np.testing.assert_allclose(recent.numpy(), [c3, c3, 0, 0, 0, c3], atol=1e-5)
    # Repeats and PAD do not change the binary session vector.
    np.testing.assert_allclose(net.score_sequence(prefix(1, 0, 1, 0)).squeeze(0).numpy(), expected, atol=1e-5)


def test_sknn_dense_and_sparse_paths_agree(monkeypatch: pytest.MonkeyPatch, shop_split) -> None:
    train, test = shop_split
    net = build_sknn(SKNNConfig(neighbours=20, sample_size=50), train)
    prefixes, _, _ = session_examples(test, max_len=net.max_len)
    x = torch.from_numpy(prefixes[:120])
    monkeypatch.setattr(sknn, "SPARSE_PATH_RATIO", 0)  # always count pairs
    sparse_scores = net.score_sequence(x)
    monkeypatch.setattr(sknn, "SPARSE_PATH_RATIO", 10**12)  # always the dense block
    dense_scores = net.score_sequence(x)
    torch.testing.assert_close(sparse_scores, dense_scores)
    monkeypatch.setattr(sknn, "BLOCK_BUDGET", 25 * (len(net.session_indptr) - 1))  # 25-row chunks
    torch.testing.assert_close(net.score_sequence(x), dense_scores)


def test_cooccurrence_scores_decayed_transition_probabilities() -> None:
    train = sessions_data([[0, 1, 2], [0, 1], [1, 3], [4, 4]])
    net = build_cooccurrence(CooccurrenceConfig(window=2, decay=0.5), train)
    s = net.score_sequence(prefix(0, 1)).squeeze(0).numpy()
    # P(.|1) = {2: 1/2, 3: 1/2}; P(.|0) = {1: 1}, weighted 0.5 as the second most recent item.
    np.testing.assert_allclose(s, [0, 0.5, 0.5, 0.5, 0, 0], atol=1e-5)
    last_only = build_cooccurrence(CooccurrenceConfig(window=1), train).score_sequence(prefix(0, 1)).squeeze(0)
    np.testing.assert_allclose(last_only.numpy(), [0, 0, 0.5, 0.5, 0, 0], atol=1e-5)
    both_ways = build_cooccurrence(CooccurrenceConfig(window=1, directed=False), train)
    # Undirected, from 1: 0 (twice), 2 (once), 3 (once) -> 1/2, 1/4, 1/4.
    np.testing.assert_allclose(both_ways.score_sequence(prefix(1)).squeeze(0).numpy(), [0.5, 0, 0.25, 0.25, 0, 0],
                               atol=1e-5)  # fmt: skip
    # An item never followed by anything falls back to popularity, and only just.
    fallback = net.score_sequence(prefix(2)).squeeze(0)
    assert fallback.max() < 1e-5 and int(fallback.argmax()) in (0, 1, 4)


@pytest.fixture(scope="module")
def shop_split():
    shop = generate_shop(ShopConfig(preset="tiny", n_users=300, n_items=150, n_sessions=2400, with_media=False))
    config = SplitConfig(strategy="last_days", test_days=7, events=("view",), min_session_length=2,
                         min_item_interactions=3, min_user_interactions=1)  # fmt: skip
    s = split_interactions(filter_interactions(shop.interactions, config), None, config)
    train = InteractionData.from_frame(s.train, len(s.user_map), len(s.item_map))
    return train, s.test


@pytest.fixture(scope="module")
def session_metrics(shop_split):
    train, test = shop_split
    out, models = {}, {}
    for family in ("popularity", "sknn", "cooccurrence"):
        rec = Recommender(family, {}, {"device": "cpu"})
        rec.fit(train)
        models[family] = rec
        out[family] = evaluate_sessions(rec, train, test, max_len=20, ks=(20,), n_negatives=50)
    return out, models


@pytest.mark.parametrize("family", ["sknn", "cooccurrence"])
def test_beats_popularity_on_next_item_mrr(family: str, session_metrics) -> None:
    metrics, _ = session_metrics
    mrr = {f: m["next_item"]["mrr@20"] for f, m in metrics.items()}
    assert mrr[family] > 1.3 * mrr["popularity"], mrr
    assert metrics[family]["last_item"]["mrr@20"] > metrics["popularity"]["last_item"]["mrr@20"]
    board = session_leaderboard(metrics)
    assert board["family"].iloc[-1] == "popularity"


@pytest.mark.parametrize("family", ["sknn", "cooccurrence"])
def test_save_load_round_trip(family: str, session_metrics, shop_split, tmp_path) -> None:
    train, test = shop_split
    rec = session_metrics[1][family]
    rec.save(tmp_path / family)
    loaded = Recommender.load(tmp_path / family)
    prefixes, _, _ = session_examples(test, max_len=rec.network.max_len)
    x = torch.from_numpy(prefixes[:200])
    torch.testing.assert_close(loaded.network.score_sequence(x), rec.network.score_sequence(x))
    np.testing.assert_allclose(loaded.score(np.arange(20)), rec.score(np.arange(20)), rtol=1e-6)
    for name, buf in rec.network.named_buffers():
        torch.testing.assert_close(dict(loaded.network.named_buffers())[name], buf, rtol=0, atol=0)


def test_tables_are_sparse(shop_split) -> None:
    train, _ = shop_split
    n = train.n_items
    for net in (build_sknn(SKNNConfig(), train), build_cooccurrence(CooccurrenceConfig(), train)):
        assert isinstance(net, SessionKNN | Cooccurrence)
        for name, buf in net.named_buffers():
            assert buf.dim() <= 2 and (name == "user_sequence" or buf.dim() == 1), name
            assert buf.numel() <= max(2 * len(train), n + 1, train.n_users * net.max_len), name


def test_users_without_sessions_are_sequences_too() -> None:
    train = sessions_data([[0, 1, 2], [0, 1]])
    no_sessions = InteractionData(train.user_idx, train.item_idx, train.value, train.timestamp, train.n_users,
                                  train.n_items)  # fmt: skip
    for build, config in ((build_sknn, SKNNConfig()), (build_cooccurrence, CooccurrenceConfig())):
        a = build(config, train).score_sequence(prefix(0))
        b = build(config, no_sessions).score_sequence(prefix(0))
        torch.testing.assert_close(a, b)
