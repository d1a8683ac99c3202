"""The synthetic multimodal shop: a seeded, offline data source with every modality.

`generate_shop(ShopConfig(...))` returns the canonical `interactions`, `items` and `users` tables,
the media files (a PNG photo and a WAV sound per item) and two ground-truth tables that no model
or node may read (tests use them to check that the signals below are really there).

The generative story
--------------------
1. *A category tree.* Six departments (apparel, electronics, home, sports, beauty, books) of four
   leaves each; an item's `category` is "department/leaf". Leaf sizes are uneven.
2. *Hidden item factors.* Each department has a centroid in a K-dimensional taste space (K = 8 by
   default); each leaf an offset; each item adds noise. Popularity is Zipf over a random rank;
   quality is partly factor 1 ("premium") and partly noise.
3. *Observable item content, all read off the factors.*
   - brand: five per department, budget to premium, chosen by factor 1; price: the leaf's price
     level times exp(0.35 * factor 1 + noise).
   - title "<brand> <adjective> <noun>" and a 20-36 word description mixing department words,
     leaf words, adjectives that reveal factors 0-3 (classic/modern, budget/premium, calm/bold,
     compact/sturdy) and shared filler words.
   - a photo: department -> shape, leaf -> hue within the department's colour band, factor 0 ->
     stripe period, factor 1 -> brightness, factor 2 -> saturation, factor 3 -> size, + noise.
   - a ~1 s sound: department -> pitch, leaf -> timbre (harmonics), factor 0 -> detune, factor 1 ->
     spectral tilt, factor 2 -> tempo of amplitude pulses, + hiss.
4. *Users.* Taste is a Dirichlet mix of one or two departments' centroids plus noise, and drifts
   slowly (linearly over the time line) towards another department. Age group, country and
   device are noisy read-outs of taste. Activity is log-normal.
5. *Cold start.* A share of items is released, and a share of users signs up, late in the time
   line (85-93%): their first interactions all fall in its last 15%.
6. *Sessions.* Every user has at least one session; further sessions go to users by activity, at
   uniformly random times after sign-up over `n_weeks` weeks from 2024-01-01 UTC. Session length
   is geometric (mean 5, at most 30 steps). At each step the shopper either follows the current
   item to one of its three *preferred successors* (similar items of the same department, chosen
   once per item), or the shop shows a slate of 48 items drawn by popularity (+ 6 recently
   released items with a novelty bonus) and the shopper picks one by softmax of affinity
   u(t).v, where u(t) is the drifted taste at the session's time. So taste, popularity, order
   (successors) and time (drift, releases) all carry signal.
7. *The funnel.* Every step is a `view`; an `add_to_cart` follows with a probability rising with
   affinity and quality and falling with price; carted items are bought at checkout (`purchase`,
   after the last step) with a probability rising with affinity and quality. Purchases are rated
   half of the time, other views 5% of the time: `rating` events whose value (1..5) is
   3.3 + 1.2 * affinity (z-score, centred on the typical viewed item) + 0.6 * quality + noise,
   rounded and clipped. Other events have
   value 1.0. Timestamps strictly increase within a session.
8. *The impression log.* Apart from the sessions, *visits* show lists for the CTR task. A visit
   is a user drawn by activity, on a day after her sign-up, at an hour from her visit device's
   daily rhythm (phones in the evening, desktops in office hours), on a page (home, search,
   category, similar) and a device (her own `device` 85% of the time). Its list holds
   `list_length` items ranked like the slates: candidates by popularity (none before its
   release), ordered by affinity + Gumbel noise. Each shown item is clicked with probability
   sigmoid(−4.0 + 1.0 affinity z-score + 0.5 quality − 0.35 log(1 + position) + hour band x
   department (±0.8) + device x department (±0.7) + page (search +0.8 ... category −0.3) + age
   group x department (±0.7) + country x brand tier (±0.6)), about 5% overall; the tables are in
   `_impressions.py`. So user attributes, item attributes and context carry click signal that
   ids alone cannot. `impressions` holds user_id, item_id, timestamp, list_id, position, page,
   device, label (ids, page and device as categoricals of strings; list ids number lists in
   time order); `ground_truth_impressions` holds each row's `p_click` and `affinity`.
9. *Tags.* Every item carries 2-6 tags in `items.tags` ("electronics|phones|modern|gift", joined
   by `|`), for tag recommendation: drawn without replacement from its department and leaf names,
   the adjectives of the signs of factors 0-3 (as in the descriptions, flipped now and then) and
   its brand tier ("budget-brand" .. "flagship-brand"), plus one noise tag ("gift", "sale" ...)
   30% of the time; `_tags.py`. They come from a ninth random stream, so every other table,
   column and value is what it was without them.

Presets (before overrides): tiny ~150 users x 100 items, ~4k interactions, 6k impressions (tests);
default 2,000 x 1,000, ~100k interactions, 300k impressions (the main `kedro run`; the log adds
~0.5 s); large 40,000 x 8,000, > 1M interactions, 10M impressions (~12 s and ~0.6 GB more).
The same seed gives the same tables and the same media bytes; each part draws from its own
random stream, so changing e.g. the image size, or the impression log's size, leaves the
interactions unchanged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from recforge.data.schema import EVENT_DTYPE, INTERACTION_COLUMNS, STRING
from recforge.data.synthetic._behaviour import simulate_sessions
from recforge.data.synthetic._impressions import PAGES, Impressions, simulate_impressions
from recforge.data.synthetic._media import render_media
from recforge.data.synthetic._tags import item_tags
from recforge.data.synthetic._text import item_texts, join
from recforge.data.synthetic._world import (
    AGE_GROUPS,
    BRANDS,
    COUNTRIES,
    DAY,
    DEVICES,
    LEAF_CATEGORIES,
    N_LEAF_PER_TOP,
    N_LEAVES,
    TOP_CATEGORIES,
    affinity_scale,
    draw_catalogue,
    draw_population,
)

__all__ = ["PRESETS", "SHOP_EPOCH", "ShopConfig", "ShopSizes", "SyntheticShop", "generate_shop"]

logger = logging.getLogger(__name__)

SHOP_EPOCH = 1_704_067_200  # 2024-01-01T00:00:00Z: the time line starts here


@dataclass(frozen=True)
class ShopSizes:
    """The sizes a preset (or its overrides) resolve to."""

    n_users: int
    n_items: int
    n_sessions: int
    n_weeks: int
    impression_rows: int


PRESETS: dict[str, ShopSizes] = {
    "tiny": ShopSizes(n_users=150, n_items=100, n_sessions=600, n_weeks=6, impression_rows=6_000),
    "default": ShopSizes(n_users=2_000, n_items=1_000, n_sessions=15_500, n_weeks=8, impression_rows=300_000),
    "large": ShopSizes(n_users=40_000, n_items=8_000, n_sessions=175_000, n_weeks=12, impression_rows=10_000_000),
}


class ShopConfig(BaseModel):
    """Which synthetic shop to generate: a preset, a seed and optional size overrides."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: Literal["tiny", "default", "large"] = "default"
    seed: int = Field(42, ge=0)
    n_users: int | None = Field(None, ge=10, description="None = the preset's value")
    n_items: int | None = Field(None, ge=N_LEAVES, description="None = the preset's value")
    n_sessions: int | None = Field(None, ge=1, description="raised to n_users: everyone shops once")
    n_weeks: int | None = Field(None, ge=1, le=520, description="length of the time line")
    n_factors: int = Field(8, ge=4, le=64, description="dimension of the hidden taste space")
    cold_start_share: float = Field(0.08, ge=0.0, le=0.5, description="late items and late users")
    image_size: int = Field(32, ge=8, le=256)
    audio_sample_rate: int = Field(8000, ge=4000, le=48000)
    audio_seconds: float = Field(1.0, gt=0.0, le=10.0)
    with_media: bool = True
    impression_rows: int | None = Field(None, ge=0, description="rows of the impression log; None = the preset's")
    list_length: int = Field(10, ge=1, le=100, description="items shown per impression list")

    def sizes(self) -> ShopSizes:
        """The preset's sizes with this config's overrides applied."""
        base = PRESETS[self.preset]
        n_users = self.n_users if self.n_users is not None else base.n_users
        return ShopSizes(
            n_users=n_users,
            n_items=self.n_items if self.n_items is not None else base.n_items,
            n_sessions=max(self.n_sessions if self.n_sessions is not None else base.n_sessions, n_users),
            n_weeks=self.n_weeks if self.n_weeks is not None else base.n_weeks,
            impression_rows=self.impression_rows if self.impression_rows is not None else base.impression_rows,
        )


