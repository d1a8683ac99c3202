"""Cold-start slices: cold items ranked among all items and among themselves, cold users by
fold-in, "–" (None) for a family that cannot score a slice, and on the synthetic shop content
families beating popularity and collaborative filtering on the items nobody has bought yet."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from shop_content import content_tables

from recforge.data.filters import filter_interactions
from recforge.data.interactions import InteractionData
from recforge.data.splits import SplitConfig, split_interactions
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.evaluation.cold_start import (
    cold_item_ranking,
    cold_items_of,
    cold_start_slices,
    cold_user_ranking,
    fold_in_users,
)
from recforge.evaluation.cold_start_report import cold_start_leaderboard, cold_start_markdown
from recforge.evaluation.report import EvaluationConfig
from recforge.models.base import ColdStartUnsupported
from recforge.models.registry import FAMILIES
from recforge.pipelines.evaluation.nodes import evaluate_model, report_cold_start_leaderboard, report_leaderboard
from recforge.pipelines.training.nodes import fit_recommender
from recforge.pipelines.training.pipeline import ITEM_VECTORS
from recforge.training.recommender import Recommender

EVALUATION = EvaluationConfig(n_negatives=20)
D2, D3 = 1 / math.log2(3), 1 / math.log2(4)  # DCG of a hit at rank 2, 3


# ------------------------------------------------------------------ hand-built examples
def _frame(rows: list[tuple[str, int, str, int, int]]) -> pd.DataFrame:
    """A test split frame from (user_id, user_idx, item_id, item_idx, timestamp)."""
    f = pd.DataFrame(rows, columns=["user_id", "user_idx", "item_id", "item_idx", "timestamp"])
    return f.assign(value=1.0, event="view")


def _train(pairs: list[tuple[int, int]], n_users: int, n_items: int) -> InteractionData:
    u, i = map(np.array, zip(*pairs, strict=True))
    frame = pd.DataFrame({"user_idx": u, "item_idx": i, "value": 1.0, "timestamp": 0})
    return InteractionData.from_frame(frame, n_users, n_items)


def test_cold_items_are_ranked_among_all_items_and_among_themselves():
    # 2 known users, 3 training items; test: u0 a cold item ca and a warm item i2, u1 a cold item
    # cb, and a cold user on ca (in neither cold-item slice: the user is unknown)
    train = _train([(0, 0), (1, 1)], n_users=2, n_items=3)
    test = _frame([("u0", 0, "ca", -1, 10), ("u0", 0, "i2", 2, 11), ("u1", 1, "cb", -1, 12),
                   ("new", -1, "ca", -1, 13)])  # fmt: skip
    assert list(cold_items_of(test)["item_id"]) == ["ca", "cb"]
    warm = torch.tensor([[5.0, 1.0, 3.0], [0.0, 9.0, 2.0]])  # (users, items)
    cold = torch.tensor([[4.0, 6.0], [0.5, 1.0]])  # (users, [ca, cb])
    seen_users = []

    def cold_fn(user):
        seen_users.append(user.tolist())
        return cold[user]

    out = cold_item_ranking(lambda u, h: warm[u], cold_fn, train, test, ks=(1, 3))
    assert seen_users == [[0, 1]]  # the known users with a cold test item, once
    # all items, training items masked: u0 ranks cb, ca, i2, i1 (ca 2nd; her warm test item i2 is
    # no target); u1 ranks i2, cb, ca, i0 (cb 2nd)
    a = out["all_items"]
    assert a["n_users"] == 2 and a["hr@1"] == 0.0 and a["hr@3"] == 1.0
    assert a["ndcg@3"] == pytest.approx(D2) and a["recall@3"] == 1.0
    # cold only: u0 ranks cb, ca (2nd); u1 ranks cb, ca (1st)
    c = out["cold_only"]
    assert c["n_users"] == 2 and c["hr@1"] == 0.5
    assert c["ndcg@3"] == pytest.approx((D2 + 1.0) / 2)
    assert set(a) == {"ndcg@1", "ndcg@3", "recall@1", "recall@3", "hr@1", "hr@3", "n_users"}


def test_a_constant_cold_scorer_gets_chance_not_the_first_listed_item():
    # 200 users, 20 cold items, every user's target the first cold item listed: a scorer with
    # equal scores for all cold items must not be handed it by the listing order
    n_users, n_cold = 200, 20
    train = _train([(u, 0) for u in range(n_users)], n_users=n_users, n_items=2)
    rows = [(f"u{u}", u, "c0", -1, 0) for u in range(n_users)]
    rows += [("late", -1, f"c{j}", -1, 1 + j) for j in range(n_cold)]  # lists every cold item
    out = cold_item_ranking(lambda u, h: torch.zeros(len(u), 2), lambda u: torch.zeros(len(u), n_cold),
                            train, _frame(rows), ks=(1,))  # fmt: skip
    assert out["cold_only"]["hr@1"] < 0.15  # chance is 1/20


def test_cold_users_fold_in_their_first_rows_and_predict_the_rest():
    # n1: i0, i1 | i0, i2 (half her 4 known-item rows; her cold-item row ca is left out; i0 again
    # is no target); n2: one row, nothing left to predict; n3: i1 | i2, rows out of time order
    test = _frame([
        ("n1", -1, "i0", 0, 10), ("n1", -1, "i1", 1, 20), ("n1", -1, "ca", -1, 25), ("n1", -1, "i0", 0, 30),
        ("n2", -1, "i1", 1, 35), ("n1", -1, "i2", 2, 40), ("n3", -1, "i2", 2, 100), ("n3", -1, "i1", 1, 50),
        ("k", 0, "i1", 1, 60),  # a known user: not a cold user
    ])  # fmt: skip
    folded = fold_in_users(test, n_items=3, fold_in=0.5)
    assert list(folded.user_ids) == ["n1", "n3"]
    assert (folded.n_cold_users, folded.without_targets) == (3, 1)
    np.testing.assert_array_equal(folded.history.toarray(), [[1, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(folded.targets.toarray(), [[0, 0, 1], [0, 0, 1]])

    histories = []

    def cold_user_fn(history):
        histories.append(history.clone())
        return torch.tensor([3.0, 2.0, 1.0]).expand(len(history), -1)

    out = cold_user_ranking(cold_user_fn, test, n_items=3, ks=(1, 2), fold_in=0.5)
    np.testing.assert_array_equal(histories[0].numpy(), [[1, 1, 0], [0, 1, 0]])
    # n1: i0, i1 masked, i2 first; n3: i1 masked, i0 then i2
    assert out["n_users"] == 2 and out["hr@1"] == 0.5
    assert out["ndcg@2"] == pytest.approx((1.0 + D2) / 2)
    assert (out["n_cold_users"], out["cold_users_without_targets"]) == (3, 1)


def test_a_model_that_cannot_is_none_never_zero():
    train = _train([(0, 0), (1, 1)], n_users=2, n_items=3)
    test = _frame([("u0", 0, "ca", -1, 10), ("n1", -1, "i0", 0, 11), ("n1", -1, "i2", 2, 12)])

    def refuse(*args):
        raise ColdStartUnsupported("this model cannot")

    out = cold_start_slices(lambda u, h: torch.zeros(len(u), 3), refuse, refuse, train, test, ks=(1,))
    assert out["cold_items_all"] is None and out["cold_items_only"] is None and out["cold_users"] is None
    assert out["unsupported"] == {"cold_items": "this model cannot", "cold_users": "this model cannot"}
    assert (out["n_cold_items"], out["n_cold_users"]) == (1, 1)  # the sizes do not depend on the model


def test_the_markdown_writes_a_dash_for_a_slice_a_family_cannot_score():
    def metrics(items: float | None, users: float | None) -> dict:
        slice_ = lambda v: None if v is None else {"ndcg@10": v, "recall@10": v, "n_users": 7}  # noqa: E731
        return {"cold_start": {"warm": {"ndcg@10": 0.3, "n_users": 9}, "cold_items_all": slice_(items),
                               "cold_items_only": slice_(items), "cold_users": slice_(users),
                               "n_cold_items": 4, "n_cold_users": 8, "cold_users_without_targets": 1,
                               "cold_items_without_content": None}}  # fmt: skip

    board, md = report_cold_start_leaderboard(EvaluationConfig(), vbpr=metrics(0.2, None), bpr=metrics(None, None),
                                              popularity=metrics(0.0, 0.1), stale=None)  # fmt: skip
    assert list(board["family"]) == ["vbpr", "popularity", "bpr"]
    assert "| vbpr | 0.3000 | 0.2000 | 0.2000 | – |" in md
    assert "| bpr | 0.3000 | – | – | – |" in md
    assert "| popularity | 0.3000 | 0.0000 | 0.0000 | 0.1000 |" in md  # a real zero stays a zero
    assert "cold items 7 (over 4 cold items)" in md and "cold users 7 (of 8; 1 left nothing to predict" in md
    # the main leaderboard page gets the section, the DVC metrics file the numbers (None left out)
    full = {"full": {"ndcg@10": 0.3}}
    _, page, _, flat = report_leaderboard(EvaluationConfig(), vbpr=full | metrics(0.2, None),
                                          bpr=full | metrics(None, None))  # fmt: skip
    assert "## Cold start" in page and "| bpr | 0.3000 | – | – | – |" in page
    assert flat["vbpr"]["cold_items_ndcg@10"] == 0.2 and flat["vbpr"]["cold_items_only_recall@10"] == 0.2
    assert not any(k.startswith("cold_") for k in flat["bpr"])
    assert "cold_users_ndcg@10" not in flat["vbpr"]


# ------------------------------------------------------------------ the synthetic shop
# Every content family, with small settings for the headline test (one thread: a parallel CPU
# reduction sums in a varying order, and these margins are measured, so the runs must repeat).
CONTENT_FAMILIES: dict[str, tuple[dict, dict]] = {
    "vbpr": ({"dim": 16, "visual_dim": 16, "vectors": ["image", "text"]},
             {"epochs": 15, "batch_size": 512, "lr": 0.02}),
    "hybrid": ({"dim": 16, "vectors": ["image", "text"]}, {"epochs": 15, "batch_size": 512, "lr": 0.02}),
    "content2vec": ({"vectors": ["image", "text", "prod2vec", "meta_prod2vec"]},
                    {"epochs": 6, "batch_size": 512, "lr": 0.01}),
    "text_cnn": ({}, {"epochs": 8, "batch_size": 512, "lr": 0.01}),
    "cdssm": ({}, {"epochs": 8, "batch_size": 512, "lr": 0.003}),
    "mv_dnn": ({}, {"epochs": 8, "batch_size": 512, "lr": 0.01}),
    "tag_attention_cnn": ({"embedding_dim": 16, "compressed_dim": 16, "global_filters": 16, "hidden": 32,
                           "n_buckets": 1024}, {"epochs": 6, "batch_size": 512, "lr": 0.01}),
    "deep_content_audio": ({"pretrain": True, "factors": 16, "channels": [16, 16, 32], "hidden": 32},
                           {"epochs": 15, "batch_size": 64, "lr": 0.001}),
}
BASELINES: dict[str, tuple[dict, dict]] = {
    "popularity": ({}, {}),
    "random": ({}, {}),
    "bpr": ({"dim": 32}, {"epochs": 15, "batch_size": 512, "lr": 0.02}),
    "als": ({"factors": 16}, {"epochs": 6}),  # deep_content_audio regresses its factors
}


@pytest.fixture(scope="module")
def shop_split():
    """A 600-user shop split in time: ~4.9k test rows, 24 items released after the cut (211 known
    users buy them) and 54 users who signed up after it."""
    shop = generate_shop(ShopConfig(preset="tiny", n_users=600, n_items=300, n_sessions=5000, with_media=False))
    config = SplitConfig(strategy="temporal", valid_fraction=0.1, test_fraction=0.15,
                         min_user_interactions=1, min_item_interactions=1)  # fmt: skip
    s = split_interactions(filter_interactions(shop.interactions, config), None, config)
    return shop, s


_MEDIA: dict[str, object] = {}


def item_side(family: str, shop) -> list:
    """The datasets the pipelines hand `family` as its item side, in order: vector-table
    stand-ins for ITEM_VECTORS families, the shop's items table (and media) for item_content ones."""
    fam = FAMILIES[family]
    vectors = []
    if family in ITEM_VECTORS:
        tables = content_tables(shop, names=ITEM_VECTORS[family])
        vectors = [tables[name] for name in ITEM_VECTORS[family]]
    if fam.item_content is None:
        return vectors
    if "media" in fam.content_inputs:
        if "media" not in _MEDIA:  # the same shop with its photos and sounds (same interactions)
            with_media = generate_shop(ShopConfig(preset="tiny", n_users=600, n_items=300, n_sessions=5000))
            _MEDIA.update(media=with_media.media, items=with_media.items)
        return vectors + [_MEDIA[name] for name in fam.content_inputs]
    return vectors + [{"items": shop.items}[name] for name in fam.content_inputs]


