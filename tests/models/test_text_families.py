"""The text families (text_cnn, cdssm, mv_dnn) beyond the contract: exact word hashing, the
C-DSSM loss by hand, cold items and cold users ranked from their text on the synthetic shop,
bad content refused by name, and a saved model that keeps its text."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from recforge.data.errors import DataError
from recforge.data.interactions import InteractionData
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.encoders.text import letter_trigrams
from recforge.models.content import cdssm, mv_dnn, text_cnn
from recforge.models.base import ColdStartUnsupported
from recforge.models.content.text_towers import cosine_softmax, fold_in_items, item_content, recent_items
from recforge.training.recommender import Recommender

FAMILIES = ("text_cnn", "cdssm", "mv_dnn")
SETTINGS = {
    "text_cnn": ({}, {"epochs": 6, "batch_size": 512, "lr": 0.005}),
    "cdssm": ({"embedding_dim": 32, "conv_dim": 64, "dim": 32}, {"epochs": 6, "batch_size": 512, "lr": 0.005}),
    "mv_dnn": ({}, {"epochs": 6, "batch_size": 512, "lr": 0.005}),
}


def catalogue(texts: dict[str, tuple[str, str, str]]) -> pd.DataFrame:
    """An items table of (title, text, category) per item id."""
    return pd.DataFrame([{"item_id": k, "title": t, "text": x, "category": c} for k, (t, x, c) in texts.items()])


def item_map(ids) -> pd.DataFrame:
    return pd.DataFrame({"item_id": list(ids), "item_idx": range(len(ids))})


def interactions(pairs: list[tuple[int, int]], n_users: int, n_items: int) -> InteractionData:
    """(user, item) rows in time order."""
    u, i = (np.array(x, dtype=np.int64) for x in zip(*pairs))
    return InteractionData(user_idx=u, item_idx=i, value=np.ones(len(u), np.float32),
                           timestamp=np.arange(len(u), dtype=np.int64), n_users=n_users, n_items=n_items)  # fmt: skip


# ----------------------------------------------------------------------------- hashing
def test_letter_trigrams_are_hashed_exactly_into_the_buckets():
    assert letter_trigrams("good") == ["#go", "goo", "ood", "od#"]
    buckets = 97
    expected = [1 + zlib.crc32(g.encode()) % (buckets - 1) for g in ("#go", "goo", "ood", "od#")]
    items = catalogue({"a": ("good", "", "x"), "b": ("bad", "", "y")})
    content = item_content(items, item_map(["a", "b"]))
    train = interactions([(0, 0), (0, 1)], 1, 2)
    for family, config in (
        (text_cnn, text_cnn.TextCNNConfig(tokens="trigrams", trigram_buckets=buckets)),
        (mv_dnn, mv_dnn.MVDNNConfig(trigram_buckets=buckets)),
        (cdssm, cdssm.CDSSMConfig(trigram_buckets=buckets)),
    ):
        net = family.build(config, train, content)
        positions, words = (net.positions, net.words) if family is text_cnn else (
            (net.text_positions, net.text_words) if family is mv_dnn else (net.doc_positions, net.doc_words))
        good = words[positions[0, 0]]  # the first word of item "a"
        assert good.tolist() == expected + [0] * (len(good) - 4), family.__name__
        assert (positions[0, 1:] == len(words) - 1).all()  # the rest is padding


def test_an_unseen_word_shares_trigrams_in_trigram_mode_and_is_unknown_in_word_mode():
    items = catalogue({"a": ("wireless headphones", "", "x")})
    content = item_content(items, item_map(["a"]))
    cold = item_content(catalogue({"c": ("wireles headphone", "", "x")}), item_map(["c"]))
    train = interactions([(0, 0)], 1, 1)
    words = text_cnn.build(text_cnn.TextCNNConfig(tokens="words"), train, content)
    pos, table = words.tokenizer(text_cnn.content_documents(cold, ("title", "text")))
    assert table[pos[0, :2]].tolist() == [1, 1]  # both are <unk>
    grams = text_cnn.build(text_cnn.TextCNNConfig(tokens="trigrams"), train, content)
    seen_pos, seen_table = grams.positions, grams.words
    pos, table = grams.tokenizer(text_cnn.content_documents(cold, ("title", "text")))
    shared = set(table[pos[0, 0]].tolist()) & set(seen_table[seen_pos[0, 0]].tolist()) - {0}
    assert len(shared) == len(set(letter_trigrams("wireles")) & set(letter_trigrams("wireless"))) == 6


# ----------------------------------------------------------------------------- users' items
def test_recent_items_are_the_last_distinct_ones_in_time_order():
    train = interactions([(0, 1), (0, 2), (0, 1), (0, 3), (1, 4)], 2, 5)
    assert recent_items(train, 2).tolist() == [[1, 3], [-1, 4]]  # item 1 counts at its repeat
    assert recent_items(train, 4).tolist() == [[-1, 2, 1, 3], [-1, -1, -1, 4]]
    history = torch.tensor([[0.0, 2.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert fold_in_items(history, 3).tolist() == [[1, 3, -1], [-1, -1, -1]]


# ----------------------------------------------------------------------------- C-DSSM's loss
def test_cosine_softmax_is_the_smoothed_posterior_of_the_clicked_document():
    got = cosine_softmax(torch.tensor([0.5]), torch.tensor([[0.1, -0.2]]), gamma=10.0)
    # -log(e^5 / (e^5 + e^1 + e^-2)) = log(1 + e^-4 + e^-7)
    assert got.item() == pytest.approx(math.log(1 + math.exp(-4) + math.exp(-7)), rel=1e-5)


def test_cdssm_loss_equals_the_posterior_computed_by_hand():
    items = catalogue({"a": ("red shoe", "", "x"), "b": ("blue hat", "", "x"), "c": ("red hat", "", "x")})
    content = item_content(items, item_map("abc"))
    train = interactions([(0, 0), (0, 2)], 1, 3)  # the user's history: a, then c
    config = cdssm.CDSSMConfig(history=2, trigram_buckets=64, embedding_dim=4, conv_dim=5, dim=3, gamma=7.0)
    torch.manual_seed(0)
    net = cdssm.build(config, train, content)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(std=0.4)
        for t in (net.query_tower, net.doc_tower):
            t.embedding.weight[0] = 0.0  # the padding trigram, as nn.Embedding(padding_idx=0) keeps it

    def pooled(words: list[str], t: cdssm.ConvTower) -> torch.Tensor:
        """max_t tanh(W_c [l_{t-1}; l_t; l_{t+1}] + b_c), l = the sum of the word's trigram rows."""
        from recforge.encoders.text import trigram_ids

        l = [t.embedding.weight[trigram_ids(w, 64, 20)].sum(0) for w in words]
        l = [torch.zeros(4), *l, torch.zeros(4)]  # the convolution's zero padding
        w = t.conv.weight  # (K, E, 3)
        h = [torch.tanh(sum(w[:, :, k] @ l[c + k] for k in range(3)) + t.conv.bias) for c in range(len(words))]
        return torch.stack(h).amax(0)

    def semantic(v: torch.Tensor, t: cdssm.ConvTower) -> torch.Tensor:
        return torch.tanh(t.semantic.weight @ v + t.semantic.bias)

    titles = {0: ["red", "shoe"], 1: ["blue", "hat"], 2: ["red", "hat"]}
    docs = [semantic(pooled(titles[i], net.doc_tower), net.doc_tower) for i in range(3)]
    # the target c is left out of the query: Q = the title of a; D+ = c, D- = b
    q = semantic(pooled(titles[0], net.query_tower), net.query_tower)
    r_pos, r_neg = F.cosine_similarity(q, docs[2], dim=0), F.cosine_similarity(q, docs[1], dim=0)
    expected = -torch.log(torch.exp(7 * r_pos) / (torch.exp(7 * r_pos) + torch.exp(7 * r_neg)))
    batch = {"user": torch.tensor([0]), "item": torch.tensor([2]), "negative": torch.tensor([[1]])}
    with torch.no_grad():
        assert cdssm.FAMILY.loss(net, batch, config).item() == pytest.approx(expected.item(), rel=1e-5)
        # scoring reads the whole history: the max over the windows of both titles
        q = semantic(torch.maximum(pooled(titles[0], net.query_tower), pooled(titles[2], net.query_tower)),
                     net.query_tower)  # fmt: skip
        expected = torch.stack([F.cosine_similarity(q, d, dim=0) for d in docs])
        torch.testing.assert_close(net.eval().score_all(torch.tensor([0]), None)[0], expected)


