"""The shop's impression log: lists of items shown to users, with position, context and clicks.

Visits
------
A *visit* is a user drawn by activity (as sessions are), on a day drawn uniformly between her
sign-up and the end of the time line, at an hour of the day (UTC, the shop's clock) drawn from a
daily rhythm of her visit's device: phones peak in the evening and at lunch, desktops in office
hours, tablets in the evening (`visit_rhythm`). A visit happens on a page (home 45%, search 25%,
category 20%, similar 10%) and on a device: the user's own `device` attribute 85% of the time,
otherwise one of the other two. A visit is never before the user's sign-up.

Lists
-----
Each visit shows one list of `list_length` items, ranked like the session slates: 3 candidates per
slot drawn by popularity (a candidate not yet released at the visit is replaced by an item on sale
from the start, drawn by popularity too, so no item is shown before its release), then the
`list_length` best by `1.0 · z_aff + Gumbel noise` (Gumbel-top-k: a sample by taste without
replacement; a repeated candidate is ranked after every distinct one), best at position 0.

Clicks
------
Each shown item is clicked with probability

    sigmoid( BASE                               −4.0: overall click rate about 5%
             + 1.0 · z_aff                      drifted taste u(t) · v, standardised (as the shop's)
             + 0.5 · quality                    the item's hidden quality
             − 0.35 · log(1 + position)         position bias, 0-based
             + HOUR[hour band, department]      context x item attribute, table below
             + DEVICE[device, department]       context x item attribute, table below
             + PAGE[page]                       home 0, search +0.8, category −0.3, similar +0.4
             + AGE[age group, department]       user attribute x item attribute, table below
             + TIER[country] · (brand − 2) / 2  user attribute x item attribute: brand tier 0..4
           )

    HOUR         apparel  electronics  home  sports  beauty  books
    night 0-5       0.0      +0.8      −0.4   −0.6    −0.2   +0.3
    morning 6-11   −0.2      −0.3      +0.3   +0.7    +0.3   −0.5
    afternoon 12-17 +0.5     +0.1      +0.3   +0.1    +0.1   −0.5
    evening 18-23  −0.1      −0.3      −0.1   −0.4    +0.3   +0.8

    DEVICE       apparel  electronics  home  sports  beauty  books
    mobile         +0.5      −0.5      −0.4   +0.2    +0.5   −0.3
    desktop        −0.4      +0.7      +0.3   −0.1    −0.5   +0.1
    tablet         −0.1      −0.3      +0.5   −0.3    +0.1   +0.6

    AGE          apparel  electronics  home  sports  beauty  books
    18-24          +0.5      +0.4      −0.6   +0.3    +0.3   −0.4
    25-34          +0.2      +0.3      −0.1   +0.3    +0.1   −0.3
    35-44           0.0       0.0      +0.4    0.0     0.0   −0.1
    45-54          −0.2      −0.2      +0.3   −0.1     0.0   +0.3
    55+            −0.5      −0.4      +0.2   −0.4    −0.2   +0.7

    TIER (taste for premium brands)  US +0.4, GB +0.3, DE −0.5, FR +0.5, ES −0.6, IT +0.6,
                                     NL −0.3, SE 0.0: ±0.6 at the budget and premium ends

The context and attribute terms are interactions of a user or a context with an item attribute:
an id-only model cannot learn them (the same user at 11 pm on a phone is not the same user at
noon on a desktop, and a user id cannot say "likes premium brands" about a brand it never saw
with her). Position is confounded with taste (the best-ranked item comes first), as in a real log.

All draws are vectorised over visits; the only loop is over fixed-size chunks of lists, so memory
is a few arrays per row of the log (the large preset's 10M rows fit in well under a GB).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recforge.data.synthetic._world import DAY, DEVICES, N_TOP, Catalogue, Population, sigmoid

PAGES: tuple[str, ...] = ("home", "search", "category", "similar")
PAGE_PRIOR = np.array([0.45, 0.25, 0.2, 0.1])
OWN_DEVICE = 0.85
CANDIDATES_PER_SLOT = 3
RANK_TASTE = 1.0
DUPLICATE_PENALTY = 1e3

BASE = -4.0
W_AFFINITY = 1.0
W_QUALITY = 0.5
POSITION_BIAS = 0.35
HOUR_BANDS = ("night", "morning", "afternoon", "evening")  # 0-5, 6-11, 12-17, 18-23 UTC
# Rows follow HOUR_BANDS, DEVICES, AGE_GROUPS and COUNTRIES; columns follow TOP_CATEGORIES.
HOUR_EFFECT = np.array([
    [0.0, 0.8, -0.4, -0.6, -0.2, 0.3],
    [-0.2, -0.3, 0.3, 0.7, 0.3, -0.5],
    [0.5, 0.1, 0.3, 0.1, 0.1, -0.5],
    [-0.1, -0.3, -0.1, -0.4, 0.3, 0.8],
])  # fmt: skip
DEVICE_EFFECT = np.array([
    [0.5, -0.5, -0.4, 0.2, 0.5, -0.3],
    [-0.4, 0.7, 0.3, -0.1, -0.5, 0.1],
    [-0.1, -0.3, 0.5, -0.3, 0.1, 0.6],
])  # fmt: skip
PAGE_EFFECT = np.array([0.0, 0.8, -0.3, 0.4])
AGE_EFFECT = np.array([
    [0.5, 0.4, -0.6, 0.3, 0.3, -0.4],
    [0.2, 0.3, -0.1, 0.3, 0.1, -0.3],
    [0.0, 0.0, 0.4, 0.0, 0.0, -0.1],
    [-0.2, -0.2, 0.3, -0.1, 0.0, 0.3],
    [-0.5, -0.4, 0.2, -0.4, -0.2, 0.7],
])  # fmt: skip
TIER_EFFECT = np.array([0.4, 0.3, -0.5, 0.5, -0.6, 0.6, -0.3, 0.0])

# Rows of the candidate matrix per chunk (lists x candidates): bounds memory at ~100 MB.
_CHUNK_CANDIDATES = 1 << 21


def visit_rhythm() -> np.ndarray:
    """(devices, 24) probability of a visit's hour of day (UTC) given its device."""
    hour = np.arange(24)

    def bump(centre: float, width: float) -> np.ndarray:
        d = np.minimum(np.abs(hour - centre), 24 - np.abs(hour - centre))  # circular distance
        return np.exp(-0.5 * (d / width) ** 2)

    rhythm = np.stack([
        0.15 + 0.8 * bump(12.5, 1.5) + 2.0 * bump(21.0, 2.5) + 0.4 * bump(8.0, 1.0),  # mobile
        0.10 + 2.0 * bump(10.5, 2.5) + 1.5 * bump(15.0, 2.0) + 0.4 * bump(20.0, 2.0),  # desktop
        0.10 + 0.6 * bump(9.0, 2.0) + 2.0 * bump(20.5, 2.0),  # tablet
    ])  # fmt: skip
    assert rhythm.shape == (len(DEVICES), 24)
    return rhythm / rhythm.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Impressions:
    """One entry per shown item (N rows), in time order: by visit time, list, then position."""

    user: np.ndarray  # (N,) int32 user index
    item: np.ndarray  # (N,) int32 item index
    timestamp: np.ndarray  # (N,) int64 seconds since the start of the time line
    list: np.ndarray  # (N,) int32 list index, numbered in time order
    position: np.ndarray  # (N,) int16, 0-based
    page: np.ndarray  # (N,) int8 code into PAGES
    device: np.ndarray  # (N,) int8 code into DEVICES
    label: np.ndarray  # (N,) int8 click
    p_click: np.ndarray  # (N,) float32 true click probability (ground truth)
    affinity: np.ndarray  # (N,) float32 standardised drifted affinity z_aff (ground truth)


