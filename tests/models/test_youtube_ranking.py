"""`youtube_ranking` (Covington, Adams & Sargin 2016 §4): the weighted logistic loss, engagement
weights, the CDF normalisation, the point-in-time and serving features on hand-built data, quality
against popularity on the shop, and an exact save/load round trip."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from recforge.data.errors import DataError
from recforge.data.filters import filter_interactions
from recforge.data.interactions import InteractionData
from recforge.data.schema import EVENTS
from recforge.data.splits import SplitConfig, split_interactions
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.evaluation.protocols import full_ranking
from recforge.models.features.ranking_features import (
    Timeline,
    cdf_normalise,
    impressions_until,
    item_content,
    phi,
    quantile_edges,
    ranking_content,
    shown_before,
    training_features,
)
from recforge.models.features.youtube_ranking import YouTubeRankingConfig, build
from recforge.training.engagement import engagement_weights, weighted_logistic_loss
from recforge.training.recommender import Recommender


def data(users, items, times, events=None, values=None, n_users=2, n_items=4) -> InteractionData:
    n = len(users)
    codes = None if events is None else np.array([EVENTS.index(e) for e in events], dtype=np.int8)
    return InteractionData(
        user_idx=np.asarray(users, np.int64), item_idx=np.asarray(items, np.int64),
        value=np.asarray(values if values is not None else np.ones(n), np.float32),
        timestamp=np.asarray(times, np.int64), n_users=n_users, n_items=n_items, event=codes,
    )  # fmt: skip


def test_weighted_logistic_loss_matches_a_hand_computation():
    z, y, w = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0]), torch.tensor([8.0, 1.0, 1.0])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    terms = [-8 * math.log(sig(2.0)), -math.log(1 - sig(-1.0)), -math.log(1 - sig(0.5))]
    assert weighted_logistic_loss(z, y, w).item() == pytest.approx(sum(terms) / 10, rel=1e-6)
    # unit weights: the plain mean log loss
    plain = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
    assert weighted_logistic_loss(z, y, torch.ones(3)).item() == pytest.approx(plain.item(), rel=1e-6)


def test_engagement_weights_order_events_and_rating_rows_use_the_rating():
    d = data([0, 0, 0, 0, 1], [0, 1, 2, 3, 0], [1, 2, 3, 4, 5],
             events=["view", "click", "add_to_cart", "purchase", "rating"], values=[1, 1, 1, 1, 4.0])  # fmt: skip
    w = engagement_weights(d, YouTubeRankingConfig())
    assert w[3] > w[2] > w[1] > w[0]
    assert w.tolist() == [1.0, 2.0, 4.0, 8.0, 4.0]
    custom = engagement_weights(d, {"purchase": 20.0})  # missing keys keep their defaults
    assert custom.tolist() == [1.0, 2.0, 4.0, 20.0, 4.0]
    # no event column: the value is the engagement
    assert engagement_weights(data([0, 1], [0, 1], [1, 2], values=[3.0, 5.0])).tolist() == [3.0, 5.0]
    with pytest.raises(DataError, match="no positive engagement"):
        engagement_weights(data([0], [0], [1], events=["rating"], values=[0.0]))
    with pytest.raises(ValueError, match="unknown events"):
        YouTubeRankingConfig(event_weights={"watch": 1.0})


def test_cdf_normalisation_lies_in_0_1_with_square_and_root():
    values = np.random.default_rng(0).exponential(100.0, 5000)
    edges = torch.as_tensor(quantile_edges(values, 50))
    x = torch.as_tensor(np.r_[-1.0, values, values.max() * 10], dtype=torch.float32)
    t = cdf_normalise(x, edges)
    assert (t >= 0).all() and (t < 1).all()
    assert t[0] == 0 and t[-1] == pytest.approx(50 / 51)
    order = torch.argsort(x)
    assert (t[order].diff() >= -1e-6).all()  # monotone
    # it is the empirical CDF (up to the K/(K+1) scale and the quantile grid)
    ecdf = (np.searchsorted(np.sort(values), values, side="right") / len(values)) * 50 / 51
    assert np.abs(t[1:-1].numpy() - ecdf).max() < 0.03
    f = phi(x, edges)  # (N, 3)
    torch.testing.assert_close(f, torch.stack([t, t * t, t.sqrt()], dim=-1))


def test_time_since_category_and_previous_events_on_a_hand_built_example():
    # items 0, 1 in category 0; items 2, 3 in category 1
    category = torch.tensor([0, 0, 1, 1])
    d = data([0, 0, 0, 1], [0, 1, 0, 2], [100, 250, 400, 300], events=["view"] * 4)
    cat = category.numpy()
    # point in time: (user, item, t)
    count, since, never = training_features(d, cat, np.array([0, 0, 0, 0, 1, 1]), np.array([1, 0, 0, 3, 3, 0]),
                                            np.array([250, 400, 100, 500, 300, 1000]))  # fmt: skip
    assert since.tolist() == [150, 150, 0, 0, 0, 0]  # last cat-0 events before 250 and 400: 100 and 250
    assert never.tolist() == [0, 0, 1, 1, 1, 1]  # nothing before 100; user 0 never met cat 1 ...
    assert count.tolist() == [0, 1, 0, 0, 0, 0]  # user 1 met cat 1 at 300, not strictly before 300
    count2, since2, never2 = training_features(d, cat, np.array([1]), np.array([3]), np.array([301]))
    assert (count2.tolist(), since2.tolist(), never2.tolist()) == ([0], [1], [0])
    # serving: as of the end of training (t = 400)
    net = build(YouTubeRankingConfig(dim=4, layers=(8,)), d, category)
    c, s, n, shown, in_hist = net.serving_features(torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1, 3, 3, 0]))
    assert c.tolist() == [2, 1, 0, 0, 0]
    assert s.tolist() == [0, 0, 0, 100, 0] and n.tolist() == [0, 0, 1, 0, 1]
    assert in_hist.tolist() == [1, 1, 0, 0, 0] and shown.tolist() == [0] * 5  # no impression log


def test_previous_impressions_count_the_log_up_to_the_end_of_training_only():
    import pandas as pd

    category = torch.tensor([0, 0, 1, 1])
    d = data([0, 0, 0, 1], [0, 1, 0, 2], [100, 250, 400, 300], events=["view"] * 4)
    users = pd.DataFrame({"user_id": ["a", "b"], "user_idx": [0, 1]})
    items = pd.DataFrame({"item_id": ["i0", "i1", "i2", "i3"], "item_idx": [0, 1, 2, 3]})
    log = pd.DataFrame({"user_id": ["a", "a", "a", "b", "zz", "b"], "item_id": ["i3", "i3", "i3", "i0", "i0", "nope"],
                        "timestamp": [50, 350, 500, 200, 10, 10]})  # 500: after training; zz, nope: unknown ids
    content = ranking_content(pd.DataFrame({"item_id": items["item_id"]}), log, users, items)
    assert len(content.impression_ts) == 4  # the unknown user and item dropped
    net = build(YouTubeRankingConfig(dim=4, layers=(8,)), d, content)
    *_, shown, _ = net.serving_features(torch.tensor([0, 1, 1]), torch.tensor([3, 0, 3]))
    assert shown.tolist() == [2, 1, 0]  # the impression at 500 is after training: not counted
    assert shown_before(impressions_until(content, d), 4, np.array([0, 0]), np.array([3, 3]), np.array([351, 350])).tolist() == [2, 1]
    batch = next(iter(net_batches(net, d)))
    assert set(batch) >= {"shown"} and batch["shown"].shape == batch["count"].shape
    with pytest.raises(ValueError, match=r"impressions table lacks column\(s\) \['timestamp'\]"):
        ranking_content(items, log.drop(columns="timestamp"), users, items)
    empty = ranking_content(items, pd.DataFrame(), users, items)
    assert len(empty.impression_ts) == 0 and build(YouTubeRankingConfig(dim=4, layers=(8,)), d, empty).shown_keys.numel() == 0


def net_batches(net, d):
    from recforge.models.features.youtube_ranking import batches

    return batches(net, d, YouTubeRankingConfig(dim=4, layers=(8,)), 4, torch.Generator().manual_seed(0))


def test_timeline_counts_match_a_brute_force():
    rng = np.random.default_rng(1)
    key, ts = rng.integers(0, 20, 500), rng.integers(0, 50, 500)
    q_key, q_ts = rng.integers(0, 25, 300), rng.integers(0, 55, 300)
    tl = Timeline(key, ts)
    count = tl.count_before(q_key, q_ts)
    last, has = tl.last_before(q_key, q_ts)
    for k, t, c, lt, h in zip(q_key, q_ts, count, last, has):
        before = ts[(key == k) & (ts < t)]
        assert c == len(before) and h == (len(before) > 0)
        if h:
            assert lt == before.max()


def test_item_content_gives_items_without_a_category_their_own():
    items = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "category": ["x/y", "x/z", "x/y", None]})
    item_map = pd.DataFrame({"item_id": ["d", "c", "b", "a", "e"], "item_idx": [0, 1, 2, 3, 4]})
    codes = item_content(items, item_map).tolist()
    assert codes[1] == codes[3] and codes[2] != codes[1]
    assert len({codes[0], codes[4], codes[1], codes[2]}) == 4  # d and e (missing) are their own
    no_column = item_content(items[["item_id"]], item_map).tolist()
    assert sorted(no_column) == [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def shop():
    shop = generate_shop(ShopConfig(preset="tiny", n_users=300, n_items=150, n_sessions=2400, with_media=False))
    config = SplitConfig(strategy="random", valid_fraction=0.1, test_fraction=0.15, seed=0,
                         min_user_interactions=3, min_item_interactions=3)
    s = split_interactions(filter_interactions(shop.interactions, config), None, config)
    n_users, n_items = len(s.user_map), len(s.item_map)
    train = InteractionData.from_frame(s.train, n_users, n_items)
    test = InteractionData.from_frame(s.test, n_users, n_items)
    return train, test, item_content(shop.items, s.item_map.to_frame())


@pytest.fixture(scope="module")
def ranker(shop):
    train, _, categories = shop
    rec = Recommender("youtube_ranking", {"dim": 16, "layers": [32]},
                      {"epochs": 8, "batch_size": 512, "lr": 0.01, "device": "cpu", "seed": 3})  # fmt: skip
    rec.fit(train, item_vectors=categories)
    return rec


def test_beats_popularity_on_the_shop(shop, ranker):
    train, test, _ = shop
    pop = Recommender("popularity", {}, {"device": "cpu"})
    pop.fit(train)

    def ndcg(rec):
        return full_ranking(rec.score_fn(), train.csr, test, ks=(10,))["ndcg@10"]

    assert ndcg(ranker) > ndcg(pop)
    assert ranker.history.loss[-1] < ranker.history.loss[0]


def test_save_load_gives_identical_scores(shop, ranker, tmp_path):
    ranker.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    users = np.arange(30)
    np.testing.assert_array_equal(loaded.score(users), ranker.score(users))
    assert int(loaded.network.category.max()) + 1 == ranker.network.n_categories < shop[0].n_items