@dataclass(frozen=True)
class SyntheticShop:
    """The generated tables and media; `ground_truth_*` hold the hidden factors (tests only)."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    media: dict[str, bytes]
    ground_truth_items: pd.DataFrame
    ground_truth_users: pd.DataFrame
    # lists of items shown (step 8 of the story); `ground_truth_impressions` holds each row's
    # p_click and affinity, row-aligned
    impressions: pd.DataFrame
    ground_truth_impressions: pd.DataFrame


def _ids(prefix: str, n: int, width: int) -> np.ndarray:
    """Object array of zero-padded ids, e.g. "u00012"."""
    digits = np.strings.zfill(np.arange(n).astype(np.dtypes.StringDType()), max(width, len(str(n - 1))))
    return join(prefix, digits).astype(object)


def _strings(values: np.ndarray) -> pd.arrays.StringArray:
    return pd.array(np.asarray(values, dtype=object), dtype=STRING)


def _factor_columns(prefix: str, values: np.ndarray) -> dict[str, np.ndarray]:
    return {f"{prefix}{k}": values[:, k] for k in range(values.shape[1])}


def _codes(codes: np.ndarray, categories: np.ndarray | tuple[str, ...]) -> pd.Categorical:
    """A categorical of strings from integer codes: one string per category, not per row."""
    return pd.Categorical.from_codes(codes, categories=pd.Index(np.asarray(categories, dtype=object).astype(str)))


def _impression_tables(
    shown: Impressions, user_ids: np.ndarray, item_ids: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The `impressions` table (step 8 of the story) and its row-aligned ground truth."""
    n_lists = int(shown.list[-1]) + 1 if len(shown.list) else 0
    table = pd.DataFrame(
        {
            "user_id": _codes(shown.user, user_ids),
            "item_id": _codes(shown.item, item_ids),
            "timestamp": shown.timestamp + SHOP_EPOCH,
            "list_id": _codes(shown.list, _ids("l", n_lists, 7) if n_lists else np.zeros(0, dtype=object)),
            "position": shown.position,
            "page": _codes(shown.page, PAGES),
            "device": _codes(shown.device, DEVICES),
            "label": shown.label,
        }
    )
    truth = pd.DataFrame({"p_click": shown.p_click, "affinity": shown.affinity})
    return table, truth


