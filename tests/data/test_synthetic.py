"""The synthetic shop: canonical tables, determinism, and that every planted signal is learnable."""

from __future__ import annotations

import io
import wave

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pydantic import ValidationError
from scipy.stats import spearmanr
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from recforge.data.schema import EVENTS, INTERACTION_COLUMNS, ITEM_COLUMNS, NULLABLE, STRING
from recforge.data.synthetic import PRESETS, SHOP_EPOCH, ShopConfig, SyntheticShop, generate_shop

N_TOP = 6
CHANCE = 1.0 / N_TOP


@pytest.fixture(scope="module")
def tiny() -> SyntheticShop:
    return generate_shop(ShopConfig(preset="tiny"))


@pytest.fixture(scope="module")
def probe() -> SyntheticShop:
    """Tiny with more users, items and sessions, so that linear probes have data to learn from."""
    return generate_shop(ShopConfig(preset="tiny", n_users=800, n_items=300, n_sessions=4000))


def _factors(frame: pd.DataFrame) -> np.ndarray:
    return frame[[c for c in frame.columns if c.startswith("f") and c[1:].isdigit()]].to_numpy()


def _index(ids: pd.Series) -> np.ndarray:
    """Ids are zero-padded counters, so the number is the row of the ground-truth frame."""
    return ids.str[1:].astype(int).to_numpy()


def _probe_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.3, random_state=0, stratify=labels
    )
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x_train, y_train)
    return float(clf.score(x_test, y_test))


# --- tables ---------------------------------------------------------------------------------


def test_tables_have_the_canonical_dtypes(tiny: SyntheticShop) -> None:
    assert dict(tiny.interactions.dtypes) == INTERACTION_COLUMNS
    assert list(tiny.items.columns[: len(ITEM_COLUMNS)]) == list(ITEM_COLUMNS)
    assert {c: tiny.items[c].dtype for c in ITEM_COLUMNS} == ITEM_COLUMNS
    assert tiny.users["user_id"].dtype == STRING
    assert list(tiny.users.columns) == ["user_id", "age_group", "country", "device"]
    for frame, columns in ((tiny.interactions, INTERACTION_COLUMNS), (tiny.items, ITEM_COLUMNS)):
        for c in columns:
            assert not frame[c].isna().any(), c  # the synthetic shop fills even nullable columns
    assert set(NULLABLE) >= {"session_id"}


def test_sizes_ids_and_categories(tiny: SyntheticShop) -> None:
    sizes = PRESETS["tiny"]
    assert len(tiny.users) == sizes.n_users and len(tiny.items) == sizes.n_items
    assert 2_500 <= len(tiny.interactions) <= 8_000
    assert tiny.users["user_id"].str.fullmatch(r"u\d{5}").all()
    assert tiny.items["item_id"].str.fullmatch(r"i\d{5}").all()
    assert tiny.interactions["session_id"].str.fullmatch(r"s\d{6}").all()
    top_leaf = tiny.items["category"].str.split("/", expand=True)
    assert top_leaf[0].nunique() == N_TOP and tiny.items["category"].nunique() == N_TOP * 4
    assert (tiny.items.groupby(top_leaf[0])["category"].nunique() == 4).all()
    assert (tiny.items["price"] > 0).all()
    assert set(tiny.interactions["event"].unique()) == set(EVENTS) - {"click"}


def test_referential_integrity(tiny: SyntheticShop) -> None:
    inter = tiny.interactions
    assert set(inter["user_id"]) <= set(tiny.users["user_id"])
    assert set(inter["item_id"]) <= set(tiny.items["item_id"])
    assert set(inter["user_id"]) == set(tiny.users["user_id"])  # everyone shops at least once
    assert tiny.users["user_id"].is_unique and tiny.items["item_id"].is_unique
    assert (inter.groupby("session_id")["user_id"].nunique() == 1).all()
    paths = set(tiny.items["image_path"]) | set(tiny.items["audio_path"])
    assert paths == set(tiny.media)
    assert tiny.items["image_path"].iloc[3] == f"images/{tiny.items['item_id'].iloc[3]}.png"
    pd.testing.assert_series_equal(tiny.ground_truth_items["item_id"], tiny.items["item_id"])
    pd.testing.assert_series_equal(tiny.ground_truth_users["user_id"], tiny.users["user_id"])
    assert (tiny.ground_truth_items["category"] == tiny.items["category"]).all()


def test_values_and_time_line(tiny: SyntheticShop) -> None:
    inter = tiny.interactions
    ratings = inter["event"] == "rating"
    assert inter.loc[ratings, "value"].isin([1.0, 2.0, 3.0, 4.0, 5.0]).all()
    assert inter.loc[ratings, "value"].nunique() == 5
    assert (inter.loc[~ratings, "value"] == 1.0).all()
    assert inter["timestamp"].min() >= SHOP_EPOCH
    assert inter["timestamp"].max() <= SHOP_EPOCH + PRESETS["tiny"].n_weeks * 7 * 86_400
    assert inter["timestamp"].is_monotonic_increasing
    steps = inter.groupby("session_id")["timestamp"].diff().dropna()
    assert (steps > 0).all()  # strictly increasing within a session: order is unambiguous