# ----------------------------------------------------------------------------- the shop
@pytest.fixture(scope="module")
def shop_cold():
    """The tiny shop with 30 items and 30 users held out of training entirely."""
    shop = generate_shop(ShopConfig(preset="tiny", n_users=300, n_items=150, n_sessions=2400, with_media=False))
    inter = shop.interactions
    rng = np.random.default_rng(0)
    cold_items = rng.choice(np.sort(inter["item_id"].unique()), 30, replace=False)
    cold_users = rng.choice(np.sort(inter["user_id"].unique()), 30, replace=False)
    warm = inter[~inter["item_id"].isin(cold_items) & ~inter["user_id"].isin(cold_users)]
    users, items = np.sort(warm["user_id"].unique()), np.sort(warm["item_id"].unique())
    frame = warm.assign(user_idx=np.searchsorted(users, warm["user_id"]), item_idx=np.searchsorted(items, warm["item_id"]))
    train = InteractionData.from_frame(frame, len(users), len(items))
    return {"shop": shop, "train": train, "users": users, "items": items, "cold_items": cold_items,
            "cold_users": cold_users, "item_map": item_map(items), "cold_map": item_map(cold_items)}  # fmt: skip


@pytest.fixture(scope="module")
def trained(shop_cold):
    cache: dict[str, Recommender] = {}

    def get(family: str) -> Recommender:
        if family not in cache:
            model, train = SETTINGS[family]
            rec = Recommender(family, model, {"device": "cpu", "seed": 0, "num_threads": 1, **train})
            content = item_content(shop_cold["shop"].items, shop_cold["item_map"])
            rec.fit(shop_cold["train"], item_vectors=content)
            cache[family] = rec
        return cache[family]

    return get


