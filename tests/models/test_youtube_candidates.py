"""`youtube_candidates` (Covington et al. 2016 §3): the logQ-corrected sampled softmax, histories
that never see the target or later items, quality on the synthetic shop, save/load, cold users."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recforge.data.filters import filter_interactions
from recforge.data.interactions import InteractionData
from recforge.data.splits import SplitConfig, split_interactions
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.evaluation.protocols import full_ranking
from recforge.models.cf import youtube_candidates as yc
from recforge.training.recommender import Recommender

SMALL = {"dim": 32, "embedding_dim": 32, "layers": [64], "max_history": 20}
TRAIN = {"epochs": 10, "batch_size": 256, "lr": 0.01, "device": "cpu", "seed": 0}


def test_in_batch_logq_correction_matches_a_hand_computation():
    u = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    v = torch.tensor([[0.5, 1.0], [2.0, 0.0], [1.0, -1.0]])
    bias = torch.tensor([0.1, -0.2, 0.3])
    item = torch.tensor([4, 7, 4])  # rows 0 and 2 share a target: each other's positive, masked
    log_q = torch.log(torch.tensor([0.5, 0.2, 0.5]))
    s = [[sum(a * b for a, b in zip(u[i].tolist(), v[j].tolist())) + bias[j].item() - log_q[j].item()
          for j in range(3)] for i in range(3)]
    expected = [
        math.log(math.exp(s[0][0]) + math.exp(s[0][1])) - s[0][0],
        math.log(math.exp(s[1][0]) + math.exp(s[1][1]) + math.exp(s[1][2])) - s[1][1],
        math.log(math.exp(s[2][1]) + math.exp(s[2][2])) - s[2][2],
    ]
    got = yc.in_batch_softmax(u, v, bias, item, log_q)
    assert got.item() == pytest.approx(sum(expected) / 3, rel=1e-5)
    # without the correction the popular item's logits are not lowered: a different loss
    assert yc.in_batch_softmax(u, v, bias, item, None).item() != pytest.approx(got.item(), rel=1e-3)


def test_sampled_negatives_subtract_the_log_expected_count():
    d = _sequences()
    config = yc.YouTubeCandidatesConfig(dim=4, embedding_dim=4, layers=(8,), negatives="sampled",
                                        n_negatives=5, alpha=0.5)  # fmt: skip
    batch = next(yc.batches(yc.build(config, d), d, config, 4, torch.Generator().manual_seed(0)))
    pop = np.bincount(d.item_idx, minlength=d.n_items) ** 0.5
    q = pop / pop.sum()
    torch.testing.assert_close(batch["negative_log_q"], torch.as_tensor(np.log(5 * q[batch["negative"]])).float())
    torch.testing.assert_close(batch["positive_log_q"], torch.as_tensor(np.log(5 * q[batch["item"]])).float())


def _sequences() -> InteractionData:
    # user 0: items 1 (t=10), 2 and 3 (both t=20), 5 (t=30); user 1: 0 (t=5), 4 (t=6)
    return InteractionData(
        user_idx=np.array([0, 1, 0, 0, 1, 0]), item_idx=np.array([2, 0, 1, 5, 4, 3]),
        value=np.ones(6, np.float32), timestamp=np.array([20, 5, 10, 30, 6, 20]), n_users=2, n_items=6,
    )


def test_the_history_of_an_example_excludes_its_target_and_later_items():
    d = _sequences()
    config = yc.YouTubeCandidatesConfig(dim=4, embedding_dim=4, layers=(8,), max_history=3)
    net = yc.build(config, d)
    batch = next(yc.batches(net, d, config, 100, torch.Generator().manual_seed(0)))
    got = {(int(i), tuple(sorted(h[h >= 0].tolist()))) for i, h in zip(batch["item"], batch["history"])}
    # items 2 and 3 share t=20: neither is in the other's history
    assert got == {(1, ()), (2, (1,)), (3, (1,)), (5, (1, 2, 3)), (0, ()), (4, (0,))}
    ages = dict(zip(batch["item"].tolist(), batch["age"].tolist()))
    assert ages[5] == 0.0 and ages[0] == 1.0 and ages[1] == pytest.approx(20 / 25)
    # serving reads the most recent training items, in time order
    assert net.history.tolist() == [[2, 3, 5], [-1, 0, 4]]


def test_the_history_is_truncated_to_the_most_recent_items():
    d = _sequences()
    config = yc.YouTubeCandidatesConfig(dim=4, embedding_dim=4, layers=(8,), max_history=1)
    batch = next(yc.batches(yc.build(config, d), d, config, 100, torch.Generator().manual_seed(0)))
    hist = dict(zip(batch["item"].tolist(), batch["history"][:, 0].tolist()))
    assert hist[5] == 3 and hist[2] == 1 and hist[1] == -1


@pytest.fixture(scope="module")
def shop():
    shop = generate_shop(ShopConfig(preset="tiny", n_users=300, n_items=150, n_sessions=2400, with_media=False))
    config = SplitConfig(strategy="random", valid_fraction=0.0, test_fraction=0.2, seed=0,
                         min_user_interactions=3, min_item_interactions=3)
    s = split_interactions(filter_interactions(shop.interactions, config), None, config)
    n_users, n_items = len(s.user_map), len(s.item_map)
    return {"train": InteractionData.from_frame(s.train, n_users, n_items),
            "test": InteractionData.from_frame(s.test, n_users, n_items)}


def ndcg10(score_fn, shop) -> float:
    return full_ranking(score_fn, shop["train"].csr, shop["test"], ks=(10,))["ndcg@10"]


@pytest.fixture(scope="module")
def trained(shop):
    out = {}
    for negatives in ("in_batch", "sampled"):
        rec = Recommender("youtube_candidates", {**SMALL, "negatives": negatives, "n_negatives": 64}, TRAIN)
        rec.fit(shop["train"])
        out[negatives] = rec
    return out


@pytest.mark.parametrize("negatives", ["in_batch", "sampled"])
def test_beats_popularity_on_the_shop(negatives, trained, shop):
    pop = Recommender("popularity", {}, {"device": "cpu"})
    pop.fit(shop["train"])
    assert ndcg10(trained[negatives].score_fn(), shop) > ndcg10(pop.score_fn(), shop)


def test_save_load_round_trip_gives_identical_scores(trained, tmp_path):
    rec = trained["in_batch"]
    rec.save(tmp_path / "yc")
    loaded = Recommender.load(tmp_path / "yc")
    users = np.arange(50)
    np.testing.assert_array_equal(loaded.score(users), rec.score(users))
    assert torch.equal(loaded.network.history, rec.network.history)


def test_user_vectors_retrieve_the_same_top_items_as_score_all(trained):
    net = trained["in_batch"].network
    users = torch.arange(20)
    with torch.no_grad():
        u = net.user_vectors(users)  # (20, D)
        assert u.shape == (20, net.item_embeddings().shape[1])
        # retrieval by maximum inner product over [V, b] with the query [u, 1]
        keys = torch.cat([net.item_embeddings(), net.item_bias[:, None]], dim=1)
        query = torch.cat([u, torch.ones(20, 1)], dim=1)
        torch.testing.assert_close(query @ keys.T, net.score_all(users, None))


def test_cold_users_are_scored_from_their_fold_in_history(trained, shop):
    rec = trained["in_batch"]
    train = shop["train"]
    # a known user's whole history as a cold fold-in: the same vector when it fits max_history
    distinct, rows = np.diff(train.csr.indptr), np.bincount(train.user_idx, minlength=train.n_users)
    users = np.flatnonzero((rows <= SMALL["max_history"]) & (rows == distinct) & (rows > 0))[:10]
    assert len(users) == 10
    history = torch.as_tensor(train.csr[users].toarray())
    cold = rec.cold_user_score_fn()(history)
    assert cold.shape == (10, train.n_items) and torch.isfinite(cold).all()
    torch.testing.assert_close(cold, torch.as_tensor(rec.score(users)), rtol=1e-4, atol=1e-4)
    # an empty history gives one vector for everyone, and a history moves it
    empty = rec.cold_user_score_fn()(torch.zeros(2, train.n_items))
    torch.testing.assert_close(empty[0], empty[1])
    assert not torch.allclose(cold[0], empty[0])


# ------------------------------------------------------------ §3.3: text tokens and demographics
def _maps(n_users: int, n_items: int) -> tuple:
    import pandas as pd

    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(n_users)], "user_idx": range(n_users)})
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "item_idx": range(n_items)})
    return users, items


def test_item_content_hashes_the_words_and_codes_every_users_column():
    import pandas as pd

    user_map, item_map = _maps(4, 3)
    items = pd.DataFrame({"item_id": ["i0", "i1"], "title": ["Red shoe", "Blue hat"], "text": ["red red", None]})
    users = pd.DataFrame({"user_id": ["u0", "u1", "u2"], "country": ["FR", "GB", None],
                          "age": [18.0, 70.0, float("nan")]})  # u3 is missing from the table
    side = yc.item_content(items, users, user_map, item_map)
    words = side.words
    assert words.shape[0] == 3 and (words[0] > 0).sum() == 4 and (words[1] > 0).sum() == 2
    assert (words[2] == 0).all()  # i2 has no row in the items table: no words
    assert words[0, 0] == words[0, 2] == words[0, 3]  # "red" hashes to one id
    demo = side.demographics
    assert demo.shape == (4, 2) and side.sizes.tolist()[0] == 3  # FR, GB + unknown
    assert demo[0, 0] != demo[1, 0] and demo[2, 0] == 0 and (demo[3] == 0).all()
    assert demo[0, 1] != demo[1, 1] and demo[0, 1] > 0 and demo[2, 1] == 0  # numbers in quantile buckets
    empty = yc.item_content(items[["item_id"]], users[["user_id"]], user_map, item_map)
    assert (empty.words == 0).all() and empty.demographics.shape == (4, 0)


def test_demographics_alone_rank_a_groups_items_and_the_side_round_trips(tmp_path):
    """Two groups of users (a users column), each interacting only with its half of the catalogue:
    with an empty history, u comes from the demographics, and puts the user's half on top."""
    import pandas as pd

    rng = np.random.default_rng(0)
    n_users, n_items, per_user = 200, 20, 3
    group = np.arange(n_users) % 2
    user_idx = np.repeat(np.arange(n_users), per_user)
    item_idx = group[user_idx] * 10 + rng.integers(0, 10, size=len(user_idx))
    ts = np.tile(np.arange(per_user), n_users) + 10 * user_idx
    train = InteractionData(user_idx=user_idx, item_idx=item_idx, value=np.ones(len(user_idx), np.float32),
                            timestamp=ts, n_users=n_users, n_items=n_items)  # fmt: skip
    user_map, item_map = _maps(n_users, n_items)
    users = pd.DataFrame({"user_id": user_map["user_id"], "segment": np.where(group == 0, "a", "b")})
    items = pd.DataFrame({"item_id": item_map["item_id"], "title": [f"w{i // 10} x{i}" for i in range(n_items)]})
    side = yc.item_content(items, users, user_map, item_map)
    rec = Recommender("youtube_candidates", {**SMALL, "text_dim": 8, "demographic_dim": 4},
                      {**TRAIN, "epochs": 30, "batch_size": 128})  # fmt: skip
    rec.fit(train, item_vectors=side)
    net = rec.network
    assert net.use_text and net.use_demographics
    with torch.no_grad():
        empty = torch.full((n_users, SMALL["max_history"]), yc.PAD)
        top = net.logits(net.encode(empty, user=torch.arange(n_users))).topk(5).indices  # (U, 5)
    assert ((top // 10) == torch.as_tensor(group)[:, None]).float().mean() > 0.9
    rec.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert loaded.network.use_text and loaded.network.use_demographics
    np.testing.assert_allclose(loaded.score(np.arange(10)), rec.score(np.arange(10)), rtol=1e-5, atol=1e-6)
    # a cold user (not in the users table) folds in from history and words, demographics unknown
    history = torch.zeros(2, n_items)
    history[0, :3] = 1.0
    history[1, 12:15] = 1.0
    with torch.no_grad():
        cold_top = net.score_cold_users(history).topk(5).indices
    assert (cold_top[0] < 10).float().mean() > 0.5 and (cold_top[1] >= 10).float().mean() > 0.5
