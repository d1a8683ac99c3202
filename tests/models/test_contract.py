"""The contract every registered family keeps (implicit's shared test mixin, as one parametrised
test module): shapes, a falling loss, seen items filtered, save/load, determinism, exact resume,
and quality floors on the synthetic shop whose structure is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recforge.data.filters import filter_interactions
from recforge.data.interactions import InteractionData
from recforge.data.splits import SplitConfig, split_interactions
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.encoders.ann import AnnConfig, recall_at_k
from recforge.evaluation.protocols import full_ranking
from recforge.features.tables import FieldTables, build_field_tables
from recforge.models.registry import FAMILIES
from recforge.pipelines.training.pipeline import CONTENT_TABLES, ITEM_VECTORS
from recforge.training.inputs import item_side
from recforge.training.recommender import Recommender, uses_ratings
from shop_content import content_tables

# Small, fast settings per family for the contract (the real ones live in conf/base).
FAST: dict[str, tuple[dict, dict]] = {
    "mf": ({"dim": 16, "l2": 0.01}, {"epochs": 25, "batch_size": 256, "lr": 0.01}),
    "bpr": ({"dim": 32}, {"epochs": 15, "batch_size": 512, "lr": 0.02}),
    "gmf": ({"dim": 16}, {"epochs": 8, "batch_size": 1024, "lr": 0.01}),
    "mlp": ({"dim": 16, "layers": [32, 16]}, {"epochs": 8, "batch_size": 1024, "lr": 0.01}),
    "neumf": ({"dim": 16, "mlp_dim": 16, "layers": [32, 16]}, {"epochs": 8, "batch_size": 1024, "lr": 0.01}),
    "youtube_candidates": ({"dim": 32, "embedding_dim": 32, "layers": [64], "max_history": 20},
                           {"epochs": 10, "batch_size": 256, "lr": 0.01}),
    "cdae": ({"hidden": 32}, {"epochs": 25, "batch_size": 64, "lr": 0.01}),
    "sdae": ({"hidden": [64, 32], "pretrain_epochs": 3}, {"epochs": 25, "batch_size": 64, "lr": 0.01}),
    "rbm": ({"hidden": 32}, {"epochs": 25, "batch_size": 64, "lr": 0.02}),
    "als": ({"factors": 16}, {"epochs": 6}),
    "lr": ({}, {"epochs": 10, "batch_size": 256, "lr": 0.01}),
    "fm": ({}, {"epochs": 10, "batch_size": 256, "lr": 0.01}),
    "nfm": ({"layers": [32]}, {"epochs": 10, "batch_size": 256, "lr": 0.01}),
    "wide_deep": ({"layers": [32]}, {"epochs": 10, "batch_size": 256, "lr": 0.01}),
    "deepfm": ({"layers": [32]}, {"epochs": 10, "batch_size": 256, "lr": 0.01}),
    "youtube_ranking": ({"dim": 16, "layers": [32]}, {"epochs": 8, "batch_size": 512, "lr": 0.01}),
    "deep_regression": ({}, {"epochs": 10, "batch_size": 256, "lr": 0.01}),
    "neural_mf_v1": ({"layers": [16]}, {"epochs": 10, "batch_size": 256, "lr": 0.01}),
    "neural_mf_v2": ({"layers": [16]}, {"epochs": 10, "batch_size": 256, "lr": 0.01}),
    "tag_attention_cnn": ({"embedding_dim": 16, "compressed_dim": 16, "global_filters": 16, "hidden": 32,
                           "n_buckets": 1024, "max_len": 40}, {"epochs": 4, "batch_size": 1024, "lr": 0.03}),
    # without trained als/bpr models (pretrain false) it fits its WMF targets itself (`fit_wmf`)
    "deep_content_audio": ({"factors": 16, "wmf_iterations": 6, "channels": [16, 16, 32], "hidden": 32,
                            "dropout": 0.0}, {"epochs": 25, "batch_size": 16, "lr": 0.003}),
    "content2vec": ({"module_dim": 16, "dim": 16, "residual_hidden": 16}, {"epochs": 8, "batch_size": 512, "lr": 0.01}),
    "text_cnn": ({"embedding_dim": 16, "n_filters": 16, "dim": 16, "max_len": 24, "history": 10},
                 {"epochs": 4, "batch_size": 512, "lr": 0.01}),
    "cdssm": ({"embedding_dim": 16, "conv_dim": 32, "dim": 16, "max_len": 24, "history": 5},
              {"epochs": 4, "batch_size": 512, "lr": 0.01}),
    "mv_dnn": ({"layers": [32, 16], "max_len": 24, "history": 10}, {"epochs": 4, "batch_size": 512, "lr": 0.01}),
}
# The shop's attributes as the field-aware families read them (conf/base/parameters_features.yml
# declares the same), with the user country x item brand cross for the wide part.
SHOP_FEATURES = {
    "user": {"fields": [
        {"name": "age_group", "kind": "categorical", "column": "age_group"},
        {"name": "country", "kind": "categorical", "column": "country"},
        {"name": "device", "kind": "categorical", "column": "device"},
    ]},
    "item": {"fields": [
        {"name": "category", "kind": "multi_hot", "column": "category", "sep": "/", "levels": "/", "max_len": 2},
        {"name": "brand", "kind": "categorical", "column": "brand"},
        {"name": "price", "kind": "numeric", "column": "price"},
    ]},
    "crosses": [{"name": "country_x_brand", "user": "country", "item": "brand", "buckets": 512}],
}
FIELD_FAMILIES = [f for f in FAMILIES if FAMILIES[f].fields is not None]
_TABLES: dict[str, FieldTables] = {}


_CONTENT: dict[str, object] = {}


def inputs(family: str) -> dict:
    """What `fit` takes besides the split, as the training pipeline would hand it: the shop's
    feature tables for field-aware families, content vectors for families reading vector tables,
    the items table's content for families with `item_content`."""
    if FAMILIES[family].fields is not None:
        return {"item_vectors": _TABLES["shop"]}
    return {"item_vectors": _CONTENT[family]} if _CONTENT.get(family) is not None else {}