_FITTED: dict[str, Recommender] = {}


def fitted(family: str, shop_split) -> Recommender:
    if family not in _FITTED:
        shop, s = shop_split
        model, train = {**BASELINES, **CONTENT_FAMILIES}[family]
        models = [fitted(name, shop_split) for name in FAMILIES[family].warm_start_from]  # as the pipeline orders them
        _FITTED[family] = fit_recommender(family, model, {**train, "device": "cpu", "seed": 3, "num_threads": 1}, s.train, s.valid,
                                          s.user_map.to_frame(), s.item_map.to_frame(),
                                          [*item_side(family, shop), *models], ITEM_VECTORS.get(family, ()))  # fmt: skip
    return _FITTED[family]


def cold_start(family: str, shop_split) -> dict:
    shop, s = shop_split
    rec = fitted(family, shop_split)
    out = evaluate_model(rec, s.train, s.test, s.user_map.to_frame(), s.item_map.to_frame(), EVALUATION,
                         *item_side(family, shop))  # fmt: skip
    return out["cold_start"]


@pytest.mark.slow
@pytest.mark.parametrize("family", list(CONTENT_FAMILIES))
def test_content_families_beat_popularity_and_cf_on_cold_items(family, shop_split):
    """The shop's content tables carry its hidden item factors, so a content family ranks the
    items released after the cut for the users who buy them; popularity can only put them last
    and BPR cannot score them at all. Measured NDCG@10 over all items / over the cold items only:
    vbpr 0.111 / 0.425, hybrid 0.227 / 0.430, content2vec 0.096 / 0.426, text_cnn 0.100 / 0.404,
    cdssm 0.093 / 0.411, mv_dnn 0.172 / 0.418, tag_attention_cnn 0.093 / 0.407,
    deep_content_audio 0.094 / 0.390; popularity 0.000 / 0.225, random 0.026 / 0.228 (chance
    among 24 items)."""
    content = cold_start(family, shop_split)
    pop, rnd, bpr = (cold_start(f, shop_split) for f in ("popularity", "random", "bpr"))
    assert content["n_cold_items"] == 24 and content["cold_items_all"]["n_users"] > 200
    assert content["cold_items_without_content"] == 0
    ndcg = {name: {kind: m[f"cold_items_{kind}"]["ndcg@10"] for kind in ("all", "only")}
            for name, m in (("content", content), ("popularity", pop), ("random", rnd))}  # fmt: skip
    # popularity scores a cold item as a zero count: last, behind every item sold once
    assert ndcg["popularity"]["all"] < 0.01
    assert ndcg["content"]["all"] > ndcg["popularity"]["all"] + 0.05
    assert ndcg["content"]["all"] > 2 * ndcg["random"]["all"]
    assert ndcg["content"]["only"] > max(ndcg["popularity"]["only"], ndcg["random"]["only"]) + 0.1
    # CF says it cannot: None, never a zero
    assert bpr["cold_items_all"] is None and bpr["cold_items_only"] is None
    assert "cannot score items unseen" in bpr["unsupported"]["cold_items"]
    board = cold_start_leaderboard({family: {"cold_start": content}, "bpr": {"cold_start": bpr}})
    assert "| bpr | " in (md := cold_start_markdown(board)) and md.split("| bpr | ")[1].count("–") >= 2


