"""Item tags (step 9 of the story): 2-6 per item, read off the department, leaf, factors and brand.

A tag is drawn from seven informative candidates — the department and leaf names, the sign of
each of factors 0-3 written as its adjective ("modern" / "classic", as the description words
reveal them) and the brand tier — picked without replacement with the weights below, plus at most
one noise tag that says nothing about the item. Tags are written in candidate order, noise last,
joined by `|` ("electronics|phones|modern|flagship-brand|gift").
"""

from __future__ import annotations

import numpy as np

from recforge.data.synthetic._text import ADJECTIVES, join
from recforge.data.synthetic._world import LEAF_CATEGORIES, N_LEAF_PER_TOP, TOP_CATEGORIES, sigmoid

BRAND_TIERS: tuple[str, ...] = ("budget-brand", "value-brand", "mainstream-brand", "upscale-brand", "flagship-brand")
NOISE_TAGS: tuple[str, ...] = ("gift", "sale", "new-arrival", "trending", "eco", "limited", "handmade", "staff-pick")
# department, leaf, adjectives of factors 0-3, brand tier: how likely each is to be among the tags
WEIGHTS = np.array([3.0, 3.0, 1.5, 1.5, 1.5, 1.5, 1.0])
MIN_TAGS, MAX_TAGS = 2, 6
P_NOISE = 0.3
SEP = "|"


def item_tags(
    top: np.ndarray, leaf: np.ndarray, brand: np.ndarray, z: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """(n_items,) StringDType array of `|`-joined tags; `z` the standardised factors (I, K)."""
    n = len(top)
    n_adj = len(ADJECTIVES)
    # a factor's adjective is its sign, flipped now and then as in the descriptions
    high = rng.random((n, n_adj)) < sigmoid(3.0 * z[:, :n_adj])  # (I, 4)
    adjectives = np.array([[lo[0], hi[0]] for lo, hi in ADJECTIVES], dtype=object)  # (4, 2)
    candidates = np.column_stack(
        [
            np.array(TOP_CATEGORIES, dtype=object)[top],
            np.array(LEAF_CATEGORIES, dtype=object).reshape(-1)[top * N_LEAF_PER_TOP + leaf],
            adjectives[np.arange(n_adj), high.astype(np.int64)],
            np.array(BRAND_TIERS, dtype=object)[brand],
        ]
    )  # (I, 7)
    n_tags = rng.integers(MIN_TAGS, MAX_TAGS + 1, n)
    noise = rng.random(n) < P_NOISE
    n_informative = n_tags - noise
    # weighted sampling without replacement: the n largest of log w + Gumbel noise (Gumbel-top-k)
    keys = np.log(WEIGHTS) + rng.gumbel(size=candidates.shape)
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)  # (I, 7) 0 = drawn first
    chosen = rank < n_informative[:, None]
    noise_tag = np.array(NOISE_TAGS, dtype=object)[rng.integers(0, len(NOISE_TAGS), n)]

    tags = np.full(n, "", dtype=object)
    for j in range(candidates.shape[1]):  # one vectorised step per candidate column
        tags = np.where(chosen[:, j], join(tags, SEP, candidates[:, j]).astype(object), tags)
    tags = np.where(noise, join(tags, SEP, noise_tag).astype(object), tags)
    return np.strings.lstrip(np.asarray(tags).astype(np.dtypes.StringDType()), SEP)