TRAINABLE = [f for f in FAMILIES if FAMILIES[f].trainable]
# prod2vec_topk recommends the neighbours of the user's *last* item: its floor is next-item hit rate
# on ordered sessions (tests/encoders/test_behaviour.py), not this random-holdout NDCG.
RATING = [f for f in FAMILIES if uses_ratings(FAMILIES[f], FAMILIES[f].config.model_validate(FAST.get(f, ({}, {}))[0]))]
RANKING = [f for f in FAMILIES if f not in RATING and f not in ("random", "popularity", "prod2vec_topk")]


def assert_same_state(a: dict, b: dict) -> None:
    """Equal tensors, bit for bit, and equal extra state (a module's plain-container metadata)."""
    assert a.keys() == b.keys()
    tensors = [k for k in a if isinstance(a[k], torch.Tensor)]
    torch.testing.assert_close({k: a[k] for k in tensors}, {k: b[k] for k in tensors}, rtol=0, atol=0)
    assert {k: a[k] for k in a if k not in tensors} == {k: b[k] for k in b if k not in tensors}


def make(family: str, **train_overrides) -> Recommender:
    model, train = FAST.get(family, ({}, {}))
    return Recommender(family, model, {"device": "cpu", "seed": 3, **train, **train_overrides})


@pytest.fixture(scope="module")
def shop_splits():
    shop = generate_shop(ShopConfig(preset="tiny", n_users=300, n_items=150, n_sessions=2400, with_media=True))
    config = SplitConfig(strategy="random", valid_fraction=0.1, test_fraction=0.15, seed=0,
                         min_user_interactions=3, min_item_interactions=3)
    s = split_interactions(filter_interactions(shop.interactions, config), None, config)
    n_users, n_items = len(s.user_map), len(s.item_map)
    _TABLES["shop"] = build_field_tables(shop.users, shop.items, s.user_map.to_frame(), s.item_map.to_frame(),
                                         SHOP_FEATURES)  # fmt: skip
    # stand-ins for the content tables, the behaviour tables (prod2vec, meta_prod2vec) and
    # content2vec's output table
    tables = content_tables(shop, names=(*CONTENT_TABLES, "prod2vec", "meta_prod2vec", "content2vec"))
    datasets = {"items": shop.items, "media": shop.media,  # media: 0.1 s for 150 items
                "users": shop.users, "user_map": s.user_map.to_frame(), "impressions": shop.impressions}
    for name, fam in FAMILIES.items():
        config = fam.config.model_validate(FAST.get(name, ({}, {}))[0])
        if name in ITEM_VECTORS and set(ITEM_VECTORS[name]) <= set(tables):
            upstream = [tables[t] for t in ITEM_VECTORS[name]]
            if fam.item_content is not None:  # content and vectors (mv_dnn): the datasets follow
                upstream += [datasets[d] for d in fam.content_inputs]
            _CONTENT[name] = item_side(fam, config, upstream, s.item_map.to_frame(), ITEM_VECTORS[name])[0]
        elif fam.item_content is not None and set(fam.content_inputs) <= set(datasets):
            _CONTENT[name] = fam.item_content(*[datasets[d] for d in fam.content_inputs], s.item_map.to_frame())
    frames = {"train": s.train, "valid": s.valid, "test": s.test}
    data = {k: InteractionData.from_frame(v, n_users, n_items) for k, v in frames.items()}
    ratings = {k: InteractionData.from_frame(v, n_users, n_items, events=("rating",)) for k, v in frames.items()}
    return data, ratings


