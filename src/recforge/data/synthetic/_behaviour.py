"""Sessions of the synthetic shop: who shops when, which items they look at, and the funnel.

Everything is vectorised over sessions; the only Python loops are over session *steps* (at most
MAX_SESSION_LENGTH) and over fixed-size chunks of sessions to bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recforge.data.synthetic._world import DAY, Catalogue, Population, sigmoid

MEAN_SESSION_LENGTH = 5.0
MAX_SESSION_LENGTH = 30
SLATE_SIZE = 48  # items the shop shows per step, drawn by popularity
NEW_ARRIVALS = 6  # extra slots for cold (recently released) items
NOVELTY_BONUS = 1.0
TASTE_WEIGHT = 2.0  # how strongly the shopper picks by affinity within the slate
P_SUCCESSOR = 0.55  # chance the next item is one of the current item's successors
SUCCESSOR_WEIGHTS = np.array([0.6, 0.3, 0.1])
P_RATE_PURCHASE = 0.5
P_RATE_VIEW = 0.05
CHUNK = 16_384
# Shoppers mostly view items they already like (the slate pick); the funnel and the ratings are
# centred on the typical viewed affinity so that carts, purchases and stars stay realistic.
VIEWED_AFFINITY = 1.1

# Codes of recforge.data.schema.EVENTS.
VIEW, ADD_TO_CART, PURCHASE, RATING = 0, 2, 3, 4


@dataclass(frozen=True)
class Events:
    """Event arrays, one entry per interaction, in no particular order."""

    session: np.ndarray  # int64, sessions are numbered by start time
    user: np.ndarray  # int64
    item: np.ndarray  # int64
    timestamp: np.ndarray  # int64 seconds since the start of the time line
    event: np.ndarray  # int8 code into schema.EVENTS
    value: np.ndarray  # float64: the rating, or 1.0


def _session_users(n_sessions: int, users: Population, rng: np.random.Generator) -> np.ndarray:
    """Every user gets a first session; the rest follow activity (heavy users shop more)."""
    n_users = len(users.activity)
    extra = rng.choice(n_users, max(n_sessions - n_users, 0), p=users.activity / users.activity.sum())
    return np.concatenate([np.arange(n_users), extra])


def _pick_fresh(
    taste: np.ndarray,
    start: np.ndarray,
    items: Catalogue,
    item_factors: np.ndarray,
    aff_mean: float,
    aff_std: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """A slate per session (popular items + new arrivals); the shopper picks by taste.

    taste (n, K) float32 and start (n,) are per session; returns (n,) item indices.
    """
    old = np.flatnonzero(~items.is_cold)
    cold = np.flatnonzero(items.is_cold)
    cum_pop = np.cumsum(items.popularity[old])
    cum_pop /= cum_pop[-1]
    out = np.empty(len(taste), dtype=np.int64)
    for lo in range(0, len(taste), CHUNK):
        hi = min(lo + CHUNK, len(taste))
        n = hi - lo
        slate = old[np.minimum(np.searchsorted(cum_pop, rng.random((n, SLATE_SIZE))), len(old) - 1)]
        bonus = np.zeros((n, SLATE_SIZE), dtype=np.float32)
        if len(cold):
            new = cold[rng.integers(0, len(cold), (n, NEW_ARRIVALS))]
            released = items.release[new] <= start[lo:hi, None]
            slate = np.concatenate([slate, new], axis=1)
            new_bonus = np.where(released, NOVELTY_BONUS, -np.inf).astype(np.float32)
            bonus = np.concatenate([bonus, new_bonus], axis=1)
        aff = np.einsum("nk,nck->nc", taste[lo:hi], item_factors[slate])  # (n, slate)
        score = TASTE_WEIGHT * (aff - aff_mean) / aff_std + bonus + rng.gumbel(size=slate.shape)
        out[lo:hi] = slate[np.arange(n), np.argmax(score, axis=1)]
    return out


def simulate_sessions(
    n_sessions: int,
    horizon: int,
    items: Catalogue,
    users: Population,
    aff_mean: float,
    aff_std: float,
    rng: np.random.Generator,
) -> Events:
    """Draw sessions, walk them step by step, then run the view -> cart -> purchase funnel."""
    user = _session_users(n_sessions, users, rng)
    n_sessions = len(user)
    # Sessions end well before the horizon (30 steps x at most ~10 minutes each).
    latest = horizon - DAY // 4
    start = users.signup[user] + (rng.random(n_sessions) * (latest - users.signup[user])).astype(np.int64)
    order = np.argsort(start, kind="stable")
    user, start = user[order], start[order]

    tau = start / horizon
    taste = (users.factors[user] + (tau - 0.5)[:, None] * users.drift[user]).astype(np.float32)  # (S, K)
    item_factors = items.factors.astype(np.float32)
    length = np.minimum(rng.geometric(1.0 / MEAN_SESSION_LENGTH, n_sessions), MAX_SESSION_LENGTH)
    max_len = int(length.max())

    seq = np.full((n_sessions, max_len), -1, dtype=np.int64)  # (S, L) item per step
    seq[:, 0] = _pick_fresh(taste, start, items, item_factors, aff_mean, aff_std, rng)
    for step in range(1, max_len):
        active = np.flatnonzero(length > step)
        prev = seq[active, step - 1]
        which = rng.choice(len(SUCCESSOR_WEIGHTS), len(active), p=SUCCESSOR_WEIGHTS)
        nxt = items.successors[prev, which]
        follow = (rng.random(len(active)) < P_SUCCESSOR) & (items.release[nxt] <= start[active])
        fresh = active[~follow]
        nxt[~follow] = _pick_fresh(taste[fresh], start[fresh], items, item_factors, aff_mean, aff_std, rng)
        seq[active, step] = nxt

    valid = np.arange(max_len)[None, :] < length[:, None]  # (S, L)
    s_idx, k_idx = np.nonzero(valid)
    item = seq[s_idx, k_idx]
    aff = np.einsum("nk,nk->n", taste[s_idx], item_factors[item])
    aff_z = (aff - aff_mean) / aff_std - VIEWED_AFFINITY
    price_z = (np.log(items.price) - np.log(items.price).mean()) / np.log(items.price).std()

    def _grid(flat: np.ndarray) -> np.ndarray:  # (n,) per step -> (S, L), False off the end
        out = np.zeros((n_sessions, max_len), dtype=bool)
        out[s_idx, k_idx] = flat
        return out

    q = items.quality[item]
    carted = rng.random(len(item)) < sigmoid(-2.6 + 1.2 * aff_z + 0.3 * q - 0.4 * price_z[item])
    bought = carted & (rng.random(len(item)) < sigmoid(-0.5 + 0.8 * aff_z + 0.5 * q - 0.3 * price_z[item]))
    rated = np.where(bought, rng.random(len(item)) < P_RATE_PURCHASE, rng.random(len(item)) < P_RATE_VIEW)
    stars = np.clip(np.rint(3.3 + 1.2 * aff_z + 0.6 * q + rng.normal(0.0, 0.7, len(item))), 1, 5)

    # Strictly increasing times within a session: views >= 8 s apart, the cart 1..6 s after its
    # view, purchases at checkout after the last step, ratings a minute or more after that.
    gaps = 8 + np.minimum(rng.exponential(40.0, (n_sessions, max_len)), 600).astype(np.int64)
    gaps[:, 0] = 0
    view_t = start[:, None] + np.cumsum(gaps, axis=1)  # (S, L)
    end_t = view_t[np.arange(n_sessions), length - 1] + 10
    bought_g, rated_g = _grid(bought), _grid(rated)
    buy_t = end_t[:, None] + 2 * (np.cumsum(bought_g, axis=1) - 1)
    rate_t = (end_t + 2 * bought_g.sum(axis=1) + 60)[:, None] + 30 * (np.cumsum(rated_g, axis=1) - 1)

    t_view = view_t[s_idx, k_idx]
    parts = [
        (np.ones(len(item), bool), t_view, VIEW, 1.0),
        (carted, t_view + rng.integers(1, 7, len(item)), ADD_TO_CART, 1.0),
        (bought, buy_t[s_idx, k_idx], PURCHASE, 1.0),
        (rated, rate_t[s_idx, k_idx], RATING, stars),
    ]
    sess = np.concatenate([s_idx[m] for m, *_ in parts])
    return Events(
        session=sess,
        user=user[sess],
        item=np.concatenate([item[m] for m, *_ in parts]),
        timestamp=np.concatenate([t[m] for m, t, *_ in parts]).astype(np.int64),
        event=np.concatenate([np.full(int(m.sum()), code, np.int8) for m, _, code, _ in parts]),
        value=np.concatenate([np.broadcast_to(np.asarray(v, float), item.shape)[m] for m, *_, v in parts]),
    )
