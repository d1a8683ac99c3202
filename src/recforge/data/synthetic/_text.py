"""Titles and descriptions: department and leaf vocabularies, factor-driven adjectives, filler."""

from __future__ import annotations

import numpy as np

from recforge.data.synthetic._world import BRANDS, N_LEAF_PER_TOP, sigmoid

TOP_WORDS: tuple[tuple[str, ...], ...] = tuple(
    tuple(line.split())
    for line in (
        "cotton fit wear fabric stitched size collar sleeve style wardrobe seam outfit",
        "battery wireless screen charger usb processor bluetooth pixel sensor firmware signal circuit",
        "room wooden cozy shelf table living interior ceramic cushion drawer apartment household",
        "training outdoor grip endurance workout trail fitness breathable gear athlete muscle marathon",
        "skin scent cream glow serum lotion hydrating fresh organic vitamin formula radiant",
        "chapter author story pages edition reader hardcover illustrated bestseller paperback prose foreword",
    )
)
# The first word of each leaf is its noun in titles.
LEAF_WORDS: tuple[tuple[str, ...], ...] = (
    ("shirt", "button", "linen", "polo"), ("sneaker", "sole", "lace", "heel"),
    ("jacket", "zipper", "hood", "waterproof"), ("hat", "brim", "cap", "beanie"),
    ("phone", "smartphone", "sim", "touchscreen"), ("laptop", "keyboard", "ssd", "notebook"),
    ("headphones", "earbuds", "noise-cancelling", "bass"), ("camera", "lens", "zoom", "shutter"),
    ("pan", "knife", "cookware", "blender"), ("chair", "sofa", "cabinet", "upholstered"),
    ("lamp", "bulb", "dimmable", "pendant"), ("vase", "frame", "rug", "candle"),
    ("shorts", "stride", "pace", "reflective"), ("bike", "helmet", "pedal", "saddle"),
    ("mat", "stretch", "block", "balance"), ("tent", "sleeping-bag", "lantern", "backpack"),
    ("moisturizer", "cleanser", "spf", "pores"), ("lipstick", "mascara", "palette", "foundation"),
    ("perfume", "cologne", "musk", "floral"), ("shampoo", "conditioner", "curl", "scalp"),
    ("thriller", "mystery", "romance", "plot"), ("physics", "biology", "research", "theory"),
    ("cookbook", "recipes", "baking", "cuisine"), ("guidebook", "maps", "itinerary", "destinations"),
)
# ADJECTIVES[f][0] for a low factor f, [f][1] for a high one: the words that reveal the factors.
ADJECTIVES: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("classic", "vintage", "timeless"), ("modern", "sleek", "futuristic")),
    (("budget", "basic", "everyday"), ("premium", "luxury", "deluxe")),
    (("calm", "soft", "gentle"), ("bold", "vivid", "energetic")),
    (("compact", "lightweight", "slim"), ("large", "sturdy", "robust")),
)
FILLER: tuple[str, ...] = (
    "the", "a", "with", "and", "for", "your", "this", "is", "of", "in",
    "perfect", "great", "quality", "new", "best", "daily", "use", "to", "our", "design",
)
# Where each description word comes from: department, leaf, adjective, filler.
SOURCE_P = np.array([0.3, 0.2, 0.2, 0.3])
MIN_WORDS, MAX_WORDS = 20, 36

_STR = np.dtypes.StringDType()


def join(*parts: np.ndarray | str) -> np.ndarray:
    """Element-wise concatenation of string arrays (any string dtype) and scalars."""
    out = np.asarray(parts[0]).astype(_STR)
    for part in parts[1:]:
        out = np.strings.add(out, np.asarray(part).astype(_STR))
    return out


def _adjectives(z: np.ndarray, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Adjectives of random factors, high or low with probability sigmoid(2 z)."""
    n = z.shape[0]
    table = np.array([[list(lo), list(hi)] for lo, hi in ADJECTIVES], dtype=object)  # (F, 2, 3)
    factor = rng.integers(0, len(ADJECTIVES), shape)
    high = rng.random(shape) < sigmoid(2.0 * z[np.arange(n)[:, None], factor])
    return table[factor, high.astype(np.int64), rng.integers(0, table.shape[2], shape)]


def item_texts(
    top: np.ndarray, leaf: np.ndarray, brand: np.ndarray, z: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(titles, descriptions) as numpy StringDType arrays, one per item."""
    n = len(top)
    global_leaf = top * N_LEAF_PER_TOP + leaf
    brands = np.array(BRANDS, dtype=object)[top, brand]
    nouns = np.array([w[0] for w in LEAF_WORDS], dtype=object)[global_leaf]
    title = join(brands, " ", _adjectives(z, rng, (n, 1))[:, 0], " ", nouns)

    shape = (n, MAX_WORDS)
    top_words = np.array(TOP_WORDS, dtype=object)[top[:, None], rng.integers(0, len(TOP_WORDS[0]), shape)]
    leaf_pick = rng.integers(0, len(LEAF_WORDS[0]), shape)
    leaf_words = np.array(LEAF_WORDS, dtype=object)[global_leaf[:, None], leaf_pick]
    filler = np.array(FILLER, dtype=object)[rng.integers(0, len(FILLER), shape)]
    source = rng.choice(len(SOURCE_P), shape, p=SOURCE_P)
    words = np.choose(source, [top_words, leaf_words, _adjectives(z, rng, shape), filler]).astype(_STR)
    n_words = rng.integers(MIN_WORDS, MAX_WORDS + 1, n)

    # One vectorised concatenation per word position, not per item.
    text = words[:, 0]
    for j in range(1, MAX_WORDS):
        text = np.where(j < n_words, join(text, " ", words[:, j]), text)
    return title, join(text, ".")