def test_media_files_decode(tiny: SyntheticShop) -> None:
    item = tiny.items.iloc[0]
    image = Image.open(io.BytesIO(tiny.media[item["image_path"]]))
    assert image.format == "PNG" and image.mode == "RGB" and image.size == (32, 32)
    with wave.open(io.BytesIO(tiny.media[item["audio_path"]])) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (1, 2, 8000, 8000)


def test_media_settings_and_without_media(tiny: SyntheticShop) -> None:
    big = generate_shop(ShopConfig(preset="tiny", image_size=48, audio_sample_rate=16000, audio_seconds=0.5))
    assert Image.open(io.BytesIO(big.media["images/i00000.png"])).size == (48, 48)
    with wave.open(io.BytesIO(big.media["audio/i00000.wav"])) as w:
        assert (w.getframerate(), w.getnframes()) == (16000, 8000)
    # Each part draws from its own stream: media settings leave the behaviour untouched.
    pd.testing.assert_frame_equal(big.interactions, tiny.interactions)
    bare = generate_shop(ShopConfig(preset="tiny", with_media=False))
    assert bare.media == {}
    assert bare.items["image_path"].isna().all() and bare.items["audio_path"].isna().all()
    assert bare.items["image_path"].dtype == STRING
    pd.testing.assert_frame_equal(bare.interactions, tiny.interactions)


# --- determinism and config -----------------------------------------------------------------


def test_same_seed_same_shop(tiny: SyntheticShop) -> None:
    again = generate_shop(ShopConfig(preset="tiny"))
    for name in ("interactions", "items", "users", "ground_truth_items", "ground_truth_users"):
        pd.testing.assert_frame_equal(getattr(again, name), getattr(tiny, name))
    assert again.media == tiny.media


def test_other_seed_other_shop(tiny: SyntheticShop) -> None:
    other = generate_shop(ShopConfig(preset="tiny", seed=7))
    assert not other.interactions.equals(tiny.interactions)
    assert not other.items["text"].equals(tiny.items["text"])
    assert other.media["images/i00000.png"] != tiny.media["images/i00000.png"]
    assert other.media["audio/i00000.wav"] != tiny.media["audio/i00000.wav"]


def test_config_is_validated_and_frozen() -> None:
    config = ShopConfig(preset="tiny", n_users=40, n_sessions=10)
    assert config.sizes().n_users == 40 and config.sizes().n_sessions == 40  # everyone shops once
    assert config.sizes().n_items == PRESETS["tiny"].n_items
    assert ShopConfig().preset == "default"
    with pytest.raises(ValidationError):
        config.seed = 1  # type: ignore[misc]
    for bad in ({"preset": "huge"}, {"n_items": 5}, {"seed": -1}, {"image_size": 2}, {"colour": "red"}):
        with pytest.raises(ValidationError):
            ShopConfig(**bad)


def test_presets_scale_up() -> None:
    assert PRESETS["tiny"].n_sessions < PRESETS["default"].n_sessions < PRESETS["large"].n_sessions
    assert PRESETS["default"].n_users >= 2_000 and PRESETS["default"].n_items >= 1_000
    assert PRESETS["large"].n_sessions * 5 >= 800_000  # ~6.5 events a session: > 1M interactions


# --- behaviour --------------------------------------------------------------------------------


def test_funnel_order_within_sessions(tiny: SyntheticShop) -> None:
    inter = tiny.interactions.reset_index(drop=True)

    def first_time(event: str) -> pd.Series:
        rows = inter[inter["event"] == event]
        return rows.groupby(["session_id", "item_id"])["timestamp"].min()

    purchases = inter[inter["event"] == "purchase"]
    carts, views = first_time("add_to_cart"), first_time("view")
    key = pd.MultiIndex.from_frame(purchases[["session_id", "item_id"]])
    assert len(purchases) > 0
    assert (carts.reindex(key).to_numpy() < purchases["timestamp"].to_numpy()).all()
    cart_rows = inter[inter["event"] == "add_to_cart"]
    cart_key = pd.MultiIndex.from_frame(cart_rows[["session_id", "item_id"]])
    assert (views.reindex(cart_key).to_numpy() < cart_rows["timestamp"].to_numpy()).all()


def test_cold_start_items_and_users_exist(tiny: SyntheticShop) -> None:
    inter = tiny.interactions
    t0, t1 = inter["timestamp"].min(), inter["timestamp"].max()
    late = t0 + 0.85 * (t1 - t0)
    for kind, truth in (("item", tiny.ground_truth_items), ("user", tiny.ground_truth_users)):
        first = inter.groupby(f"{kind}_id")["timestamp"].min()
        cold = first.reindex(truth.loc[truth["is_cold"], f"{kind}_id"]).dropna()
        assert len(cold) >= 2, kind  # late arrivals that do show up ...
        assert (cold >= late).all(), kind  # ... show up only in the last 15% of the time line
    # Nothing is bought before it is released.
    release = tiny.ground_truth_items.set_index("item_id")["release_ts"]
    assert (inter["timestamp"].to_numpy() >= release.reindex(inter["item_id"]).to_numpy()).all()