# which slices each family scores: (cold items, cold users)
SUPPORT = {
    "popularity": (True, True), "random": (True, True), "item_knn": (False, True), "cdae": (False, True),
    "sdae": (False, True), "rbm": (False, True), "bpr": (False, False), "vbpr": (True, False),
}  # fmt: skip
QUICK = {"cdae": {"hidden": 16}, "sdae": {"hidden": [16], "pretrain_epochs": 1}, "rbm": {"hidden": 16},
         "bpr": {"dim": 8}, "vbpr": {"dim": 8, "visual_dim": 8}}  # fmt: skip


@pytest.mark.parametrize("family", list(SUPPORT))
def test_which_families_score_which_slices(family, shop_split):
    """Histories alone score a cold user in neighbourhood and auto-encoder families (the same
    scores as `score_all` for a user without user parameters); popularity and random score
    everything; a factor model without content scores neither."""
    shop, s = shop_split
    rec = fit_recommender(family, QUICK.get(family, {}), {"epochs": 1, "batch_size": 512, "device": "cpu"},
                          s.train, s.valid, s.user_map.to_frame(), s.item_map.to_frame(),
                          item_side(family, shop), ITEM_VECTORS.get(family, ()))  # fmt: skip
    out = evaluate_model(rec, s.train, s.test, s.user_map.to_frame(), s.item_map.to_frame(), EVALUATION,
                         *item_side(family, shop))["cold_start"]  # fmt: skip
    items, users = SUPPORT[family]
    assert (out["cold_items_all"] is not None, out["cold_users"] is not None) == (items, users)
    assert (out["cold_items_only"] is not None) == items
    assert set(out["unsupported"]) == {k for k, ok in (("cold_items", items), ("cold_users", users)) if not ok}
    assert out["warm"]["n_users"] > 0
    net, history, user = rec.network, torch.zeros(4, rec.network.n_items), torch.zeros(4, dtype=torch.long)
    history[:, :3] = 1.0
    if family == "cdae":  # a user node of zeros is what a user unseen in training has
        torch.nn.init.zeros_(net.user.weight)
    if users and family != "random":
        torch.testing.assert_close(net.score_cold_users(history), net.score_all(user, history))