def mean_auc(scores: np.ndarray, positive: np.ndarray, candidates: np.ndarray | None = None) -> float:
    """Mean over rows with a positive and a negative of the AUC of `scores` (B, C) for the
    boolean `positive` (B, C) among `candidates` (B, C) (default: all)."""
    candidates = np.ones_like(positive) if candidates is None else candidates
    aucs = []
    for s, p, c in zip(scores, positive, candidates):
        pos, neg = s[p & c], s[~p & c]
        if len(pos) and len(neg):
            aucs.append((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
    assert len(aucs) >= 20, len(aucs)
    return float(np.mean(aucs))


@pytest.mark.parametrize("family", FAMILIES)
def test_cold_items_scored_from_their_text_rank_the_users_items_first(family, trained, shop_cold):
    rec = trained(family)
    inter, cold = shop_cold["shop"].interactions, shop_cold["cold_items"]
    users = shop_cold["users"]
    hits = inter[inter["item_id"].isin(cold) & inter["user_id"].isin(users)]
    positive = np.zeros((len(users), len(cold)), dtype=bool)
    positive[np.searchsorted(users, hits["user_id"]), pd.Index(cold).get_indexer(hits["item_id"])] = True
    content = item_content(shop_cold["shop"].items, shop_cold["cold_map"])
    with torch.no_grad():
        scores = rec.network.score_cold_items(torch.arange(len(users)), content).numpy()  # (U, 30)
    assert scores.shape == (len(users), len(cold)) and np.isfinite(scores).all()
    # each user's own cold items against the other cold items: random ranks at 0.5
    assert mean_auc(scores, positive) > 0.65


@pytest.mark.parametrize("family", FAMILIES)
def test_cold_item_scores_are_on_the_scale_of_score_all(family, trained, shop_cold):
    """Scored as if cold, the training items get exactly their `score_all` scores, so cold and
    warm items can be ranked together."""
    rec = trained(family)
    content = item_content(shop_cold["shop"].items, shop_cold["item_map"])
    users = torch.arange(8)
    with torch.no_grad():
        torch.testing.assert_close(rec.network.score_cold_items(users, content),
                                   rec.network.score_all(users, None), rtol=1e-4, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES)
def test_cold_users_are_scored_from_a_fold_in_history(family, trained, shop_cold):
    rec = trained(family)
    inter, items = shop_cold["shop"].interactions, shop_cold["items"]
    rows = inter[inter["user_id"].isin(shop_cold["cold_users"]) & inter["item_id"].isin(items)].sort_values("timestamp")
    history, later = np.zeros((30, len(items)), np.float32), np.zeros((30, len(items)), bool)
    for k, (_, g) in enumerate(rows.groupby("user_id")):
        idx = np.searchsorted(items, g["item_id"].to_numpy())
        half = len(idx) // 2
        history[k, idx[:half]] = 1.0
        later[k, idx[half:]] = True
    with torch.no_grad():
        scores = rec.network.score_cold_users(torch.from_numpy(history)).numpy()  # (30, I)
    # the items they went on to use, among those not in the fold-in history
    assert mean_auc(scores, later, history == 0) > 0.62


def test_text_cnn_without_history_has_no_cold_users_but_scores_cold_items(shop_cold):
    rec = Recommender("text_cnn", {"history": 0}, {"epochs": 1, "batch_size": 1024, "device": "cpu", "num_threads": 1})
    rec.fit(shop_cold["train"], item_vectors=item_content(shop_cold["shop"].items, shop_cold["item_map"]))
    with pytest.raises(ColdStartUnsupported, match="history: 0"):
        rec.network.score_cold_users(torch.zeros(2, shop_cold["train"].n_items))
    content = item_content(shop_cold["shop"].items, shop_cold["cold_map"])
    assert rec.network.score_cold_items(torch.arange(3), content).shape == (3, 30)


# ----------------------------------------------------------------------------- bad input
def test_missing_text_is_a_data_error_naming_the_table_column_and_rows():
    items = catalogue({"a": ("good", "text", "x"), "b": ("bad", "text", "y")})
    with pytest.raises(DataError, match=r"'items'.*'text'"):
        item_content(items.drop(columns="text"), item_map(["a", "b"]))
    with pytest.raises(DataError, match=r"'items'.*'item_id'.*no row.*\[rows: zz\]"):
        item_content(items, item_map(["a", "zz"]))


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_content_is_refused_by_name(family, shop_cold):
    module = {"text_cnn": text_cnn, "cdssm": cdssm, "mv_dnn": mv_dnn}[family]
    train = shop_cold["train"]
    config = module.FAMILY.config()
    content = item_content(shop_cold["shop"].items, shop_cold["item_map"])
    with pytest.raises(ValueError, match=f"{family}: item content has 5 rows for {train.n_items} items"):
        module.build(config, train, content[:5])
    with pytest.raises(ValueError, match=f"{family}: item content must be the \\(n, 3, width\\) uint8"):
        module.build(config, train, content[:, :2])
    net = module.build(config, train, content).eval()
    with pytest.raises(ValueError, match=f"{family}: cold item content must be .* got \\(4, 16\\) torch.float32"):
        net.score_cold_items(torch.arange(2), torch.zeros(4, 16))
    # trained without text (no content, or vectors that start an id table): no cold items
    for vectors in (None, torch.randn(train.n_items, 8)):
        plain = module.build(config, train, vectors)
        with pytest.raises(ColdStartUnsupported, match="without item text"):
            plain.score_cold_items(torch.arange(2), content[:4])


# ----------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("family", FAMILIES)
def test_a_saved_model_keeps_its_text_and_scores_cold_items_after_load(family, trained, shop_cold, tmp_path):
    rec = trained(family)
    rec.save(tmp_path / family)
    loaded = Recommender.load(tmp_path / family)
    torch.testing.assert_close(loaded.network.content, rec.network.content, rtol=0, atol=0)
    users = np.arange(12)
    np.testing.assert_allclose(loaded.score(users), rec.score(users), rtol=1e-5, atol=1e-6)
    content = item_content(shop_cold["shop"].items, shop_cold["cold_map"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.network.score_cold_items(torch.as_tensor(users), content),
                                   rec.network.score_cold_items(torch.as_tensor(users), content))  # fmt: skip


# ----------------------------------------------------------------------------- mv_dnn's vector view
def test_mv_dnn_reads_content_vectors_as_a_view_and_keeps_them_through_save_and_load(tmp_path, caplog):
    from recforge.models.base import ContentAndVectors
    from recforge.pipelines.training.pipeline import upstream_inputs

    # the pipeline hands it the content tables, then the items table
    assert upstream_inputs("mv_dnn") == ["image.vectors", "text.vectors", "audio.vectors", "items"]
    items = catalogue({f"i{k}": (f"title {k}", f"words of item {k}", f"dept{k % 2}") for k in range(6)})
    content = item_content(items, item_map(items["item_id"]))
    vectors = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    train = interactions([(u, (u + k) % 6) for u in range(4) for k in range(3)], 4, 6)
    config = {"layers": [16, 8], "history": 3}
    config["views"] = ["text", "category", "vectors"]
    rec = Recommender("mv_dnn", config, {"epochs": 2, "batch_size": 4, "device": "cpu", "seed": 0})
    rec.fit(train, item_vectors=ContentAndVectors(content, vectors))
    net = rec.network
    assert net.views == ("text", "category", "vectors")
    with torch.no_grad():
        before = net.score_all(torch.arange(4), None)
        net.content_vectors.add_(1.0)  # the view is read: moving the vectors moves the scores
        assert not torch.allclose(before, net.score_all(torch.arange(4), None))
        net.content_vectors.sub_(1.0)
        cold = ContentAndVectors(content[:2], vectors[:2])
        torch.testing.assert_close(net.score_cold_items(torch.arange(4), cold), before[:, :2])  # one scale
        with pytest.raises(ValueError, match="cold items have 3-d content vectors, the model was trained on 5-d"):
            net.score_cold_items(torch.arange(4), ContentAndVectors(content[:2], vectors[:2, :3]))
    rec.save(tmp_path / "m")
    back = Recommender.load(tmp_path / "m")
    torch.testing.assert_close(back.network.content_vectors, net.content_vectors)
    # a source without those tables: the view is left out, said in the log
    with caplog.at_level("WARNING"):
        plain = Recommender("mv_dnn", config, {"epochs": 1, "batch_size": 4, "device": "cpu", "seed": 0})
        plain.fit(train, item_vectors=ContentAndVectors(content, None))
    assert plain.network.views == ("text", "category") and "'vectors' view is left out" in caplog.text
