"""The synthetic shop's impression log: shape, calendar, and the signals it is built to carry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.evaluation.metrics import auc

CONFIG = ShopConfig(preset="tiny", with_media=False, impression_rows=40_000)


@pytest.fixture(scope="module")
def shop():
    return generate_shop(CONFIG)


def test_columns_dtypes_and_order(shop):
    imp = shop.impressions
    assert list(imp.columns) == ["user_id", "item_id", "timestamp", "list_id", "position", "page", "device", "label"]
    assert imp["timestamp"].dtype == np.int64 and imp["position"].dtype == np.int16 and imp["label"].dtype == np.int8
    assert set(imp["label"].unique()) == {0, 1}
    assert len(imp) == 40_000 and (imp.groupby("list_id").size() == CONFIG.list_length).all()
    key = imp[["timestamp", "list_id", "position"]].to_numpy()
    assert (np.diff(key[:, 0]) >= 0).all()
    assert set(imp["user_id"].astype(str)) <= set(shop.users["user_id"]) and set(imp["item_id"].astype(str)) <= set(shop.items["item_id"])
    assert len(shop.ground_truth_impressions) == len(imp)


def test_same_seed_same_log_and_the_log_leaves_the_other_tables_unchanged(shop):
    again = generate_shop(CONFIG)
    pd.testing.assert_frame_equal(again.impressions, shop.impressions)
    without = generate_shop(CONFIG.model_copy(update={"impression_rows": 0}))
    pd.testing.assert_frame_equal(without.interactions, shop.interactions)
    pd.testing.assert_frame_equal(without.items, shop.items)
    pd.testing.assert_frame_equal(without.users, shop.users)
    assert len(without.impressions) == 0


def test_no_impression_before_the_items_release_or_the_users_signup(shop):
    imp = shop.impressions
    release = shop.ground_truth_items.set_index("item_id")["release_ts"]
    signup = shop.ground_truth_users.set_index("user_id")["signup_ts"]
    assert (imp["timestamp"].to_numpy() >= release.loc[imp["item_id"].astype(str)].to_numpy()).all()
    assert (imp["timestamp"].to_numpy() >= signup.loc[imp["user_id"].astype(str)].to_numpy()).all()


def test_click_rate_position_bias_and_labels_follow_the_true_probability(shop):
    imp = shop.impressions
    assert 0.03 < imp["label"].mean() < 0.15
    by_position = imp.groupby("position")["label"].mean()
    assert by_position.iloc[0] > by_position.iloc[-1] * 1.3
    p = shop.ground_truth_impressions["p_click"].to_numpy()
    y = imp["label"].to_numpy()
    assert auc(p[y == 1], p[y == 0]) > 0.7


def test_context_and_attributes_carry_signal_that_ids_do_not():
    """Logistic regression on ids only against ids + context x department + attributes, on
    held-out later impressions: the context and attribute effects are there by construction."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import OneHotEncoder

    shop = generate_shop(ShopConfig(preset="tiny", with_media=False, impression_rows=60_000))
    imp = shop.impressions
    items = shop.items.set_index("item_id")
    users = shop.users.set_index("user_id")
    dept = items.loc[imp["item_id"].astype(str), "category"].str.split("/").str[0].to_numpy()
    band = ((imp["timestamp"] // 3600) % 24 // 6).astype(str).to_numpy()
    age = users.loc[imp["user_id"].astype(str), "age_group"].to_numpy()
    ids = np.c_[imp["user_id"].astype(str), imp["item_id"].astype(str)]
    ctx = np.c_[ids, imp["page"].astype(str), imp["position"].astype(str),
                np.char.add(band.astype(str), dept.astype(str)),
                np.char.add(imp["device"].astype(str).to_numpy().astype(str), dept.astype(str)),
                np.char.add(age.astype(str), dept.astype(str))]  # fmt: skip
    y = imp["label"].to_numpy()
    cut = int(len(y) * 0.8)

    def held_out_loss(x):
        enc = OneHotEncoder(handle_unknown="ignore").fit(x[:cut])
        model = LogisticRegression(C=0.5, max_iter=300).fit(enc.transform(x[:cut]), y[:cut])
        return log_loss(y[cut:], model.predict_proba(enc.transform(x[cut:]))[:, 1])

    assert held_out_loss(ctx) < held_out_loss(ids) - 0.005
