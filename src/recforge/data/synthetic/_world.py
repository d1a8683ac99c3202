"""The hidden world of the synthetic shop: the category tree, item and user factors, popularity,
successor items, demographics and the cold-start calendar. Nothing here is observed directly."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DAY = 86_400

TOP_CATEGORIES: tuple[str, ...] = ("apparel", "electronics", "home", "sports", "beauty", "books")
LEAF_CATEGORIES: tuple[tuple[str, ...], ...] = (
    ("shirts", "shoes", "jackets", "hats"),
    ("phones", "laptops", "headphones", "cameras"),
    ("kitchen", "furniture", "lighting", "decor"),
    ("running", "cycling", "yoga", "camping"),
    ("skincare", "makeup", "fragrance", "haircare"),
    ("fiction", "science", "cooking", "travel"),
)
N_TOP = len(TOP_CATEGORIES)
N_LEAF_PER_TOP = len(LEAF_CATEGORIES[0])
N_LEAVES = N_TOP * N_LEAF_PER_TOP
# Brands are ordered from budget to premium inside each department (see `brand` below).
BRANDS: tuple[tuple[str, ...], ...] = (
    ("Basico", "Norvik", "Haleby", "Tessin", "Corvo"),
    ("Voltra", "Kinetix", "Aeron", "Zentro", "Pixella"),
    ("Homely", "Oakmere", "Lindqvist", "Casalta", "Nordhem"),
    ("Stridex", "Peakline", "Trailon", "Kinsa", "Velora"),
    ("Verdi", "Lumea", "Solene", "Camila", "Aurelle"),
    ("Paperlane", "Folio", "Inkwell", "Margin", "Quillon"),
)
N_BRANDS_PER_TOP = len(BRANDS[0])
# Typical price of a department in euros; leaves and items scatter around it.
TOP_PRICE = np.array([40.0, 300.0, 80.0, 60.0, 25.0, 15.0])

AGE_GROUPS: tuple[str, ...] = ("18-24", "25-34", "35-44", "45-54", "55+")
COUNTRIES: tuple[str, ...] = ("US", "GB", "DE", "FR", "ES", "IT", "NL", "SE")
DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet")
_AGE_PRIOR = np.array([0.2, 0.3, 0.22, 0.16, 0.12])
_COUNTRY_PRIOR = np.array([0.3, 0.15, 0.15, 0.12, 0.08, 0.08, 0.06, 0.06])
_DEVICE_PRIOR = np.array([0.6, 0.3, 0.1])

N_SUCCESSORS = 3
SUCCESSOR_POPULARITY = 0.3
COLD_FROM, COLD_TO = 0.85, 0.93  # share of the time line in which cold items/users arrive
ZIPF_EXPONENT = 0.9
DRIFT_STRENGTH = 0.8


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


def standardise(x: np.ndarray) -> np.ndarray:
    """Column-wise z-scores (population statistics)."""
    return (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-9)


@dataclass(frozen=True)
class Catalogue:
    """Hidden and observable item properties, one row per item index."""

    top: np.ndarray  # (I,) int: department
    leaf: np.ndarray  # (I,) int: leaf inside the department, 0..3
    factors: np.ndarray  # (I, K) float64: taste space
    z: np.ndarray  # (I, K) standardised factors, drive text, images, audio and price
    popularity: np.ndarray  # (I,) probability of being shown, Zipf over a random rank
    quality: np.ndarray  # (I,) hidden quality, raises cart, purchase and rating
    brand: np.ndarray  # (I,) int: brand inside the department, 0 = budget .. 4 = premium
    price: np.ndarray  # (I,) euros
    release: np.ndarray  # (I,) int64 seconds since the start of the time line
    is_cold: np.ndarray  # (I,) bool: released in the last part of the time line
    successors: np.ndarray  # (I, N_SUCCESSORS) int: preferred next items, best first


@dataclass(frozen=True)
class Population:
    """Hidden and observable user properties, one row per user index."""

    factors: np.ndarray  # (U, K) taste in the middle of the time line
    drift: np.ndarray  # (U, K) taste moves by (tau - 0.5) * drift, tau in [0, 1]
    favourite_top: np.ndarray  # (U,) int
    activity: np.ndarray  # (U,) relative rate of sessions
    signup: np.ndarray  # (U,) int64 seconds since the start of the time line
    is_cold: np.ndarray  # (U,) bool
    age_group: np.ndarray  # (U,) int index into AGE_GROUPS
    country: np.ndarray  # (U,) int index into COUNTRIES
    device: np.ndarray  # (U,) int index into DEVICES


def _arrival(n: int, share: float, horizon: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Arrival times: 0 for most, late in the time line for a `share` (the cold start)."""
    # An exact count, not a coin per row, so even the tiny preset has its cold start.
    is_cold = rng.permutation(n) < int(round(share * n))
    late = (rng.uniform(COLD_FROM, COLD_TO, n) * horizon).astype(np.int64)
    return np.where(is_cold, late, 0).astype(np.int64), is_cold


