"""deep_content_audio (van den Oord et al. 2013): a CNN over log-mel spectrograms regressing CF
item factors, on the synthetic shop whose sounds are made from the items' hidden factors."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from recforge.data.interactions import InteractionData
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.models.base import ColdStartUnsupported
from recforge.models.content.deep_content_audio import item_content
from recforge.training.recommender import Recommender

SMALL = {"factors": 16, "wmf_iterations": 6, "channels": [16, 16, 32], "hidden": 32, "dropout": 0.0}
TRAIN = {"epochs": 25, "batch_size": 16, "lr": 0.003, "device": "cpu", "seed": 0}


def _maps(ids: pd.Series) -> pd.DataFrame:
    ids = pd.Series(sorted(ids.astype(str).unique()))
    return pd.DataFrame({"item_id": ids, "item_idx": range(len(ids))})


@pytest.fixture(scope="module")
def shop_warm_cold():
    """The shop with media, its items split into warm (trained on) and 25 % cold (never seen)."""
    shop = generate_shop(ShopConfig(preset="tiny", n_users=300, n_items=150, n_sessions=2400, seed=5))
    events = shop.interactions.astype({"user_id": str, "item_id": str})
    items = pd.Series(sorted(events["item_id"].unique()))
    cold = items.sample(frac=0.25, random_state=0)
    warm_events = events[~events["item_id"].isin(cold)]
    users = pd.DataFrame({"user_id": sorted(events["user_id"].unique())})
    users["user_idx"] = range(len(users))
    warm_map, cold_map = _maps(warm_events["item_id"]), _maps(cold)
    frame = warm_events.merge(users, on="user_id").merge(warm_map, on="item_id")
    train = InteractionData.from_frame(frame, len(users), len(warm_map), name="train")
    return shop, train, users, warm_map, cold_map, events


@pytest.fixture(scope="module")
def fitted(shop_warm_cold):
    shop, train, _, warm_map, _, _ = shop_warm_cold
    rec = Recommender("deep_content_audio", SMALL, TRAIN)
    rec.fit(train, item_vectors=item_content(shop.items, shop.media, warm_map))
    return rec


def _cold_auc(scores: np.ndarray, users: pd.DataFrame, cold_map: pd.DataFrame, events: pd.DataFrame) -> float:
    """Mean over users with a cold item of the AUC of their cold items among all cold items."""
    hits = events.merge(users, on="user_id").merge(cold_map, on="item_id")
    truth = np.zeros_like(scores, dtype=bool)
    truth[hits["user_idx"], hits["item_idx"]] = True
    aucs = []
    for u in np.flatnonzero(truth.any(1) & ~truth.all(1)):
        pos, neg = scores[u, truth[u]], scores[u, ~truth[u]]
        aucs.append((pos[:, None] > neg[None, :]).mean())
    return float(np.mean(aucs))


def test_the_regression_loss_falls_and_the_factors_come_from_wmf(fitted):
    losses = fitted.history.loss
    assert losses[-1] < 0.8 * losses[0]
    net = fitted.network  # no trained model given, pretrain false: `fit_wmf` fitted the targets
    assert net.factors_ready and net.user_factors.abs().sum() > 0 and net.item_factors.abs().sum() > 0


def test_cold_items_are_ranked_from_their_sound_better_than_random(fitted, shop_warm_cold):
    shop, _, users, _, cold_map, events = shop_warm_cold
    content = item_content(shop.items, shop.media, cold_map)  # (C, 40, 63)
    with torch.no_grad():
        scores = fitted.network.score_cold_items(torch.arange(len(users)), content).numpy()  # (U, C)
    assert scores.shape == (len(users), len(cold_map)) and np.isfinite(scores).all()
    auc = _cold_auc(scores, users, cold_map, events)
    rng = np.random.default_rng(0)
    chance = _cold_auc(rng.normal(size=scores.shape), users, cold_map, events)
    assert auc > 0.6 and auc > chance + 0.1, (auc, chance)


def test_a_saved_model_refuses_spectrograms_of_another_shape(fitted, shop_warm_cold, tmp_path):
    shop, _, users, _, cold_map, _ = shop_warm_cold
    fitted.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    content = item_content(shop.items, shop.media, cold_map)
    user = torch.arange(5)
    with torch.no_grad():
        torch.testing.assert_close(loaded.network.score_cold_items(user, content),
                                   fitted.network.score_cold_items(user, content))
        with pytest.raises(ValueError, match=r"\(C, 40, 63\) log-mel spectrograms"):
            loaded.network.score_cold_items(user, content[:, :, :30])
        with pytest.raises(ValueError, match="log-mel spectrograms"):
            loaded.network.score_cold_items(user, torch.randn(len(cold_map), 16))


def test_cold_users_are_folded_in_from_their_history(fitted):
    rows = fitted.history_rows(np.arange(40))  # their training histories, as fold-in
    with torch.no_grad():
        folded = fitted.network.score_cold_users(rows).numpy()
    scores = fitted.score(np.arange(40))
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(folded, scores, strict=True)]
    assert np.median(corr) > 0.8, corr


def test_unreadable_sounds_raise_or_take_the_mean_factor(shop_warm_cold, caplog):
    shop, train, _, warm_map, _, _ = shop_warm_cold
    media = dict(shop.media)
    broken = shop.items.set_index("item_id").loc[warm_map["item_id"].iloc[[3, 7]], "audio_path"]
    media[broken.iloc[0]] = b"not a wav"
    del media[broken.iloc[1]]
    with caplog.at_level(logging.WARNING):
        content = item_content(shop.items, media, warm_map)
    assert torch.isnan(content[[3, 7]]).all() and not torch.isnan(content[0]).any()
    assert "2 of" in caplog.text and warm_map["item_id"].iloc[3] in caplog.text
    with pytest.raises(ValueError, match=r"2 of \d+ training items have no readable sound \(item_idx 3, 7"):
        Recommender("deep_content_audio", SMALL, {**TRAIN, "epochs": 1}).fit(train, item_vectors=content)
    rec = Recommender("deep_content_audio", {**SMALL, "on_bad_media": "skip"}, {**TRAIN, "epochs": 1})
    rec.fit(train, item_vectors=content)
    predicted = rec.network.item_embeddings()
    torch.testing.assert_close(predicted[3], rec.network.item_factors.mean(0))
    torch.testing.assert_close(predicted[7], rec.network.item_factors.mean(0))


def test_without_any_sound_it_is_its_cf_model_and_cannot_score_cold_items(shop_warm_cold):
    shop, train, _, warm_map, _, _ = shop_warm_cold
    silent = shop.items.assign(audio_path=pd.NA)
    assert item_content(silent, {}, warm_map) is None
    rec = Recommender("deep_content_audio", SMALL, {**TRAIN, "epochs": 2})
    rec.fit(train)
    net = rec.network
    torch.testing.assert_close(torch.as_tensor(rec.score(np.arange(5))), net.user_factors[:5] @ net.item_factors.T)
    with pytest.raises(ColdStartUnsupported):
        net.score_cold_items(torch.arange(3), None)


@pytest.mark.parametrize("source", ["als", "bpr"])
def test_pretrain_regresses_the_trained_models_factors(shop_warm_cold, source):
    shop, train, _, warm_map, _, _ = shop_warm_cold
    models = {"als": Recommender("als", {"factors": 8}, {"epochs": 2, "device": "cpu"}),
              "bpr": Recommender("bpr", {"dim": 8}, {"epochs": 2, "device": "cpu"})}
    for cf in models.values():
        cf.fit(train)
    rec = Recommender("deep_content_audio", {**SMALL, "factors": 8, "pretrain": True, "factors_from": source},
                      {**TRAIN, "epochs": 1})
    rec.fit(train, item_vectors=item_content(shop.items, shop.media, warm_map), warm_start=models)
    net = rec.network
    # x_u · y_i is the CF model's score (BPR's item bias rides as a factor against a constant 1)
    torch.testing.assert_close(net.user_factors @ net.item_factors.T,
                               torch.as_tensor(models[source].score(np.arange(train.n_users))), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="does not match deep_content_audio's config"):
        Recommender("deep_content_audio", {**SMALL, "factors": 16, "pretrain": True, "factors_from": source},
                    {**TRAIN, "epochs": 1}).fit(train, warm_start=models)
    with pytest.raises(ValueError, match="pretrain=true: pass the trained als and bpr"):
        Recommender("deep_content_audio", {**SMALL, "pretrain": True}, TRAIN).fit(train)