def train_data(family, rec, shop_splits):
    data, ratings = shop_splits
    return (ratings if rec.uses_ratings else data)["train"]


def fitted(family, shop_splits, **overrides) -> Recommender:
    data, _ = shop_splits
    rec = make(family, **overrides)
    rec.fit(train_data(family, rec, shop_splits), seen=data["train"].csr, **inputs(family))
    return rec


@pytest.fixture(scope="module")
def trained(shop_splits):
    cache: dict[str, Recommender] = {}

    def get(family: str) -> Recommender:
        if family not in cache:
            cache[family] = fitted(family, shop_splits)
        return cache[family]

    return get


def ndcg10(rec: Recommender, shop_splits) -> float:
    data, _ = shop_splits
    return full_ranking(rec.score_fn(), data["train"].csr, data["test"], ks=(10,))["ndcg@10"]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_output_shapes(family, trained, shop_splits):
    rec = trained(family)
    data, _ = shop_splits
    users = np.array([0, 1, 2, 5])
    scores = rec.score(users)
    assert scores.shape == (4, data["train"].n_items) and np.isfinite(scores).all()
    items = np.array([3, 4, 7, 9])
    pairs = rec.predict(users, items)
    assert pairs.shape == (4,)
    np.testing.assert_allclose(pairs, scores[np.arange(4), items], rtol=1e-4, atol=1e-5)
    top, top_scores = rec.recommend(users, k=7)
    assert top.shape == (4, 7) and top_scores.shape == (4, 7)
    assert (np.diff(top_scores, axis=1) <= 1e-6).all()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_recommendations_exclude_seen_items(family, trained, shop_splits):
    rec = trained(family)
    seen = shop_splits[0]["train"].csr
    users = np.arange(40)
    top, _ = rec.recommend(users, k=10, filter_already_liked_items=True)
    assert not seen.toarray()[users[:, None], top].any()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_an_ann_index_serves_the_same_lists(family, trained, shop_splits):
    """Factored families: retrieval_users @ retrieval_items.T is score_all, and recommend through a
    faiss flat index returns the dense path's lists (seen items skipped inside the search);
    an HNSW index finds almost all of them. Other families ignore the index. similar_items
    through HNSW agrees with the exact flat search."""
    rec = trained(family)
    net = rec.network
    users = np.arange(40)
    dense_top, dense_scores = rec.recommend(users, k=10)
    flat_top, flat_scores = rec.recommend(users, k=10, index=AnnConfig())
    if net.retrieval_items() is not None:
        u = torch.as_tensor(users)
        with torch.no_grad():
            factored = net.retrieval_users(u) @ net.retrieval_items().T
            full = net.score_all(u, rec.history_rows(users))
        torch.testing.assert_close(factored, full, rtol=1e-4, atol=1e-4)
        hnsw_top, _ = rec.recommend(users, k=10, index=AnnConfig(kind="hnsw"))
        assert recall_at_k(hnsw_top, dense_top) > 0.9
    np.testing.assert_allclose(flat_scores, dense_scores, rtol=1e-4, atol=1e-4)  # ties may swap items
    assert np.mean(flat_top == dense_top) > 0.95
    if net.item_embeddings() is not None:
        items = np.arange(30)
        exact, sims = rec.similar_items(items, k=5)
        assert not (exact == items[:, None]).any() and (np.diff(sims, axis=1) <= 1e-6).all()
        approx, _ = rec.similar_items(items, k=5, index=AnnConfig(kind="hnsw"))
        assert recall_at_k(approx, exact) > 0.9


@pytest.mark.parametrize("family", list(FAMILIES))
def test_unknown_user_or_item_is_a_clear_error(family, trained, shop_splits):
    rec = trained(family)
    n_users = shop_splits[0]["train"].n_users
    with pytest.raises(KeyError, match="unknown user index"):
        rec.recommend(np.array([n_users + 5]))
    with pytest.raises(KeyError, match="unknown item index"):
        rec.predict(np.array([0]), np.array([-1]))


