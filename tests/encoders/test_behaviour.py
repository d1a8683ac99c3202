"""Behaviour encoders (prod2vec, meta-prod2vec, user2vec), the torch skip-gram engine, the
vector-table helpers and the `prod2vec_topk` family, on the synthetic shop whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from sklearn.linear_model import Ridge
from sklearn.model_selection import cross_val_score

from recforge.data.interactions import InteractionData
from recforge.data.splits import SplitConfig, split_interactions
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.encoders.ann import nearest_neighbours
from recforge.encoders.diagnostics import (
    DiagnosticsConfig,
    category_purity,
    neighbour_purity,
    projection_figure,
    sample_neighbours,
)
from recforge.encoders.meta_prod2vec import MetaProd2VecConfig, fit_meta_prod2vec, item_metadata, meta_examples
from recforge.encoders.prod2vec import Prod2VecConfig, fit_prod2vec
from recforge.encoders.sequences import (
    SequenceConfig,
    build_corpus,
    keep_probabilities,
    last_items,
    window_bags,
    window_pairs,
)
from recforge.encoders.user2vec import User2VecConfig, fit_user2vec
from recforge.encoders.vectors import align_item_vectors, table_vectors, vector_table
from recforge.encoders.word2vec import (
    SkipGram,
    Word2VecConfig,
    epoch_batches,
    fused_sgd_step,
    noise_distribution,
    row_scales,
    sgns_loss,
)
from recforge.evaluation.protocols import full_ranking
from recforge.training.config import TrainConfig
from recforge.training.recommender import Recommender

DIM = 24
TRAIN = TrainConfig(epochs=8, batch_size=2048, lr=0.025, lr_schedule="cosine", device="cpu", seed=0)
SMALL = {"dim": DIM, "negative_group": 256, "workers": 2}



@pytest.fixture(scope="module")
def shop():
    return generate_shop(ShopConfig(preset="tiny", n_users=300, n_items=200, n_sessions=3000, with_media=False))


@pytest.fixture(scope="module")
def split(shop):
    return split_interactions(shop.interactions, None, SplitConfig(strategy="temporal"))


@pytest.fixture(scope="module")
def train(split) -> InteractionData:
    return InteractionData.from_frame(split.train, len(split.user_map), len(split.item_map), name="train")


@pytest.fixture(scope="module")
def corpus(train):
    return build_corpus(train, SequenceConfig())


@pytest.fixture(scope="module")
def tables(shop, split, train, corpus) -> dict[str, pd.DataFrame]:
    """One item vector table per encoder (trained once for the module)."""
    ids = split.item_map.ids
    meta, names = item_metadata(shop.items, ids, ("category", "brand"))
    user_corpus = build_corpus(train, SequenceConfig(by="user", min_length=1))
    results = {
        "prod2vec": fit_prod2vec(corpus, Prod2VecConfig(**SMALL), TRAIN),
        "prod2vec_gensim": fit_prod2vec(corpus, Prod2VecConfig(engine="gensim", dim=DIM, workers=1), TRAIN),
        "meta_prod2vec": fit_meta_prod2vec(corpus, meta, len(names), MetaProd2VecConfig(**SMALL), TRAIN),
        "user2vec": fit_user2vec(user_corpus, User2VecConfig(**SMALL), TRAIN),
    }
    out = {name: vector_table(ids[r.index], r.vectors) for name, r in results.items()}
    users = results["user2vec"].users
    out["user2vec_users"] = vector_table(split.user_map.ids[users.index], users.vectors, id_column="user_id")
    return out


def _data(user, item, ts, n_users, n_items, session=None) -> InteractionData:
    n = len(user)
    return InteractionData(
        user_idx=np.asarray(user, np.int64), item_idx=np.asarray(item, np.int64),
        value=np.ones(n, np.float32), timestamp=np.asarray(ts, np.int64), n_users=n_users, n_items=n_items,
        session=None if session is None else np.asarray(session, np.int64),
    )


# ---------------------------------------------------------------- sequences
def test_corpus_orders_by_time_collapses_repeats_and_drops_short_sequences():
    # user 0: session 0 = items 3, 3, 1 (out of row order), session 1 = item 2 alone; user 1: 4, 5
    data = _data([0, 0, 0, 0, 1, 1], [1, 3, 3, 2, 5, 4], [30, 10, 20, 40, 6, 5], 2, 6, session=[0, 0, 0, 1, 2, 2])
    corpus = build_corpus(data, SequenceConfig(by="session", min_length=2))
    assert corpus.tokens.tolist() == [3, 1, 4, 5]
    assert corpus.sequence.tolist() == [0, 0, 1, 1]
    assert corpus.owner.tolist() == [0, 1]
    by_user = build_corpus(data, SequenceConfig(by="user", collapse_repeats=False, min_length=1))
    assert by_user.tokens.tolist() == [3, 3, 1, 2, 4, 5]
    assert last_items(data, 2).tolist() == [[2, 1], [5, 4]]


def test_window_pairs_stay_in_their_sequence_and_window():
    sequence = torch.tensor([0] * 6 + [1] * 4 + [2])
    g = torch.Generator().manual_seed(0)
    center, context = window_pairs(sequence, 3, g)
    assert len(center) and (sequence[center] == sequence[context]).all()
    d = (center - context).abs()
    assert ((d >= 1) & (d <= 3)).all()
    one_c, one_x = window_pairs(sequence, 1, g)  # window 1: exactly the adjacent pairs, both ways
    assert sorted(zip(one_c.tolist(), one_x.tolist())) == sorted(
        [(i, i + 1) for i in (0, 1, 2, 3, 4, 6, 7, 8)] + [(i + 1, i) for i in (0, 1, 2, 3, 4, 6, 7, 8)]
    )
    # dynamic windows: distance 1 is sampled more often than distance 3
    many = torch.zeros(2000, dtype=torch.long)
    c, x = window_pairs(many, 3, g)
    counts = torch.bincount((c - x).abs(), minlength=4)
    assert counts[1] > counts[2] > counts[3] > 0
    center, bag, mask = window_bags(sequence, 2, g)
    assert 10 not in center.tolist()  # the single-token sequence has no context
    assert (sequence[bag][mask] == sequence[center][:, None].expand_as(bag)[mask]).all()


def test_subsampling_keeps_rare_items_and_thins_frequent_ones():
    counts = np.array([1.0, 10.0, 10_000.0, 0.0])
    p = keep_probabilities(counts, 1e-3)
    assert p[0] == p[1] == p[3] == 1.0 and 0 < p[2] < 0.5
    threshold = 1e-3 * counts.sum()
    assert p[2] == pytest.approx((np.sqrt(counts[2] / threshold) + 1) * threshold / counts[2])
    assert (keep_probabilities(counts, 0.0) == 1.0).all()


# ---------------------------------------------------------------- the engine
@pytest.mark.parametrize("bag", [False, True])
def test_fused_step_is_plain_sgd_on_the_sgns_loss(bag):
    """The hand-written update equals -lr * the autograd gradient of the summed, weighted loss."""
    g = torch.Generator().manual_seed(1)
    net = SkipGram(30, 30, 8, seed=3)
    with torch.no_grad():
        net.output.weight.normal_(0, 0.3, generator=g)
        net.input.weight.normal_(0, 0.3, generator=g)
    batch = {"target": torch.randint(30, (12,), generator=g), "negative": torch.randint(30, (3, 4), generator=g),
             "weight": torch.rand(12, generator=g), "lr": torch.tensor(0.1)}
    if bag:
        batch["bag"] = torch.randint(30, (12, 4), generator=g)
        batch["bag_mask"] = torch.rand(12, 4, generator=g) > 0.3
        batch["bag_mask"][:, 0] = True
    else:
        batch["input"] = torch.randint(30, (12,), generator=g)
    ref = SkipGram(30, 30, 8)
    ref.load_state_dict(net.state_dict())
    h = ref.hidden(batch).detach().requires_grad_(True)  # (B, D) leaf: its gradient is the error
    o, q = ref.output(batch["target"]), ref.output(batch["negative"])  # (B, D), (G, N, D)
    neg = torch.bmm(h.view(3, 4, 8), q.transpose(1, 2)).reshape(12, 4)
    total = sgns_loss((h * o).sum(-1), neg, 5, batch["weight"]) * batch["weight"].sum()
    total.backward()
    fused_sgd_step(net, batch, negative=5)
    if bag:
        # word2vec's CBOW hands every context word the whole hidden-layer error
        mask = batch["bag_mask"]
        step = -0.1 * h.grad[:, None, :].expand(-1, 4, -1)[mask]
        expected_in = ref.input.weight.detach().index_add(0, batch["bag"][mask], step)
    else:
        expected_in = ref.input.weight.detach().index_add(0, batch["input"], -0.1 * h.grad)
    torch.testing.assert_close(net.output.weight, ref.output.weight.detach() - 0.1 * ref.output.weight.grad)
    torch.testing.assert_close(net.input.weight, expected_in)


def test_batches_pad_whole_negative_groups_and_decay_the_learning_rate():
    examples = {"target": torch.arange(1000), "input": torch.arange(1000)}
    noise = noise_distribution(np.ones(1000))
    config = Word2VecConfig(negative_group=64, shared_negatives=8, min_batches=1)
    batches = epoch_batches(examples, noise, 256, config, torch.Generator().manual_seed(0), lr=(0.02, 0.01))
    weights = [b.get("weight", torch.ones(len(b["target"]))) for b in batches]
    assert sum(int((w > 0).sum()) for w in weights) == 1000
    assert all("weight" not in b for b in batches[:-1])  # only the padded last batch is weighted
    assert all(len(b["target"]) % 64 == 0 and b["negative"].shape == (len(b["target"]) // 64, 8) for b in batches)
    lrs = [float(b["lr"]) for b in batches]
    assert lrs[0] == pytest.approx(0.02) and lrs == sorted(lrs, reverse=True) and lrs[-1] > 0.01
    seen = torch.cat([b["target"][w > 0] for b, w in zip(batches, weights)])
    assert sorted(seen.tolist()) == list(range(1000))


def test_row_cap_bounds_the_summed_update_of_a_frequent_row():
    batch = {"target": torch.tensor([1, 1, 1, 1, 2, 3]), "input": torch.zeros(6, dtype=torch.long),
             "negative": torch.tensor([[6, 7]]), "lr": torch.tensor(0.1)}
    scaled = row_scales(batch, 8, 8, cap=2)
    assert scaled["input_scale"].tolist() == pytest.approx([2 / 6] * 6)
    assert scaled["target_scale"].tolist() == pytest.approx([0.5] * 4 + [1.0, 1.0])
    bag = {**batch, "bag": torch.tensor([[0, 4]] * 6), "bag_mask": torch.tensor([[True, False]] * 5 + [[False, True]])}
    bag.pop("input")
    assert row_scales(bag, 8, 8, cap=2)["input_scale"].tolist() == pytest.approx([0.4] * 5 + [1.0])
    # the step moves a capped row by at most `cap` examples' worth
    net = SkipGram(8, 8, 4, seed=0)
    with torch.no_grad():
        net.output.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    before = net.input.weight[0].clone()
    fused_sgd_step(net, batch, negative=2, row_cap=2)
    capped = (net.input.weight[0] - before).norm()
    net2 = SkipGram(8, 8, 4, seed=0)
    with torch.no_grad():
        net2.output.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    fused_sgd_step(net2, batch, negative=2)
    torch.testing.assert_close(capped, (net2.input.weight[0] - before).norm() * 2 / 6)


def test_training_is_deterministic_by_seed_and_worker_count(corpus):
    cfg = TRAIN.model_copy(update={"epochs": 2})
    a = fit_prod2vec(corpus, Prod2VecConfig(**SMALL), cfg).vectors
    b = fit_prod2vec(corpus, Prod2VecConfig(**{**SMALL, "workers": 1}), cfg).vectors
    c = fit_prod2vec(corpus, Prod2VecConfig(**SMALL), cfg.model_copy(update={"seed": 1})).vectors
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(a, c)


def test_autograd_update_through_the_loop_optimiser_also_learns(corpus, shop, split):
    config = Prod2VecConfig(**{**SMALL, "update": "optimizer"})
    result = fit_prod2vec(corpus, config, TRAIN.model_copy(update={"optimizer": "sparse_adam", "lr": 0.01}))
    purity = category_purity(vector_table(split.item_map.ids[result.index], result.vectors), shop.items,
                             DiagnosticsConfig())
    assert purity["category"]["purity"] > 3 * purity["category"]["chance"]


# ---------------------------------------------------------------- the tables
def test_tables_have_the_vector_table_layout(tables, split, train):
    for name, table in tables.items():
        id_column = "user_id" if name.endswith("_users") else "item_id"
        assert list(table.columns) == [id_column] + [f"v{j}" for j in range(DIM)]
        assert table[id_column].is_unique and (table.dtypes.iloc[1:] == np.float32).all()
    assert set(tables["prod2vec"]["item_id"]) <= set(split.item_map.ids)
    assert len(tables["user2vec_users"]) == len(np.unique(train.user_idx))


@pytest.mark.parametrize("name", ["prod2vec", "prod2vec_gensim", "meta_prod2vec", "user2vec"])
def test_neighbours_share_the_category_far_above_chance(tables, shop, name):
    purity = category_purity(tables[name], shop.items, DiagnosticsConfig())
    assert purity["category"]["purity"] > 4 * purity["category"]["chance"]
    assert purity["top_category"]["purity"] > 0.6 > 2 * purity["top_category"]["chance"]


@pytest.mark.parametrize("name", ["prod2vec", "prod2vec_gensim", "meta_prod2vec", "user2vec"])
def test_linear_probe_recovers_hidden_item_factors(tables, shop, name):
    ids, vectors = table_vectors(tables[name])
    truth = shop.ground_truth_items.set_index(shop.ground_truth_items["item_id"].astype(str))
    factors = truth.loc[ids.astype(str), [f"f{k}" for k in range(8)]].to_numpy()
    noise = np.random.default_rng(0).standard_normal(vectors.shape)

    def r2(x: np.ndarray) -> float:
        return float(np.mean([cross_val_score(Ridge(alpha=1.0), x, factors[:, k], cv=5).mean() for k in range(8)]))

    assert r2(vectors) > 0.3 > r2(noise) + 0.3


def test_meta_prod2vec_pairs_carry_all_five_terms(shop, split, corpus):
    meta, names = item_metadata(shop.items, split.item_map.ids, ("category", "brand"))
    assert meta.shape == (len(split.item_map), 2) and (meta >= 0).all() and meta.max() == len(names) - 1
    assert any(n.startswith("category=") for n in names) and any(n.startswith("brand=") for n in names)
    config = MetaProd2VecConfig(meta_weight=0.25, window=2, sample=0.0)  # no subsampling: exact counts
    ex = meta_examples(corpus, meta, config)(torch.Generator().manual_seed(0))
    n_items = corpus.n_items
    item_in, item_out = ex["input"] < n_items, ex["target"] < n_items
    w = ex["weight"]
    assert torch.all(w[item_in & item_out] == 1.0)  # L_{J|I}
    for term in (item_in & ~item_out, ~item_in & item_out, ~item_in & ~item_out):  # M|I, J|M + I|M, M|M
        assert term.any() and torch.all(w[term] == 0.25)
    # L_{M|M}: with two fields, four metadata pairs per item pair
    assert int((~item_in & ~item_out).sum()) == 4 * int((item_in & item_out).sum())


def test_user_vectors_group_users_by_taste(tables, shop):
    ids, vectors = table_vectors(tables["user2vec_users"], "user_id")
    truth = shop.ground_truth_users.set_index(shop.ground_truth_users["user_id"].astype(str))
    favourite = truth.loc[ids.astype(str), "favourite_top"].to_numpy(dtype=object)
    idx, _ = nearest_neighbours(vectors, 10, method="flat")
    purity, chance = neighbour_purity(idx, favourite)
    assert purity > 1.5 * chance


def test_user2vec_pv_dm_trains_users_and_items(train, shop, split):
    corpus = build_corpus(train, SequenceConfig(by="user", min_length=1))
    result = fit_user2vec(corpus, User2VecConfig(**SMALL, mode="dm"), TRAIN)
    assert result.users.vectors.shape == (len(np.unique(train.user_idx)), DIM)
    purity = category_purity(vector_table(split.item_map.ids[result.index], result.vectors), shop.items,
                             DiagnosticsConfig())
    assert purity["category"]["purity"] > 3 * purity["category"]["chance"]


# ---------------------------------------------------------------- diagnostics, alignment
def test_diagnostics_report_neighbours_purity_and_projection(tables, shop):
    config = DiagnosticsConfig(sample_items=3, neighbours=4, max_points=50)
    nb = sample_neighbours(tables["prod2vec"], shop.items, config)
    assert len(nb) == 12 and (nb["item_id"] != nb["neighbour_id"]).all()
    assert nb["title"].notna().all() and nb["neighbour_category"].notna().all()
    assert nb.groupby("item_id")["cosine"].apply(lambda s: s.is_monotonic_decreasing).all()
    fig = projection_figure(tables["prod2vec"], shop.items, config)
    labels = {t.get_text() for t in fig.axes[0].get_legend().get_texts()}
    assert isinstance(fig, Figure) and labels <= set(shop.ground_truth_items["top_category"]) and len(labels) > 3
    tsne = projection_figure(tables["prod2vec"], shop.items, config.model_copy(update={"projection": "tsne"}))
    assert isinstance(tsne, Figure)


def test_purity_against_chance_on_a_hand_made_example():
    labels = np.array(["a", "a", "b", "b", None], dtype=object)
    neighbours = np.array([[1, 2], [0, 4], [3, 0], [2, 1], [0, 1]])
    purity, chance = neighbour_purity(neighbours, labels)
    assert purity == pytest.approx(np.mean([0.5, 0.5, 0.5, 0.5]))
    assert chance == pytest.approx(1 / 3)


def test_align_item_vectors_follows_the_item_map_and_fills_missing_with_the_mean(caplog):
    table = vector_table(["i2", "i0", "zz"], np.array([[2.0, 2.0], [0.0, 0.0], [9.0, 9.0]]))
    item_map = pd.DataFrame({"item_id": ["i0", "i1", "i2"], "item_idx": [0, 1, 2]})
    with caplog.at_level("INFO"):
        out = align_item_vectors(table, item_map)
    assert out.tolist() == [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]
    assert "1 of 3 items have no vector" in caplog.text
    as_list = pd.DataFrame({"item_id": ["i2", "i0", "zz"], "vector": [[2.0, 2.0], [0.0, 0.0], [9.0, 9.0]]})
    assert torch.equal(align_item_vectors(as_list, item_map), out)


def test_a_family_initialised_from_item_vectors_trains(tables, split, train):
    vectors = align_item_vectors(tables["prod2vec"], split.item_map.to_frame())
    assert vectors.shape == (train.n_items, DIM)
    config = {"epochs": 3, "batch_size": 512, "lr": 0.01, "device": "cpu", "seed": 0}
    rec = Recommender("bpr", {"dim": DIM}, config)
    rec.fit(train, item_vectors=vectors)
    assert rec.history.loss[-1] < rec.history.loss[0]
    frozen = Recommender("bpr", {"dim": DIM, "freeze_item_vectors": True}, config)
    frozen.fit(train, item_vectors=vectors)
    start = torch.nn.functional.cosine_similarity(frozen.network.item.weight[:1], frozen.network.item.weight)
    expected = torch.nn.functional.cosine_similarity(vectors[:1] - vectors.mean(0), vectors - vectors.mean(0))
    torch.testing.assert_close(start, expected, atol=1e-4, rtol=1e-4)  # still the pretrained geometry


# ---------------------------------------------------------------- prod2vec_topk
@pytest.fixture(scope="module")
def next_item(shop):
    """Each user's last new item held out; sessions in time order (the shop's successor chains)."""
    split = split_interactions(
        shop.interactions, None, SplitConfig(strategy="leave_last_out", dedupe=True, valid_fraction=0.0)
    )
    n_users, n_items = len(split.user_map), len(split.item_map)
    return (InteractionData.from_frame(split.train, n_users, n_items),
            InteractionData.from_frame(split.test, n_users, n_items))


def test_prod2vec_topk_beats_popularity_on_next_item_hit_rate(next_item):
    train, test = next_item
    popularity = Recommender("popularity")
    popularity.fit(train)
    rec = Recommender("prod2vec_topk", {"dim": DIM, "negative_group": 256},
                      {"epochs": 10, "batch_size": 2048, "lr": 0.01, "device": "cpu", "seed": 0})
    rec.fit(train)
    hr_pop = full_ranking(popularity._score_fn(), train, test, ks=(10,))["hr@10"]
    hr = full_ranking(rec._score_fn(), train, test, ks=(10,))["hr@10"]
    assert hr > 1.5 * hr_pop
    # the user's last item drives the scores: itself first, then its most similar item
    users = np.arange(5)
    top, _ = rec.recommend(users, k=2, filter_already_liked_items=False)
    last = rec.network.last_items[torch.as_tensor(users), 0].numpy()
    similar, _ = rec.similar_items(last, k=1)
    assert np.array_equal(top[:, 0], last) and np.array_equal(top[:, 1], similar[:, 0])
    # forward and score_all agree; an HNSW index scores (almost) the same top-10
    u = torch.arange(20)
    scores = rec.network.score_all(u, torch.zeros(20, train.n_items))
    items = torch.randint(train.n_items, (20,))
    torch.testing.assert_close(rec.network(u, items), scores[u, items])
    rec.network.config = rec.network.config.model_copy(update={"index": "hnsw", "candidates": 50})
    approx = rec.network.score_all(u, torch.zeros(20, train.n_items)).topk(10).indices
    overlap = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.tolist(), scores.topk(10).indices.tolist())])
    assert overlap > 0.8


def test_prod2vec_topk_saves_and_loads_without_pickle(next_item, tmp_path):
    train, _ = next_item
    rec = Recommender("prod2vec_topk", {"dim": 8, "negative_group": 128, "last_items": 2, "recency_decay": 0.5},
                      {"epochs": 1, "batch_size": 512, "lr": 0.01, "device": "cpu"})
    rec.fit(train)
    rec.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.score(np.arange(10)), rec.score(np.arange(10)), rtol=1e-6)