def test_cold_items_missing_from_the_vector_tables_get_the_mean_and_are_counted(shop_split, caplog):
    shop, s = shop_split
    rec = fitted("vbpr", shop_split)
    cold = set(cold_items_of(s.test)["item_id"])
    tables = [t[~t["item_id"].isin(cold)] for t in item_side("vbpr", shop)]
    out = evaluate_model(rec, s.train, s.test, s.user_map.to_frame(), s.item_map.to_frame(), EVALUATION, *tables)
    cs = out["cold_start"]
    # the documented fallback: every cold item gets the tables' mean vector, so they still rank
    # (all alike: chance among themselves), and the count says so
    assert cs["cold_items_without_content"] == cs["n_cold_items"] == 24
    assert cs["cold_items_all"] is not None and cs["cold_items_only"]["ndcg@10"] < 0.35
    assert "24 of 24 cold test items have no content of their own" in caplog.text


def test_vectors_of_another_dimension_for_a_saved_model_are_a_clear_error(shop_split, tmp_path):
    shop, s = shop_split
    fitted("vbpr", shop_split).save(tmp_path / "vbpr")
    loaded = Recommender.load(tmp_path / "vbpr")
    tables = [t[["item_id", *[f"v{j}" for j in range(8)]]] for t in item_side("vbpr", shop)]  # 8 of 16 columns
    with pytest.raises(ValueError, match=r"vbpr: the cold test items' content from the \['image', 'text', 'audio', 'content2vec'\] "
                                         r"vector tables does not fit the trained model.*16-d.*retrain"):  # fmt: skip
        evaluate_model(loaded, s.train, s.test, s.user_map.to_frame(), s.item_map.to_frame(), EVALUATION, *tables)


def test_without_its_item_side_a_content_family_is_not_evaluated_on_cold_items(shop_split):
    # a caller outside the pipeline (bench, the tuned pipeline) that hands no item side
    shop, s = shop_split
    out = evaluate_model(fitted("vbpr", shop_split), s.train, s.test, s.user_map.to_frame(), s.item_map.to_frame(),
                         EVALUATION)["cold_start"]  # fmt: skip
    assert out["cold_items_all"] is None and "not evaluated" in out["unsupported"]["cold_items"]
    with pytest.raises(ValueError, match="expected 4"):
        evaluate_model(fitted("vbpr", shop_split), s.train, s.test, s.user_map.to_frame(), s.item_map.to_frame(),
                       EVALUATION, *item_side("vbpr", shop)[:1])  # fmt: skip
