"""tag_attention_cnn: its item content (hashed words, tags), the attention gate, the tag task on
items held out of training (against tag popularity), cold items and cold users, save/load of the
tag vocabulary, and the errors on content it cannot use."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recforge.data.errors import DataError
from recforge.data.filters import filter_interactions
from recforge.data.interactions import InteractionData
from recforge.data.splits import SplitConfig, split_interactions
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.evaluation.tags import evaluate_tags, tag_metrics
from recforge.models.content.tag_attention_cnn import (
    TagAttentionCNN,
    TagAttentionCNNConfig,
    TagContent,
    build,
    item_content,
)
from recforge.training.recommender import Recommender

SMALL = {"embedding_dim": 16, "compressed_dim": 16, "global_filters": 16, "hidden": 32, "n_buckets": 1024,
         "max_len": 40}
TRAIN = {"epochs": 4, "batch_size": 1024, "lr": 0.03, "device": "cpu", "seed": 3}


@pytest.fixture(scope="module")
def world():
    """The shop with a seeded fifth of its items held out of training entirely (no interactions,
    no tags seen): the model meets them only through their text, as cold items."""
    shop = generate_shop(ShopConfig(preset="tiny", n_users=300, n_items=300, n_sessions=2400, with_media=False,
                                    impression_rows=0))  # fmt: skip
    ids = shop.items["item_id"].to_numpy()
    held = ids[np.random.default_rng(0).random(len(ids)) < 0.2]
    config = SplitConfig(strategy="random", valid_fraction=0.0, test_fraction=0.15, seed=0,
                         min_user_interactions=3, min_item_interactions=3)  # fmt: skip
    inter = shop.interactions[~shop.interactions["item_id"].isin(held)]
    s = split_interactions(filter_interactions(inter, config), None, config)
    train = InteractionData.from_frame(s.train, len(s.user_map), len(s.item_map))
    item_map = s.item_map.to_frame()
    rec = Recommender("tag_attention_cnn", SMALL, TRAIN)
    rec.fit(train, item_vectors=item_content(shop.items, item_map))
    return shop, held, train, item_map, rec


def _departments(items: pd.DataFrame, ids) -> np.ndarray:
    by_id = items.set_index("item_id")["category"].str.split("/").str[0]
    return by_id.loc[list(ids)].to_numpy()


# --- content ----------------------------------------------------------------------------------


def test_item_content_is_the_same_whichever_items_are_encoded() -> None:
    items = pd.DataFrame({"item_id": ["a", "b", "c"], "title": ["Red shoe", "Blue phone", None],
                          "text": ["soft leather", "fast, wireless", "no title here"],
                          "tags": ["shoes|red", "phones", None]})  # fmt: skip
    both = item_content(items, pd.DataFrame({"item_id": ["b", "a", "c"], "item_idx": [0, 1, 2]}))
    alone = item_content(items, pd.DataFrame({"item_id": ["a"], "item_idx": [0]}))
    torch.testing.assert_close(both.tokens[1], alone.tokens[0], rtol=0, atol=0)  # hashed, not a fitted vocabulary
    assert (both.tokens[0] > 0).sum() == 4 and (both.tokens[2] > 0).sum() == 3  # "blue phone fast wireless"
    assert both.vocabulary == ("phones", "red", "shoes") and alone.vocabulary == ("red", "shoes")
    torch.testing.assert_close(both.tags, torch.tensor([[1.0, 0, 0], [0, 1, 1], [0, 0, 0]]))


def test_sources_without_tags_fall_back_to_genres_then_the_category_path() -> None:
    item_map = pd.DataFrame({"item_id": ["m1", "m2"], "item_idx": [0, 1]})
    movies = pd.DataFrame({"item_id": ["m1", "m2"], "title": ["x", "y"], "text": ["", ""],
                           "genres": ["Comedy|Drama", "Drama"], "category": ["movie/Comedy", "movie/Drama"]})  # fmt: skip
    assert item_content(movies, item_map).vocabulary == ("Comedy", "Drama")
    assert item_content(movies.drop(columns="genres"), item_map).vocabulary == ("Comedy", "Drama", "movie")
    with pytest.raises(DataError, match="'items'.*'tags'.*needs one of"):
        item_content(movies.drop(columns=["genres", "category"]), item_map)
    with pytest.raises(DataError, match="'items'.*column 'text'"):
        item_content(movies.drop(columns="text"), item_map)


def test_words_attended_below_the_threshold_are_zeroed() -> None:
    """The local channel reads only its trigger words: with every θ under η it is blind to the
    text, with every θ over η it is not."""
    tags = torch.eye(3)
    content = TagContent(torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [5, 9, 9, 0]]), tags, ("a", "b", "c"))
    rows = pd.DataFrame({"user_idx": [0, 1], "item_idx": [0, 1], "value": 1.0, "timestamp": 0})
    train = InteractionData.from_frame(rows, 2, 3)
    torch.manual_seed(0)
    net = build(TagAttentionCNNConfig(embedding_dim=8, window=3, threshold=0.5), train, content).eval()
    mask = (net.tokens != 0).unsqueeze(1)
    m = net.embedding(net.tokens).transpose(1, 2)
    with torch.no_grad():
        net.attention.weight.zero_()
        net.attention.bias.fill_(-1.0)  # θ = σ(-1) ≈ 0.27 < η for every word
        blind = net.local_channel(m, mask)
        net.attention.bias.fill_(1.0)  # θ ≈ 0.73 ≥ η
        seeing = net.local_channel(m, mask)
    torch.testing.assert_close(blind, torch.tanh(net.compression.bias).expand(3, -1))
    assert (seeing[0] - seeing[1]).abs().max() > 1e-3


# --- the tag task -----------------------------------------------------------------------------


def test_tags_of_held_out_items_beat_tag_popularity_by_a_clear_margin(world) -> None:
    shop, held, _, _, rec = world
    report = evaluate_tags(rec, shop.items, held, ks=(1, 3, 5))
    assert report["n_items"] == len(held) > 40
    for k in (1, 3, 5):
        assert report[f"f1@{k}"] > 1.4 * report[f"tag_popularity_f1@{k}"], (k, report)
    assert report["precision@1"] > 0.4 and report["recall@5"] > 0.35, report


def test_tag_metrics_count_hits_and_unknown_tags() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.1, 0.2, 0.3]])
    truth = torch.tensor([[1.0, 0, 0], [0, 1, 0]])
    n_true = torch.tensor([2.0, 1.0])  # item 0 also has a tag outside the vocabulary
    m = tag_metrics(scores, truth, n_true, ks=(1, 2))
    assert m["precision@1"] == pytest.approx(0.5) and m["recall@1"] == pytest.approx(0.25)
    assert m["precision@2"] == pytest.approx(0.5) and m["recall@2"] == pytest.approx(0.75)
    assert m["f1@2"] == pytest.approx(2 * 0.5 * 0.75 / 1.25)


def test_evaluate_tags_names_unknown_items(world) -> None:
    shop, held, _, _, rec = world
    with pytest.raises(DataError, match="'items'.*'item_id'.*not in the items table.*nope"):
        evaluate_tags(rec, shop.items, [held[0], "nope"])


# --- cold start -------------------------------------------------------------------------------


def test_cold_items_of_a_users_department_rank_above_the_others(world) -> None:
    shop, held, train, item_map, rec = world
    cold = pd.DataFrame({"item_id": held, "item_idx": np.arange(len(held))})
    cold_dept = _departments(shop.items, held)
    train_dept = _departments(shop.items, item_map.sort_values("item_idx")["item_id"])
    rows = train.csr.tocsr()
    users, favourite = [], []
    for u in range(rows.shape[0]):
        depts = train_dept[rows[u].indices]
        values, counts = np.unique(depts, return_counts=True)
        if len(depts) >= 5 and counts.max() >= 0.6 * len(depts):
            users.append(u)
            favourite.append(values[counts.argmax()])
    assert len(users) > 30
    scores = rec.cold_item_score_fn(item_content(shop.items, cold))(torch.as_tensor(users)).numpy()  # as evaluation
    assert scores.shape == (len(users), len(held))
    own = cold_dept[None, :] == np.array(favourite)[:, None]  # (B, C)
    better = [(s[o][:, None] > s[~o][None, :]).mean() for s, o in zip(scores, own, strict=True) if o.any()]
    assert np.mean(better) > 0.8  # AUC of "own department" among the cold items


def test_a_cold_users_fold_in_history_ranks_its_department_first(world) -> None:
    shop, _, train, item_map, rec = world
    dept = _departments(shop.items, item_map.sort_values("item_idx")["item_id"])
    history = torch.zeros(len(np.unique(dept)), train.n_items)
    for row, d in enumerate(np.unique(dept)):
        history[row, np.flatnonzero(dept == d)[:3]] = 1.0  # three items of one department
    scores = rec.cold_user_score_fn()(history)
    with torch.no_grad():
        # a warm user's own row scores the same as a fold-in of that row: the history is the profile
        warm = torch.as_tensor(train.csr[:4].toarray(), dtype=torch.float32)
        torch.testing.assert_close(rec.network.score_cold_users(warm), rec.network.score_all(torch.arange(4), warm))
    top = scores.topk(10, dim=1).indices.numpy()
    share = (dept[top] == np.unique(dept)[:, None]).mean()
    assert share > 0.6  # chance: 1/6


def test_cold_content_it_cannot_use_is_refused_by_name(world) -> None:
    shop, held, train, _, rec = world
    with pytest.raises(TypeError, match="item_content"):
        rec.network.score_cold_items(torch.arange(2), torch.randn(3, 16))
    with pytest.raises(TypeError, match=r"integer word ids.*shape \(3, 4, 2\)"):
        rec.network.predict_tags(torch.ones(3, 4, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="item_content.*got nothing"):
        build(rec.config, train, None)
    few = item_content(shop.items, pd.DataFrame({"item_id": held[:5], "item_idx": range(5)}))
    with pytest.raises(ValueError, match=f"content for 5 items, the training data has {train.n_items}"):
        build(rec.config, train, few)
    with pytest.raises(ValueError, match="2 tag columns for 1 tags"):
        TagContent(torch.ones(3, 4, dtype=torch.long), torch.zeros(3, 2), ("x",))


# --- persistence ------------------------------------------------------------------------------


def test_load_restores_the_tag_vocabulary_and_the_cold_item_scores(world, tmp_path) -> None:
    shop, held, _, _, rec = world
    rec.save(tmp_path / "tac")
    loaded = Recommender.load(tmp_path / "tac")
    assert isinstance(loaded.network, TagAttentionCNN)
    assert loaded.network.vocabulary == rec.network.vocabulary and len(rec.network.vocabulary) > 30
    cold = item_content(shop.items, pd.DataFrame({"item_id": held, "item_idx": np.arange(len(held))}))
    with torch.no_grad():
        torch.testing.assert_close(loaded.network.score_cold_items(torch.arange(5), cold),
                                   rec.network.score_cold_items(torch.arange(5), cold))  # fmt: skip
    assert evaluate_tags(loaded, shop.items, held) == evaluate_tags(rec, shop.items, held)
    other = TagContent(rec.network.tokens, rec.network.tags, ("z", *rec.network.vocabulary[1:]))
    with pytest.raises(ValueError, match="saved tag vocabulary differs"):
        build(rec.config, _shell(rec), other).load_state_dict(rec.network.state_dict())


def _shell(rec: Recommender) -> InteractionData:
    from recforge.training.recommender import _shell_data

    return _shell_data(rec._seen)


# --- the evaluation pipeline's tag task ------------------------------------------------------


def test_the_tag_task_node_scores_the_cold_test_items_and_reports_them(world) -> None:
    from recforge.evaluation.report import EvaluationConfig
    from recforge.pipelines.evaluation.nodes import evaluate_tag_model, report_tasks, tags_markdown

    shop, held, _, item_map, rec = world
    test = pd.DataFrame({"item_id": [*held[:40], item_map["item_id"].iloc[0]]})  # 40 cold, one warm
    metrics = evaluate_tag_model(rec, shop.items, test, item_map, EvaluationConfig(tag_ks=(1, 3)))
    assert metrics["n_items"] == 40
    assert metrics["f1@3"] > metrics["tag_popularity_f1@3"]
    page = report_tasks("# Rating\n", "# Context\n", tags=metrics)
    assert "## Tag recommendation" in page and "| tag popularity |" in page
    # a source without tags, and a split without cold items, say why instead of a number
    no_tags = shop.items.drop(columns=["tags", "category"])
    assert "skipped" in evaluate_tag_model(rec, no_tags, test, item_map, EvaluationConfig())
    warm_only = evaluate_tag_model(rec, shop.items, test.tail(1), item_map, EvaluationConfig())
    assert "no cold items" in tags_markdown(warm_only)
    assert "has not been trained" in tags_markdown(None)
