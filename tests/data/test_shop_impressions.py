"""The synthetic shop's impression log: shape, calendar, and the signals it is built to carry."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from recforge.data.synthetic import PRESETS, SHOP_EPOCH, ShopConfig, SyntheticShop, generate_shop
from recforge.data.synthetic._world import BRANDS
from recforge.evaluation.metrics import auc

COLUMNS = ["user_id", "item_id", "timestamp", "list_id", "position", "page", "device", "label"]
CONFIG = ShopConfig(preset="tiny", with_media=False, impression_rows=40_000)


@pytest.fixture(scope="module")
def shop() -> SyntheticShop:
    return generate_shop(CONFIG)


def _codes(values: pd.Series | np.ndarray) -> np.ndarray:
    return pd.factorize(np.asarray(values), sort=True)[0]


# --- shape ---------------------------------------------------------------------------------


def test_columns_dtypes_and_order(shop: SyntheticShop) -> None:
    imp = shop.impressions
    assert list(imp.columns) == COLUMNS
    for column in ("user_id", "item_id", "list_id", "page", "device"):  # strings, one per category
        assert isinstance(imp[column].dtype, pd.CategoricalDtype)
        assert all(isinstance(c, str) for c in imp[column].cat.categories)
    assert imp["timestamp"].dtype == np.int64 and imp["position"].dtype == np.int16 and imp["label"].dtype == np.int8
    assert set(imp["page"].cat.categories) == {"home", "search", "category", "similar"}
    assert set(imp["device"].cat.categories) == set(shop.users["device"].unique())
    assert set(imp["label"].unique()) == {0, 1}
    assert imp.notna().all().all()
    assert len(imp) == 40_000
    lists = imp.groupby("list_id", observed=True)
    assert (lists.size() == CONFIG.list_length).all()
    assert (lists["position"].agg(list).map(lambda p: p == list(range(CONFIG.list_length)))).all()
    assert (lists["item_id"].nunique() == CONFIG.list_length).all()  # no item twice in a list
    assert (lists[["user_id", "timestamp", "page", "device"]].nunique() == 1).all().all()  # one visit
    key = pd.DataFrame({"t": imp["timestamp"], "l": imp["list_id"].astype(str), "p": imp["position"]})
    pd.testing.assert_frame_equal(key, key.sort_values(["t", "l", "p"]))
    assert set(imp["user_id"].astype(str)) <= set(shop.users["user_id"])
    assert set(imp["item_id"].astype(str)) <= set(shop.items["item_id"])
    assert list(shop.ground_truth_impressions.columns) == ["p_click", "affinity"]
    assert len(shop.ground_truth_impressions) == len(imp)


def test_sizes_round_up_to_whole_lists_and_presets_scale() -> None:
    small = generate_shop(ShopConfig(preset="tiny", with_media=False, impression_rows=25, list_length=4))
    assert len(small.impressions) == 28 and small.impressions["position"].max() == 3
    single = generate_shop(ShopConfig(preset="tiny", with_media=False, impression_rows=30, list_length=1))
    assert len(single.impressions) == 30 and (single.impressions["position"] == 0).all()
    assert 2_000 <= PRESETS["tiny"].impression_rows <= 10_000
    assert 200_000 <= PRESETS["default"].impression_rows <= 400_000
    assert PRESETS["large"].impression_rows >= 10_000_000


# --- determinism and independence -------------------------------------------------------------


def test_same_seed_same_log_other_seed_other_log(shop: SyntheticShop) -> None:
    again = generate_shop(CONFIG)
    # DataFrame.equals compares categoricals by categories and codes: assert_frame_equal would
    # compare every list id as a string, seconds for a few thousand lists
    assert again.impressions.equals(shop.impressions) and again.impressions.dtypes.equals(shop.impressions.dtypes)
    for column in ("user_id", "item_id", "list_id"):
        assert again.impressions[column].cat.categories.equals(shop.impressions[column].cat.categories)
    pd.testing.assert_frame_equal(again.ground_truth_impressions, shop.ground_truth_impressions)
    other = generate_shop(CONFIG.model_copy(update={"seed": 7}))
    assert not other.impressions["item_id"].astype(str).equals(shop.impressions["item_id"].astype(str))


@pytest.mark.parametrize("change", [{"impression_rows": 0}, {"impression_rows": 500, "list_length": 5}])
def test_the_log_leaves_every_other_table_unchanged(change: dict) -> None:
    """The log draws from its own stream (the 8th SeedSequence child): its size and shape change
    no interaction, item, user, ground-truth row or media byte."""
    config = ShopConfig(preset="tiny")
    shop, changed = generate_shop(config), generate_shop(config.model_copy(update=change))
    for name in ("interactions", "items", "users", "ground_truth_items", "ground_truth_users"):
        pd.testing.assert_frame_equal(getattr(changed, name), getattr(shop, name))
    assert changed.media == shop.media
    assert len(changed.impressions) == change["impression_rows"]


# --- calendar --------------------------------------------------------------------------------


def test_no_impression_before_the_items_release_or_the_users_signup(shop: SyntheticShop) -> None:
    imp = shop.impressions
    t = imp["timestamp"].to_numpy()
    release = shop.ground_truth_items.set_index("item_id")["release_ts"]
    signup = shop.ground_truth_users.set_index("user_id")["signup_ts"]
    assert (t >= release.loc[imp["item_id"].astype(str)].to_numpy()).all()
    assert (t >= signup.loc[imp["user_id"].astype(str)].to_numpy()).all()
    horizon = CONFIG.sizes().n_weeks * 7 * 86_400
    assert t.min() >= SHOP_EPOCH and t.max() < SHOP_EPOCH + horizon
    cold = set(shop.ground_truth_items.loc[shop.ground_truth_items["is_cold"], "item_id"])
    assert cold & set(imp["item_id"].astype(str))  # new arrivals are shown once released


def test_visits_follow_the_users_device_and_a_daily_rhythm(shop: SyntheticShop) -> None:
    imp = shop.impressions.drop_duplicates("list_id")
    own = shop.users.set_index("user_id")["device"].loc[imp["user_id"].astype(str)].to_numpy()
    assert 0.8 < (imp["device"].astype(str).to_numpy() == own).mean() < 0.9
    hour = (imp["timestamp"] - SHOP_EPOCH) // 3600 % 24
    by_hour = hour.value_counts(normalize=True).reindex(range(24), fill_value=0)
    assert by_hour[19:23].mean() > 2 * by_hour[2:6].mean()  # evenings busier than the small hours
    desktop = hour[imp["device"].to_numpy() == "desktop"]
    mobile = hour[imp["device"].to_numpy() == "mobile"]
    assert desktop.between(8, 17).mean() > mobile.between(8, 17).mean() + 0.15


# --- clicks ----------------------------------------------------------------------------------


def test_click_rate_and_labels_follow_the_true_probability(shop: SyntheticShop) -> None:
    y = shop.impressions["label"].to_numpy()
    p = shop.ground_truth_impressions["p_click"].to_numpy()
    assert 0.03 < y.mean() < 0.08
    assert abs(y.mean() - p.mean()) < 0.005  # labels are draws from p_click
    assert auc(p[y == 1], p[y == 0]) > 0.75
    assert np.corrcoef(shop.ground_truth_impressions["affinity"], y)[0, 1] > 0.1


def test_lists_are_ranked_by_taste_and_clicks_fall_with_position(shop: SyntheticShop) -> None:
    imp, truth = shop.impressions, shop.ground_truth_impressions
    position = imp["position"].to_numpy()
    by_position = imp.groupby("position")["label"].mean()
    assert by_position.iloc[0] > 1.5 * by_position.iloc[-1]
    assert truth.groupby(position)["affinity"].mean().is_monotonic_decreasing
    # The position bias is there beyond the ranking: with the true affinity held fixed, clicks
    # still fall with log(1 + position) (the shop's coefficient is -0.35; other terms are noise here).
    x = np.c_[truth["affinity"], np.log1p(position)]
    coef = LogisticRegression(C=100.0).fit(x, imp["label"]).coef_[0]
    assert coef[0] > 0.5 and -0.6 < coef[1] < -0.15


# --- context and attributes ------------------------------------------------------------------

EFFECTS = ("page", "hour_x_department", "device_x_department", "age_x_department", "country_x_brand_tier")


@pytest.fixture(scope="module")
def ablation() -> dict[str, np.ndarray]:
    """Held-out log loss of a logistic regression on one-hot ids, position, page, hour band and
    device plus the four crossed fields, of the same model without each effect in turn, and of
    ids and position alone. Training rows are the first 80% by time, held-out rows the rest.

    Age group, country and device are noisy read-outs of taste, so a crossed field also carries
    some taste; in a small shop that can happen to cancel a planted effect. The ablations therefore
    hold the true affinity fixed (a numeric column in every model but "ids_only"): what a field
    adds beyond it is the planted effect alone."""
    shop = generate_shop(ShopConfig(preset="tiny", with_media=False, impression_rows=200_000))
    imp = shop.impressions
    items = shop.items.set_index("item_id").loc[imp["item_id"].astype(str)]
    users = shop.users.set_index("user_id").loc[imp["user_id"].astype(str)]
    dept = _codes(items["category"].str.split("/").str[0])
    tier = _brand_tier(items["brand"].to_numpy())
    band = ((imp["timestamp"] - SHOP_EPOCH) // 3600 % 24 // 6).to_numpy()
    device = _codes(imp["device"].astype(str))
    fields = {
        "user": _codes(imp["user_id"].astype(str)),
        "item": _codes(imp["item_id"].astype(str)),
        "position": imp["position"].to_numpy(),
        "band": band,
        "device": device,
        "page": _codes(imp["page"].astype(str)),
        "hour_x_department": band * 6 + dept,
        "device_x_department": device * 6 + dept,
        "age_x_department": _codes(users["age_group"]) * 6 + dept,
        "country_x_brand_tier": _codes(users["country"]) * 5 + tier,
    }
    y = imp["label"].to_numpy()
    affinity = shop.ground_truth_impressions["affinity"].to_numpy(np.float64)
    cut = int(len(y) * 0.8)

    def held_out_loss(names: list[str], with_affinity: bool = True) -> np.ndarray:
        """(held-out rows,) log loss of each row, so that models compare row by row."""
        blocks, offset = [], 0
        for name in names:
            codes = fields[name]
            blocks.append(codes + offset)
            offset += int(codes.max()) + 1
        cols = np.stack(blocks, axis=1)
        x = sp.csr_matrix(
            (np.ones(cols.size), cols.reshape(-1), np.arange(0, cols.size + 1, cols.shape[1])), shape=(len(y), offset)
        )
        if with_affinity:
            x = sp.hstack([x, sp.csr_matrix(affinity[:, None])], format="csr")
        model = LogisticRegression(C=0.3, max_iter=500).fit(x[:cut], y[:cut])
        p = np.clip(model.predict_proba(x[cut:])[:, 1], 1e-12, 1 - 1e-12)
        return -(y[cut:] * np.log(p) + (1 - y[cut:]) * np.log(1 - p))

    everything = list(fields)
    losses = {"all": held_out_loss(everything)}
    for effect in EFFECTS:
        losses[effect] = held_out_loss([f for f in everything if f != effect])
    losses["all_without_affinity"] = held_out_loss(everything, with_affinity=False)
    losses["ids_only"] = held_out_loss(["user", "item", "position"], with_affinity=False)
    return losses


def _brand_tier(brand: np.ndarray) -> np.ndarray:
    """Brands are listed budget to premium inside each department (see _world.BRANDS)."""
    tier = {name: k for row in BRANDS for k, name in enumerate(row)}
    return pd.Series(brand).map(tier).to_numpy()


@pytest.mark.parametrize("effect", EFFECTS)
def test_each_context_and_attribute_effect_carries_signal_ids_do_not(ablation: dict[str, float], effect: str) -> None:
    gain, z = _gain(ablation[effect], ablation["all"])
    assert gain > 0.0005 and z > 3.0, (gain, z)


def test_attributes_and_context_beat_ids_alone(ablation: dict[str, float]) -> None:
    """The realistic comparison, no ground truth: what an id-only click model leaves on the table."""
    gain, z = _gain(ablation["ids_only"], ablation["all_without_affinity"])
    assert gain > 0.004 and z > 6.0, (gain, z)


def _gain(without: np.ndarray, with_: np.ndarray) -> tuple[float, float]:
    """Mean held-out log-loss gain of a model over one without some fields, and its z-score
    (the gain over the standard error of the row-by-row difference)."""
    diff = without - with_
    return float(diff.mean()), float(diff.mean() / (diff.std() / np.sqrt(len(diff))))