def test_next_item_transitions_beat_popularity(probe: SyntheticShop) -> None:
    # Sessions interleave in global time: pair consecutive views within each session.
    views = probe.interactions[probe.interactions["event"] == "view"]
    views = views.sort_values(["session_id", "timestamp"], kind="stable")
    item = _index(views["item_id"])
    same = views["session_id"].to_numpy()[1:] == views["session_id"].to_numpy()[:-1]
    cur, nxt = item[:-1][same], item[1:][same]
    late = views["timestamp"].to_numpy()[1:][same] >= np.quantile(views["timestamp"], 0.8)
    n_items = len(probe.items)

    counts = np.zeros((n_items, n_items))
    np.add.at(counts, (cur[~late], nxt[~late]), 1.0)
    popularity = np.bincount(item, minlength=n_items).astype(float)
    # Rank by transitions, break ties (and fill empty rows) by popularity.
    scores = counts[cur[late]] + popularity / (popularity.max() + 1.0)
    top10 = np.argsort(-scores, axis=1)[:, :10]
    hit_transition = (top10 == nxt[late, None]).any(axis=1).mean()
    hit_popularity = np.isin(nxt[late], np.argsort(-popularity)[:10]).mean()
    assert hit_transition > hit_popularity + 0.15, (hit_transition, hit_popularity)


def test_ratings_follow_hidden_affinity(probe: SyntheticShop) -> None:
    ratings = probe.interactions[probe.interactions["event"] == "rating"]
    users, items = _factors(probe.ground_truth_users), _factors(probe.ground_truth_items)
    affinity = np.einsum(
        "nk,nk->n", users[_index(ratings["user_id"])], items[_index(ratings["item_id"])]
    )
    assert len(ratings) > 500
    assert spearmanr(affinity, ratings["value"]).statistic > 0.3


def test_views_follow_popularity_and_taste_drift(probe: SyntheticShop) -> None:
    views = probe.interactions[probe.interactions["event"] == "view"]
    counts = views["item_id"].value_counts().reindex(probe.items["item_id"], fill_value=0)
    assert spearmanr(counts, probe.ground_truth_items["popularity"]).statistic > 0.3
    # Late views lean towards where each user's taste drifts; early views away from it.
    drift = probe.ground_truth_users[[c for c in probe.ground_truth_users if c.startswith("drift_")]]
    items = _factors(probe.ground_truth_items)[_index(views["item_id"])]
    along = np.einsum("nk,nk->n", drift.to_numpy()[_index(views["user_id"])], items)
    tau = views["timestamp"].rank(pct=True).to_numpy()
    assert along[tau > 0.7].mean() > along[tau < 0.3].mean() + 0.1


def test_demographics_carry_taste(probe: SyntheticShop) -> None:
    factors = _factors(probe.ground_truth_users)
    for column in ("age_group", "country"):
        labels = probe.users[column].to_numpy(dtype=str)
        majority = pd.Series(labels).value_counts(normalize=True).iloc[0]
        assert _probe_accuracy(factors, labels) > majority + 0.05, column


# --- content ----------------------------------------------------------------------------------


def _top(shop: SyntheticShop) -> np.ndarray:
    return shop.items["category"].str.split("/").str[0].to_numpy(dtype=str)


def test_image_pixels_reveal_the_department(probe: SyntheticShop) -> None:
    images = np.stack([np.asarray(Image.open(io.BytesIO(probe.media[p]))) for p in probe.items["image_path"]])
    # 4x4 average pooling keeps shape and colour and makes the probe fast.
    pixels = images.reshape(len(images), 8, 4, 8, 4, 3).mean(axis=(2, 4)).reshape(len(images), -1) / 255.0
    assert _probe_accuracy(pixels, _top(probe)) > 2 * CHANCE


def test_text_reveals_the_department(probe: SyntheticShop) -> None:
    words = CountVectorizer().fit_transform(probe.items["text"].to_numpy(dtype=str)).toarray()
    assert _probe_accuracy(words, _top(probe)) > 2 * CHANCE


def test_audio_spectrum_reveals_the_department(probe: SyntheticShop) -> None:
    def spectrum(path: str) -> np.ndarray:
        with wave.open(io.BytesIO(probe.media[path])) as w:
            samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32)
        magnitude = np.abs(np.fft.rfft(samples))[:4000]
        return np.log1p(magnitude.reshape(200, 20).mean(axis=1))  # 20 Hz bands

    spectra = np.stack([spectrum(p) for p in probe.items["audio_path"]])
    assert _probe_accuracy(spectra, _top(probe)) > 2 * CHANCE