@pytest.mark.parametrize("family", TRAINABLE)
def test_loss_falls(family, trained):
    losses = trained(family).history.loss
    assert len(losses) >= 2 and losses[-1] < losses[0]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_save_load_round_trip(family, trained, tmp_path):
    rec = trained(family)
    rec.save(tmp_path / family)
    loaded = Recommender.load(tmp_path / family)
    users = np.arange(10)
    np.testing.assert_allclose(loaded.score(users), rec.score(users), rtol=1e-5, atol=1e-6)
    assert loaded.config == rec.config and loaded.train_config == rec.train_config


@pytest.mark.parametrize("family", TRAINABLE)
def test_same_seed_same_metrics(family, trained, shop_splits):
    again = fitted(family, shop_splits)
    assert ndcg10(again, shop_splits) == ndcg10(trained(family), shop_splits)
    assert_same_state(again.network.state_dict(), trained(family).network.state_dict())


class _StopAfter:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if epoch == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.parametrize("family", TRAINABLE)
def test_interrupted_and_resumed_equals_uninterrupted(family, shop_splits, tmp_path):
    data, _ = shop_splits
    epochs = {"epochs": 3}
    whole = make(family, **epochs)
    whole.fit(train_data(family, whole, shop_splits), seen=data["train"].csr, **inputs(family))

    first = make(family, **epochs)
    with pytest.raises(KeyboardInterrupt):
        first.fit(train_data(family, first, shop_splits), seen=data["train"].csr,
                  callbacks=[_StopAfter(1)], checkpoint_dir=tmp_path, **inputs(family))
    resumed = make(family, **epochs)
    resumed.fit(train_data(family, resumed, shop_splits), seen=data["train"].csr, checkpoint_dir=tmp_path,
                **inputs(family))
    assert_same_state(resumed.network.state_dict(), whole.network.state_dict())


@pytest.mark.parametrize("family", RANKING)
def test_learned_families_beat_popularity(family, trained, shop_splits):
    assert ndcg10(trained(family), shop_splits) > ndcg10(trained("popularity"), shop_splits)


@pytest.mark.parametrize("family", RATING)
def test_explicit_families_beat_the_global_mean_rmse(family, trained, shop_splits):
    _, ratings = shop_splits
    test = ratings["test"]
    mean = ratings["train"].value.mean()
    baseline = float(np.sqrt(np.mean((test.value - mean) ** 2)))
    pred = trained(family).predict(test.user_idx, test.item_idx)
    rmse = float(np.sqrt(np.mean((test.value - pred) ** 2)))
    assert rmse < baseline


# Families without an item table of their own (counts, similarities): vectors have nothing to start.
NO_ITEM_TABLE = {"random", "popularity", "item_knn", "sknn", "cooccurrence"}
# Families whose item side is their own item_content object (text and tags), never a vector table.
TEXT_AND_TAGS_ONLY = {"tag_attention_cnn"}
SPECTROGRAMS_ONLY = {"deep_content_audio"}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_item_vectors_start_the_item_table_and_can_be_frozen(family, shop_splits):
    rec = make(family, epochs=1)
    train = train_data(family, rec, shop_splits)
    vectors = torch.randn(train.n_items, 8, generator=torch.Generator().manual_seed(0))
    fam = FAMILIES[family]
    if fam.fields is not None:
        # field-aware families read feature tables, not an item vector table: refused, named
        with pytest.raises(TypeError, match="FieldTables of the features pipeline"):
            fam.build(rec.config, train, vectors)
        return
    if family in TEXT_AND_TAGS_ONLY:
        # item text and tags are its whole item side: a vector table cannot stand in, refused, named
        with pytest.raises(TypeError, match="item_content"):
            fam.build(rec.config, train, vectors)
        return
    if family in SPECTROGRAMS_ONLY:
        # log-mel spectrograms (n_items, mels, frames) are its item side: a table is refused, named
        with pytest.raises(ValueError, match="log-mel spectrograms"):
            fam.build(rec.config, train, vectors)
        return

    def build(config, item_vectors):
        torch.manual_seed(rec.train_config.seed)  # as `fit` does before `build`
        return fam.build(config, train, item_vectors).state_dict()

    plain, warm = build(rec.config, None), build(rec.config, vectors)
    changed = [k for k, v in warm.items() if k not in plain or not torch.equal(v, plain[k])]
    if family in NO_ITEM_TABLE:
        assert not changed
        return
    assert changed, f"{family} ignored its item_vectors"
    if "freeze_item_vectors" not in type(rec.config).model_fields:
        return  # ALS's closed-form steps solve every factor: nothing to freeze
    config = rec.config.model_copy(update={"freeze_item_vectors": True})
    start = build(config, vectors)
    frozen = Recommender(family, config, rec.train_config)
    frozen.fit(train, item_vectors=vectors)
    after = frozen.network.state_dict()
    for key in changed:
        torch.testing.assert_close(after[key], start[key], rtol=0, atol=0, msg=f"{family}: {key} moved")
    assert any(not torch.equal(after[k], start[k]) for k in start if k not in changed and start[k].is_floating_point())