def generate_shop(config: ShopConfig) -> SyntheticShop:
    """Generate the whole shop (tables, media, ground truth) from `config`, deterministically."""
    sizes = config.sizes()
    horizon = sizes.n_weeks * 7 * DAY
    # child i of a SeedSequence does not depend on how many are spawned: adding the impression
    # stream (the 8th) and the tag stream (the 9th) leaves every earlier table and media byte as it was
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(9)]
    rng_items, rng_users, rng_scale, rng_events, rng_text, rng_image, rng_audio, rng_shown, rng_tags = streams

    share = config.cold_start_share
    cat, centroids = draw_catalogue(sizes.n_items, config.n_factors, horizon, share, rng_items)
    pop = draw_population(sizes.n_users, centroids, horizon, share, rng_users)
    aff_mean, aff_std = affinity_scale(pop.factors, cat.factors, rng_scale)
    events = simulate_sessions(sizes.n_sessions, horizon, cat, pop, aff_mean, aff_std, rng_events)

    user_ids = _ids("u", sizes.n_users, 5)
    item_ids = _ids("i", sizes.n_items, 5)
    n_sessions = int(events.session.max()) + 1
    session_ids = _ids("s", n_sessions, 6)

    # Global time order; a session's events never tie, so its order is unambiguous.
    order = np.lexsort((events.session, events.timestamp))
    interactions = pd.DataFrame(
        {
            "user_id": _strings(user_ids[events.user[order]]),
            "item_id": _strings(item_ids[events.item[order]]),
            "timestamp": (events.timestamp[order] + SHOP_EPOCH).astype(np.int64),
            "event": pd.Categorical.from_codes(events.event[order], dtype=EVENT_DTYPE),
            "value": events.value[order].astype(np.float64),
            "session_id": _strings(session_ids[events.session[order]]),
        }
    )[list(INTERACTION_COLUMNS)]

    global_leaf = cat.top * N_LEAF_PER_TOP + cat.leaf
    top_names = np.array(TOP_CATEGORIES, dtype=object)[cat.top]
    leaf_names = np.array(LEAF_CATEGORIES, dtype=object).reshape(-1)[global_leaf]
    category = join(top_names, "/", leaf_names)
    brand = np.array(BRANDS, dtype=object)[cat.top, cat.brand]
    title, text = item_texts(cat.top, cat.leaf, cat.brand, cat.z, rng_text)
    tags = item_tags(cat.top, cat.leaf, cat.brand, cat.z, rng_tags)

    media: dict[str, bytes] = {}
    image_paths = join("images/", item_ids, ".png")
    audio_paths = join("audio/", item_ids, ".wav")
    if config.with_media:
        for i, png, wav in render_media(
            cat.top, cat.leaf, cat.z, config.image_size, config.audio_sample_rate, config.audio_seconds,
            rng_image, rng_audio,
        ):
            media[str(image_paths[i])] = png
            media[str(audio_paths[i])] = wav
    no_media = pd.array([pd.NA] * sizes.n_items, dtype=STRING)
    items = pd.DataFrame(
        {
            "item_id": _strings(item_ids),
            "title": _strings(title),
            "text": _strings(text),
            "category": _strings(category),
            "price": cat.price.astype(np.float64),
            "image_path": _strings(image_paths) if config.with_media else no_media,
            "audio_path": _strings(audio_paths) if config.with_media else no_media,
            "brand": _strings(brand),
            "tags": _strings(tags),
        }
    )
    users = pd.DataFrame(
        {
            "user_id": _strings(user_ids),
            "age_group": _strings(np.array(AGE_GROUPS, dtype=object)[pop.age_group]),
            "country": _strings(np.array(COUNTRIES, dtype=object)[pop.country]),
            "device": _strings(np.array(DEVICES, dtype=object)[pop.device]),
        }
    )

    ground_truth_items = pd.DataFrame(
        {
            "item_id": _strings(item_ids),
            "category": _strings(category),
            "top_category": _strings(top_names),
            "leaf_category": _strings(leaf_names),
            **_factor_columns("f", cat.factors),
            "popularity": cat.popularity,
            "quality": cat.quality,
            "release_ts": cat.release + SHOP_EPOCH,
            "is_cold": cat.is_cold,
            **{f"successor_{j}": _strings(item_ids[succ]) for j, succ in enumerate(cat.successors.T)},
        }
    )
    ground_truth_users = pd.DataFrame(
        {
            "user_id": _strings(user_ids),
            **_factor_columns("f", pop.factors),
            **_factor_columns("drift_", pop.drift),
            "favourite_top": _strings(np.array(TOP_CATEGORIES, dtype=object)[pop.favourite_top]),
            "activity": pop.activity,
            "signup_ts": pop.signup + SHOP_EPOCH,
            "is_cold": pop.is_cold,
        }
    )
    shown = simulate_impressions(
        sizes.impression_rows, config.list_length, horizon, cat, pop, aff_mean, aff_std, rng_shown
    )
    impressions, ground_truth_impressions = _impression_tables(shown, user_ids, item_ids)
    logger.info(
        "synthetic shop %r (seed %d): %d users, %d items, %d sessions, %d interactions, %d media files, %d impressions",
        config.preset,
        config.seed,
        sizes.n_users,
        sizes.n_items,
        n_sessions,
        len(interactions),
        len(media),
        len(impressions),
    )
    return SyntheticShop(
        interactions=interactions,
        items=items,
        users=users,
        media=media,
        ground_truth_items=ground_truth_items,
        ground_truth_users=ground_truth_users,
        impressions=impressions,
        ground_truth_impressions=ground_truth_impressions,
    )