def _visits(
    n_lists: int, horizon: int, pop: Population, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(user, when, page, device) per visit, sorted by time."""
    user = rng.choice(len(pop.activity), n_lists, p=pop.activity / pop.activity.sum())
    own = pop.device[user]
    other = (own + rng.integers(1, len(DEVICES), n_lists)) % len(DEVICES)  # never the own device
    device = np.where(rng.random(n_lists) < OWN_DEVICE, own, other)
    page = rng.choice(len(PAGES), n_lists, p=PAGE_PRIOR)
    signup = pop.signup[user]
    day = (signup + rng.random(n_lists) * (horizon - signup)) // DAY
    cum = np.cumsum(visit_rhythm(), axis=1)[device]  # (n, 24)
    hour = np.minimum((rng.random(n_lists)[:, None] > cum).sum(axis=1), 23)
    when = (day * DAY + hour * 3600 + rng.integers(0, 3600, n_lists)).astype(np.int64)
    # The sign-up day before the sign-up hour: the same hour the next day keeps the rhythm.
    when = np.where(when < signup, when + DAY, when)
    when = np.clip(when, signup, horizon - 1)
    order = np.argsort(when, kind="stable")
    return user[order], when[order], page[order], device[order]


def _rank(
    cand: np.ndarray, z: np.ndarray, list_length: int, rng: np.random.Generator
) -> np.ndarray:
    """(m, L) column indices into the (m, C) candidates: Gumbel-top-L by taste, distinct first."""
    by_id = np.argsort(cand, axis=1, kind="stable")
    sorted_ids = np.take_along_axis(cand, by_id, axis=1)
    repeat_sorted = np.zeros(cand.shape, dtype=bool)
    repeat_sorted[:, 1:] = sorted_ids[:, 1:] == sorted_ids[:, :-1]
    repeat = np.empty_like(repeat_sorted)
    np.put_along_axis(repeat, by_id, repeat_sorted, axis=1)
    score = RANK_TASTE * z + rng.gumbel(0.0, 1.0, z.shape).astype(np.float32) - DUPLICATE_PENALTY * repeat
    best = np.argpartition(-score, list_length - 1, axis=1)[:, :list_length]  # (m, L) unordered
    order = np.argsort(-np.take_along_axis(score, best, axis=1), axis=1, kind="stable")
    return np.take_along_axis(best, order, axis=1)


def simulate_impressions(
    n_rows: int,
    list_length: int,
    horizon: int,
    cat: Catalogue,
    pop: Population,
    aff_mean: float,
    aff_std: float,
    rng: np.random.Generator,
) -> Impressions:
    """`n_rows` impressions (rounded up to whole lists), see the module docstring."""
    n_lists = -(-n_rows // list_length)
    n_cand = CANDIDATES_PER_SLOT * list_length
    user, when, page, device = _visits(n_lists, horizon, pop, rng)

    all_items = np.arange(len(cat.popularity))
    warm = np.flatnonzero(cat.release <= 0)  # on sale from the start
    cum_all = np.cumsum(cat.popularity) / cat.popularity.sum()
    cum_warm = np.cumsum(cat.popularity[warm]) / cat.popularity[warm].sum()
    item_factors = cat.factors.astype(np.float32)
    user_factors, user_drift = pop.factors.astype(np.float32), pop.drift.astype(np.float32)

    n = n_lists * list_length
    item = np.empty(n, dtype=np.int32)
    p_click = np.empty(n, dtype=np.float32)
    affinity = np.empty(n, dtype=np.float32)
    label = np.empty(n, dtype=np.int8)
    log_position = np.log1p(np.arange(list_length))[None, :]  # (1, L)
    band = (when // 3600 % 24 // 6).astype(np.intp)  # the time line starts at midnight UTC
    step = max(1, _CHUNK_CANDIDATES // n_cand)
    for lo in range(0, n_lists, step):
        hi = min(lo + step, n_lists)
        m = hi - lo
        u, t = user[lo:hi], when[lo:hi]
        cand = all_items[np.minimum(np.searchsorted(cum_all, rng.random((m, n_cand))), len(all_items) - 1)]
        late = cat.release[cand] > t[:, None]
        if late.any():
            cand[late] = warm[np.minimum(np.searchsorted(cum_warm, rng.random(int(late.sum()))), len(warm) - 1)]
        tau = (t / horizon - 0.5).astype(np.float32)[:, None]  # (m, 1)
        taste = user_factors[u] + tau * user_drift[u]  # (m, K)
        z = (np.matmul(item_factors[cand], taste[:, :, None])[..., 0] - aff_mean) / aff_std  # (m, C)
        cols = _rank(cand, z, list_length, rng)  # (m, L)
        shown = np.take_along_axis(cand, cols, axis=1)  # (m, L)
        z_shown = np.take_along_axis(z, cols, axis=1)
        top = cat.top[shown]
        logit = (
            BASE + W_AFFINITY * z_shown + W_QUALITY * cat.quality[shown] - POSITION_BIAS * log_position
            + HOUR_EFFECT[band[lo:hi, None], top] + DEVICE_EFFECT[device[lo:hi, None], top]
            + PAGE_EFFECT[page[lo:hi, None]] + AGE_EFFECT[pop.age_group[u][:, None], top]
            + TIER_EFFECT[pop.country[u][:, None]] * (cat.brand[shown] - 2) / 2
        )  # (m, L)  fmt: skip
        p = sigmoid(logit)
        rows = slice(lo * list_length, hi * list_length)
        item[rows] = shown.reshape(-1)
        p_click[rows] = p.reshape(-1)
        affinity[rows] = z_shown.reshape(-1)
        label[rows] = (rng.random(p.shape) < p).reshape(-1)
    return Impressions(
        user=np.repeat(user, list_length).astype(np.int32),
        item=item,
        timestamp=np.repeat(when, list_length),
        list=np.repeat(np.arange(n_lists, dtype=np.int32), list_length),
        position=np.tile(np.arange(list_length, dtype=np.int16), n_lists),
        page=np.repeat(page, list_length).astype(np.int8),
        device=np.repeat(device, list_length).astype(np.int8),
        label=label,
        p_click=p_click,
        affinity=affinity,
    )