@pytest.mark.parametrize("family", list(FAMILIES))
def test_pair_scores_match_full_scores_and_each_user_is_scored_once(family, trained, shop_splits, monkeypatch):
    """Sampled ranking scores (user, item) pairs with many pairs per user: they must equal the
    full-ranking scores, and a network that scores whole rows must not build a row per pair
    (that took 7.7 GB for contextual_rnn on the default shop)."""
    rec = trained(family)
    users = torch.arange(6).repeat_interleave(50)  # (300,)
    items = torch.randint(0, rec._seen.shape[1], (300,), generator=torch.Generator().manual_seed(0))
    full = torch.as_tensor(rec.score(np.arange(6)))[users, items]
    rows_scored = []
    original = type(rec.network).score_all

    def counting(self, user, history):
        rows_scored.append(len(user))
        return original(self, user, history)

    monkeypatch.setattr(type(rec.network), "score_all", counting)
    pairs = rec.pair_score_fn()(users, items)
    torch.testing.assert_close(pairs, full, rtol=1e-4, atol=1e-4)
    assert sum(rows_scored) <= 6, rows_scored


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_next_item_flag_says_whether_the_network_scores_a_prefix(family, trained):
    """Tuning picks next_item_mrr@20 by default for `Family.next_item` families and refuses
    next-item metrics for the others: the flag must match what the network can do."""
    from recforge.evaluation.sessions import prefix_scorer
    from recforge.models.sequence.sequence import SequenceNetwork

    network = trained(family).network
    assert FAMILIES[family].next_item == isinstance(network, SequenceNetwork)
    if FAMILIES[family].next_item:
        assert prefix_scorer(network) is not None


def test_wide_deep_can_train_its_wide_part_with_adagrad(shop_splits):
    from recforge.training.loop import build_optimizers

    rec = Recommender("wide_deep", {"layers": [16], "wide_optimizer": "adagrad", "wide_lr_scale": 5.0},
                      {"epochs": 3, "batch_size": 256, "lr": 0.01, "device": "cpu", "seed": 0})  # fmt: skip
    data, _ = shop_splits
    rec.fit(data["train"], seen=data["train"].csr, **inputs("wide_deep"))
    opts = build_optimizers(rec.network, rec.train_config)
    kinds = [type(o).__name__ for o in opts]
    assert kinds == ["Adam", "Adagrad"]
    wide = {id(p) for p in opts[1].param_groups[0]["params"]}
    assert wide == {id(rec.network.core.weight.weight), id(rec.network.core.bias)}
    assert opts[1].param_groups[0]["lr"] == pytest.approx(0.05)
    assert rec.history.loss[-1] < rec.history.loss[0]


GRID_CASES = [(f, {}) for f in FIELD_FAMILIES] + [(f, {"layers": []}) for f in ("nfm", "wide_deep", "deepfm")]


@pytest.mark.parametrize(("family", "variant"), GRID_CASES)
def test_field_families_grid_scores_equal_row_by_row_scores(family, variant, shop_splits):
    """`score_all` of a core with `score_grid` (sums split over user, item and pair parts; every
    family but the two-tower and deep-regression ones) must equal scoring each assembled
    (user, item) row, with and without a tower."""
    fam = FAMILIES[family]
    data, _ = shop_splits
    config = fam.config.model_validate({**FAST.get(family, ({}, {}))[0], **variant})
    torch.manual_seed(0)
    net = fam.build(config, data["train"], _TABLES["shop"]).eval()
    with torch.no_grad():
        for p in net.parameters():  # away from the initial near-zero weights
            p.add_(torch.randn_like(p) * 0.1)
        users = torch.arange(7)
        full = net.score_all(users, None)  # (7, I)
        rows = net(users.repeat_interleave(net.n_items), torch.arange(net.n_items).repeat(7)).view(7, -1)
    torch.testing.assert_close(full, rows, rtol=1e-4, atol=1e-4)