def draw_catalogue(
    n_items: int, n_factors: int, horizon: int, cold_share: float, rng: np.random.Generator
) -> tuple[Catalogue, np.ndarray]:
    """Items and the department centroids (N_TOP, K) that users' tastes are built from."""
    centroids = rng.normal(0.0, 1.0, (N_TOP, n_factors))
    leaf_offsets = rng.normal(0.0, 0.5, (N_LEAVES, n_factors))
    # Uneven leaf sizes, but every leaf gets at least one item so the tree is complete.
    leaf_weights = rng.dirichlet(np.full(N_LEAVES, 8.0))
    global_leaf = np.concatenate(
        [rng.permutation(N_LEAVES), rng.choice(N_LEAVES, n_items - N_LEAVES, p=leaf_weights)]
    )
    global_leaf = global_leaf[rng.permutation(n_items)]
    top, leaf = np.divmod(global_leaf, N_LEAF_PER_TOP)
    factors = centroids[top] + leaf_offsets[global_leaf] + rng.normal(0.0, 0.6, (n_items, n_factors))
    z = standardise(factors)

    rank = rng.permutation(n_items) + 1
    popularity = rank ** -ZIPF_EXPONENT
    popularity = popularity / popularity.sum()
    quality = 0.3 * z[:, 1] + rng.normal(0.0, 0.5, n_items)

    # Premium brands make "premium" items: brand follows factor 1 inside the department.
    brand_score = z[:, 1] + rng.normal(0.0, 0.5, n_items)
    brand = np.clip(np.floor(sigmoid(1.5 * brand_score) * N_BRANDS_PER_TOP), 0, N_BRANDS_PER_TOP - 1)
    leaf_price = TOP_PRICE[np.arange(N_LEAVES) // N_LEAF_PER_TOP] * np.exp(rng.normal(0.0, 0.3, N_LEAVES))
    price = leaf_price[global_leaf] * np.exp(0.35 * z[:, 1] + rng.normal(0.0, 0.25, n_items))
    price = np.maximum(np.round(price) - 0.01, 0.99)

    release, is_cold = _arrival(n_items, cold_share, horizon, rng)
    successors = _draw_successors(top, z, popularity, rng)
    catalogue = Catalogue(
        top=top,
        leaf=leaf,
        factors=factors,
        z=z,
        popularity=popularity,
        quality=quality,
        brand=brand.astype(np.int64),
        price=price,
        release=release,
        is_cold=is_cold,
        successors=successors,
    )
    return catalogue, centroids


def _draw_successors(
    top: np.ndarray, z: np.ndarray, popularity: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Each item's few preferred next items: similar, rather popular items of the same department.

    Popular items are cross-sold more (they become hubs), so popularity stays visible in views.

    One loop per department, never per item; the similarity matrix of a department is at most
    (I/6)^2 entries, small even for the large preset.
    """
    n_items, k = z.shape
    successors = np.empty((n_items, N_SUCCESSORS), dtype=np.int64)
    for t in range(N_TOP):
        members = np.flatnonzero(top == t)
        score = (
            z[members] @ z[members].T / np.sqrt(k)
            + SUCCESSOR_POPULARITY * np.log(popularity[members])[None, :]
            + rng.gumbel(0.0, 1.0, (len(members), len(members)))
        )
        np.fill_diagonal(score, -np.inf)
        best = np.argpartition(-score, N_SUCCESSORS - 1, axis=1)[:, :N_SUCCESSORS]
        order = np.argsort(-np.take_along_axis(score, best, axis=1), axis=1, kind="stable")
        successors[members] = members[np.take_along_axis(best, order, axis=1)]
    return successors


def _draw_categorical(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One category per row from unnormalised log-probabilities (Gumbel-max)."""
    return np.argmax(logits + rng.gumbel(0.0, 1.0, logits.shape), axis=1)


def draw_population(
    n_users: int, centroids: np.ndarray, horizon: int, cold_share: float, rng: np.random.Generator
) -> Population:
    """Users: taste mixed from one or two favourite departments, drift, activity, demographics."""
    n_factors = centroids.shape[1]
    preference = rng.dirichlet(np.full(N_TOP, 0.3), n_users)  # (U, N_TOP), mostly 1-2 departments
    base = preference @ centroids
    factors = base + rng.normal(0.0, 0.5, (n_users, n_factors))
    # Taste drifts slowly towards another department over the whole time line.
    target = centroids[rng.integers(0, N_TOP, n_users)]
    drift = DRIFT_STRENGTH * (target - base)

    signup, is_cold = _arrival(n_users, cold_share, horizon, rng)
    # Late arrivals have less time left: their rate is scaled so they do not cram a heavy
    # user's whole history into a week.
    activity = rng.lognormal(0.0, 0.8, n_users) * (horizon - signup) / horizon

    # Demographics are noisy read-outs of taste: they help feature-aware models, but only a bit.
    zu = standardise(factors) / np.sqrt(n_factors)
    age, country, device = (
        _draw_categorical(np.log(prior) + weight * zu @ rng.normal(0.0, 1.0, (n_factors, len(prior))), rng)
        for prior, weight in ((_AGE_PRIOR, 2.0), (_COUNTRY_PRIOR, 1.5), (_DEVICE_PRIOR, 1.0))
    )
    return Population(
        factors=factors,
        drift=drift,
        favourite_top=np.argmax(preference, axis=1),
        activity=activity,
        signup=signup,
        is_cold=is_cold,
        age_group=age,
        country=country,
        device=device,
    )


def affinity_scale(
    users: np.ndarray, items: np.ndarray, rng: np.random.Generator, n_pairs: int = 20_000
) -> tuple[float, float]:
    """Mean and std of u.v over random pairs, so affinities can be used as z-scores."""
    a = rng.integers(0, len(users), n_pairs)
    b = rng.integers(0, len(items), n_pairs)
    aff = np.einsum("nk,nk->n", users[a], items[b])
    return float(aff.mean()), float(aff.std() + 1e-9)
