"""Context-aware top-K (deck 002 Assignment II): each event ranks the items in its own context."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recforge.data.interactions import InteractionData
from recforge.evaluation.context import context_ranking, model_context_fn, popularity_in_context
from recforge.features.tables import build_field_tables
from recforge.training.recommender import Recommender

N_USERS, N_ITEMS = 60, 40


def checkins(n: int, seed: int) -> InteractionData:
    """Mornings go to items 0-19 (breakfast places), evenings to 20-39 (bars); each user has a
    favourite quarter of each group."""
    rng = np.random.default_rng(seed)
    user = rng.integers(0, N_USERS, n)
    evening = rng.random(n) < 0.5
    hour = np.where(evening, rng.integers(18, 23, n), rng.integers(7, 11, n))
    day = rng.integers(0, 60, n)
    base = np.where(evening, 20, 0) + (user % 4) * 5
    item = base + rng.integers(0, 5, n)
    ts = 1_700_000_000 - (1_700_000_000 % 86400) + day * 86400 + hour * 3600
    return InteractionData(user.astype(np.int64), item.astype(np.int64), np.ones(n, np.float32),
                           ts.astype(np.int64), N_USERS, N_ITEMS)  # fmt: skip


@pytest.fixture(scope="module")
def data():
    return checkins(4000, 0), checkins(600, 1)


def _tables(context):
    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(N_USERS)], "g": ["a", "b"] * (N_USERS // 2)})
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(N_ITEMS)], "c": ["x", "y"] * (N_ITEMS // 2)})
    umap = pd.DataFrame({"user_id": users["user_id"], "user_idx": range(N_USERS)})
    imap = pd.DataFrame({"item_id": items["item_id"], "item_idx": range(N_ITEMS)})
    config = {"user": {"fields": [{"name": "g", "kind": "categorical", "column": "g"}]},
              "item": {"fields": [{"name": "c", "kind": "categorical", "column": "c"}]}, "context": context}
    return build_field_tables(users, items, umap, imap, config)


def _fm(train, context):
    rec = Recommender("fm", {"dim": 8, "objective": "bpr"}, {"epochs": 8, "batch_size": 256, "lr": 0.02,
                                                             "device": "cpu", "seed": 0})  # fmt: skip
    rec.fit(train, item_vectors=_tables(context))
    return rec


def test_a_model_with_the_hour_beats_the_same_model_without_it_and_the_baselines(data):
    train, test = data
    with_ctx = context_ranking(model_context_fn(_fm(train, ["hour", "weekday"])), test)
    plain = _fm(train, [])
    assert model_context_fn(plain) is None  # no context slots: the plain ranking protocol applies

    def no_context(user, timestamp):
        return plain.network.score_all(user, torch.zeros(len(user), N_ITEMS))

    without = context_ranking(no_context, test)
    in_context = context_ranking(popularity_in_context(train, "hour"), test)
    counts = torch.as_tensor(np.bincount(train.item_idx, minlength=N_ITEMS), dtype=torch.float32)
    popular = context_ranking(lambda u, t: counts.expand(len(u), -1), test)
    assert with_ctx["ndcg@20"] > without["ndcg@20"] + 0.05
    assert with_ctx["ndcg@20"] > in_context["ndcg@20"] > popular["ndcg@20"]
    assert set(with_ctx) == {f"{m}@{k}" for m in ("recall", "map", "ndcg") for k in (5, 10, 20)} | {"n_events"}


def test_the_metrics_of_known_ranks():
    test = InteractionData(np.zeros(3, np.int64), np.array([0, 1, 2]), np.ones(3, np.float32),
                           np.zeros(3, np.int64), 1, 4)  # fmt: skip
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0]])  # item 0 rank 0, item 1 rank 1, item 2 rank 2
    m = context_ranking(lambda u, t: scores.expand(len(u), -1), test, ks=(1, 2))
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@2"] == pytest.approx(2 / 3)
    assert m["map@2"] == pytest.approx((1 + 0.5) / 3)
    assert m["ndcg@2"] == pytest.approx((1 + 1 / np.log2(3)) / 3)


def test_a_saved_context_model_scores_the_same_after_load(data, tmp_path):
    train, test = data
    rec = _fm(train, ["hour"])
    rec.save(tmp_path / "fm")
    loaded = Recommender.load(tmp_path / "fm")
    u, t = torch.arange(5), torch.as_tensor(test.timestamp[:5])
    torch.testing.assert_close(model_context_fn(loaded)(u, t), model_context_fn(rec)(u, t))


def test_the_context_section_lists_context_families_with_popularity_baselines(data):
    from recforge.pipelines.evaluation.nodes import report_context_leaderboard

    train, test = data

    def frame(d):
        return pd.DataFrame({"user_idx": d.user_idx, "item_idx": d.item_idx, "value": d.value, "timestamp": d.timestamp})

    metrics = {"fm": {"context": context_ranking(model_context_fn(_fm(train, ["hour"])), test)}, "bpr": {"full": {}}}
    umap = pd.DataFrame({"user_id": range(N_USERS), "user_idx": range(N_USERS)})
    imap = pd.DataFrame({"item_id": range(N_ITEMS), "item_idx": range(N_ITEMS)})
    board, md = report_context_leaderboard(frame(train), frame(test), umap, imap, **metrics)
    assert list(board["family"])[0] == "fm"
    assert set(board["family"]) == {"fm", "popularity in hour", "popularity in weekday"}
    assert "| *popularity in hour* (baseline) |" in md and "map@5" in md
