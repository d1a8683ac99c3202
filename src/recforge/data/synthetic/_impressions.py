"""The shop's impression log: lists of items shown to users, with position, context and clicks.

A *visit* is a user (drawn by activity) at a uniform time between sign-up and the end of the time
line, on a page (home, search, category, similar) and a device (the user's own 80% of the time).
The shop shows `list_length` items: drawn by popularity, with an item released after the visit
replaced by one on sale from the start (drawn by popularity too). Each shown item is clicked with probability

    sigmoid( BASE                                      base rate: overall CTR around 5%
             + 1.0 · z_aff                             drifted taste u(t) · v, standardised
             + 0.5 · quality
             − 0.35 · log(1 + position)                position bias
             + 0.8 · HOUR[hour band, department]       e.g. electronics at night, books in the evening
             + 0.7 · DEVICE[device, department]        mobile favours apparel and beauty, desktop electronics
             + PAGE[page]                              search +0.6, similar +0.3, home 0, category −0.2
             + 0.6 · AGE[age group, department]        a user attribute x an item attribute
             + 0.5 · (brand tier − 2) / 2 · RICH[country] )

so user attributes, item attributes and context all carry signal that ids alone do not: an id-only
model cannot tell the same user at 11 pm on a phone from her at noon on a desktop. The effect
tables are drawn once from a fixed seed (they are part of the world, not of a shop's seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recforge.data.synthetic._world import DEVICES, N_TOP, Catalogue, Population, sigmoid

PAGES = ("home", "search", "category", "similar")
PAGE_EFFECT = np.array([0.0, 0.6, -0.2, 0.3])
_PAGE_PRIOR = np.array([0.45, 0.25, 0.2, 0.1])
BASE = -3.2
OWN_DEVICE = 0.8
HOUR_BANDS = 4  # night 0-5, morning 6-11, afternoon 12-17, evening 18-23

_effects = np.random.default_rng(20240101)
HOUR_EFFECT = _effects.normal(0.0, 1.0, (HOUR_BANDS, N_TOP))  # (bands, departments)
DEVICE_EFFECT = _effects.normal(0.0, 1.0, (len(DEVICES), N_TOP))
AGE_EFFECT = _effects.normal(0.0, 1.0, (5, N_TOP))
RICH = _effects.normal(0.0, 1.0, 8)  # per country: taste for premium brands


@dataclass(frozen=True)
class Impressions:
    table: pd.DataFrame
    p_click: np.ndarray  # (N,) the true click probability of each row (ground truth)


def simulate_impressions(
    n_rows: int,
    list_length: int,
    horizon: int,
    epoch: int,
    cat: Catalogue,
    pop: Population,
    aff_mean: float,
    aff_std: float,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    rng: np.random.Generator,
    chunk_lists: int = 200_000,
) -> Impressions:
    """`n_rows` impressions (rounded up to whole lists), generated in chunks of lists so memory
    stays a few arrays per row."""
    n_lists = -(-n_rows // list_length)
    activity = pop.activity / pop.activity.sum()
    pop_p = cat.popularity / cat.popularity.sum()
    warm = np.flatnonzero(cat.release <= 0)  # on sale from the start
    warm_p = cat.popularity[warm] / cat.popularity[warm].sum()
    parts, probs = [], []
    for start in range(0, n_lists, chunk_lists):
        m = min(chunk_lists, n_lists - start)
        user = rng.choice(len(activity), m, p=activity)  # (m,)
        when = (pop.signup[user] + rng.random(m) * (horizon - pop.signup[user])).astype(np.int64)
        page = rng.choice(len(PAGES), m, p=_PAGE_PRIOR)
        other = rng.integers(0, len(DEVICES), m)
        device = np.where(rng.random(m) < OWN_DEVICE, pop.device[user], other)
        item = rng.choice(len(pop_p), (m, list_length), p=pop_p)  # (m, L)
        late = cat.release[item] > when[:, None]
        if late.any():  # an item not yet released is replaced by one on sale from the start
            rows, cols = np.nonzero(late)
            item[rows, cols] = rng.choice(warm, len(rows), p=warm_p)
        tau = (when / horizon - 0.5)[:, None]  # (m, 1)
        taste = pop.factors[user] + tau * pop.drift[user]  # (m, K)
        z = (np.einsum("mk,mlk->ml", taste, cat.factors[item]) - aff_mean) / aff_std  # (m, L)
        position = np.broadcast_to(np.arange(list_length), (m, list_length))
        top = cat.top[item]  # (m, L)
        hour = (((when + epoch) // 3600) % 24)[:, None]
        band = hour // 6
        country = pop.country[user][:, None]
        logit = (
            BASE + 1.0 * z + 0.5 * cat.quality[item] - 0.35 * np.log1p(position)
            + 0.8 * HOUR_EFFECT[band, top] + 0.7 * DEVICE_EFFECT[device[:, None], top]
            + PAGE_EFFECT[page][:, None] + 0.6 * AGE_EFFECT[pop.age_group[user][:, None], top]
            + 0.5 * (cat.brand[item] - 2) / 2 * RICH[country]
        )  # fmt: skip
        p = sigmoid(logit)
        label = (rng.random(p.shape) < p).astype(np.int8)
        n = m * list_length
        parts.append(pd.DataFrame({
            "user": np.repeat(user, list_length).astype(np.int32),
            "item": item.reshape(-1).astype(np.int32),
            "timestamp": np.repeat(when + epoch, list_length),
            "list_id": np.repeat(np.arange(start, start + m, dtype=np.int64), list_length),
            "position": position.reshape(-1).astype(np.int16),
            "page": np.repeat(page, list_length).astype(np.int8),
            "device": np.repeat(device, list_length).astype(np.int8),
            "label": label.reshape(-1),
        }))  # fmt: skip
        probs.append(p.reshape(-1).astype(np.float32))
        assert len(parts[-1]) == n
    empty = pd.DataFrame({c: np.zeros(0, t) for c, t in (("user", np.int32), ("item", np.int32), ("timestamp", np.int64),
                          ("list_id", np.int64), ("position", np.int16), ("page", np.int8), ("device", np.int8),
                          ("label", np.int8))})  # fmt: skip
    frame = pd.concat(parts, ignore_index=True) if parts else empty
    p_click = np.concatenate(probs) if probs else np.zeros(0, np.float32)
    order = np.lexsort((frame["position"].to_numpy(), frame["list_id"].to_numpy(), frame["timestamp"].to_numpy()))
    frame, p_click = frame.iloc[order].reset_index(drop=True), p_click[order]
    table = pd.DataFrame({
        "user_id": pd.Categorical.from_codes(frame["user"].to_numpy(), categories=pd.Index(user_ids.astype(str))),
        "item_id": pd.Categorical.from_codes(frame["item"].to_numpy(), categories=pd.Index(item_ids.astype(str))),
        "timestamp": frame["timestamp"].to_numpy(np.int64),
        "list_id": frame["list_id"].to_numpy(),
        "position": frame["position"].to_numpy(),
        "page": pd.Categorical.from_codes(frame["page"].to_numpy(), categories=list(PAGES)),
        "device": pd.Categorical.from_codes(frame["device"].to_numpy(), categories=list(DEVICES)),
        "label": frame["label"].to_numpy(),
    })  # fmt: skip
    return Impressions(table, p_click)
