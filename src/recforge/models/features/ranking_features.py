"""The features of the `youtube_ranking` network (Covington, Adams & Sargin 2016, "Deep Neural
Networks for YouTube Recommendations", §4.1): what it knows of a (user u, item i) pair, and how
each continuous feature is normalised.

- Normalisation (§4.1): `cdf_normalise` maps x to x̃, its CDF over the training examples, in
  [0, 1) (`quantile_edges`); `phi` gives [x̃, x̃², √x̃].
- Point-in-time lookups: `Timeline` answers "how many events / when last, strictly before t"
  per (user, item) or (user, category) key; `training_features` gives the (count, since, never)
  of training examples as of their timestamp.
- Item content: `item_content`, each item's category code from the items table.
- Serving state: `RankingState`, the features as of the end of training (`ranking_state`), held
  in the network's buffers and read with `sparse_lookup`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from recforge.data.interactions import InteractionData

# φ's columns per continuous feature: x̃, x̃², √x̃
PHI_COLUMNS = 3


# ------------------------------------------------------------------ normalisation (§4.1)
def cdf_normalise(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """x̃ = the cumulative distribution of x, linearly interpolated between the K+1 quantile
    edges of its training values (Covington et al. 2016 §4.1); edge k sits at level k/(K+1), so
    x̃ ∈ [0, K/(K+1)] ⊂ [0, 1). Any shape -> the same shape."""
    k_max = edges.shape[0] - 1
    x = x.to(edges.dtype).contiguous()
    k = torch.searchsorted(edges, x, right=True) - 1  # last edge <= x; -1 below the minimum
    kc = k.clamp(0, k_max - 1)
    lo, hi = edges[kc], edges[kc + 1]
    # inside [e_k, e_{k+1}) with k < K the edges differ (k is the last edge <= x < e_{k+1})
    frac = torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-30), torch.zeros_like(x)).clamp(0, 1)
    v = (kc.to(x.dtype) + frac) / (k_max + 1)
    v = torch.where(k < 0, torch.zeros_like(v), v)
    return torch.where(k >= k_max, torch.full_like(v, k_max / (k_max + 1)), v)


def phi(x: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """(...,) -> (..., 3): [x̃, x̃², √x̃] (§4.1: super- and sub-linear powers of each feature)."""
    t = cdf_normalise(x, edges)
    return torch.stack([t, t * t, t.sqrt()], dim=-1)


def quantile_edges(values: np.ndarray, quantiles: int) -> np.ndarray:
    """(K+1,) float32 quantiles at levels 0, 1/K, …, 1 of `values` (zeros when there are none)."""
    if len(values) == 0:
        return np.zeros(quantiles + 1, dtype=np.float32)
    return np.quantile(np.asarray(values, dtype=np.float64), np.linspace(0, 1, quantiles + 1)).astype(np.float32)


# ------------------------------------------------------------------ point-in-time lookups
class Timeline:
    """Events grouped by an int64 key (user·I + item, or user·C + category), sorted by time:
    `count_before` and `last_before` answer "how many / when last, strictly before t" for whole
    arrays of (key, t) queries with one binary search each (groups and times are ranked into one
    sortable int64 key, so no per-group loop)."""

    def __init__(self, key: np.ndarray, ts: np.ndarray) -> None:
        self.groups, g = np.unique(key, return_inverse=True)  # (G,), (N,)
        self.times, t = np.unique(ts, return_inverse=True)  # (T,), (N,)
        self._span = np.int64(len(self.times) + 1)
        self.keys = np.sort(g.astype(np.int64) * self._span + t)  # (N,)
        self.starts = np.searchsorted(self.keys, np.arange(len(self.groups), dtype=np.int64) * self._span)  # (G,)
        self.sorted_times = self.times[self.keys % self._span]  # (N,)

    def _locate(self, key: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        g = np.minimum(np.searchsorted(self.groups, key), max(len(self.groups) - 1, 0))
        found = (self.groups[g] == key) if len(self.groups) else np.zeros(key.shape, bool)
        q = g * self._span + np.searchsorted(self.times, ts, side="left")  # times < ts rank below
        return g, found, np.searchsorted(self.keys, q, side="left")  # first event at or after ts

    def count_before(self, key: np.ndarray, ts: np.ndarray) -> np.ndarray:
        g, found, at = self._locate(key, ts)
        return np.where(found, at - self.starts[g], 0)

    def last_before(self, key: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(time of the last event of the group strictly before ts, whether there is one)."""
        g, found, at = self._locate(key, ts)
        has = found & (at > self.starts[g])
        return np.where(has, self.sorted_times[np.maximum(at - 1, 0)], 0), has


# ------------------------------------------------------------------ item content
def item_content(items: pd.DataFrame, item_map: pd.DataFrame) -> torch.Tensor:
    """(n_items,) int64 category code of each item in item_idx order, from the items table's
    `category` path; an item without a category (missing row, null, or no such column) gets a
    code of its own."""
    ids = item_map.sort_values("item_idx")["item_id"].astype("string").to_numpy()
    if "category" in items.columns:
        table = items.drop_duplicates("item_id").astype({"item_id": "string"}).set_index("item_id")
        cats = table["category"].astype("string").reindex(ids)
    else:
        cats = pd.Series(pd.NA, index=ids, dtype="string")
    codes, uniques = pd.factorize(cats, use_na_sentinel=True)
    missing = codes < 0
    codes[missing] = len(uniques) + np.arange(int(missing.sum()))
    return torch.as_tensor(codes, dtype=torch.int64)


@dataclass(frozen=True)
class RankingContent:
    """What the pipelines hand youtube_ranking (`ranking_content`): the items' category codes and
    the impression log over the id maps (rows of users or items outside the maps dropped)."""

    category: torch.Tensor  # (I,) int64
    impression_user: np.ndarray  # (M,) int64
    impression_item: np.ndarray  # (M,) int64
    impression_ts: np.ndarray  # (M,) int64


def ranking_content(items: pd.DataFrame, impressions: pd.DataFrame, user_map: pd.DataFrame,
                    item_map: pd.DataFrame) -> RankingContent:  # fmt: skip
    """`item_content`'s category codes and the impressions (user_id, item_id, timestamp) as map
    indices; an empty impressions table (a source without one) gives none."""
    category = item_content(items, item_map)
    missing = [c for c in ("user_id", "item_id", "timestamp") if c not in impressions.columns]
    if missing and len(impressions.columns):
        raise ValueError(f"youtube_ranking: the impressions table lacks column(s) {missing}; found {list(impressions.columns)}")
    if missing or len(impressions) == 0:
        empty = np.zeros(0, np.int64)
        return RankingContent(category, empty, empty, empty)
    users = pd.Index(user_map.sort_values("user_idx")["user_id"].astype("string"))
    items_ = pd.Index(item_map.sort_values("item_idx")["item_id"].astype("string"))
    u = users.get_indexer(impressions["user_id"].astype("string"))
    i = items_.get_indexer(impressions["item_id"].astype("string"))
    keep = (u >= 0) & (i >= 0)
    ts = impressions["timestamp"].to_numpy(dtype=np.int64)
    return RankingContent(category, u[keep].astype(np.int64), i[keep].astype(np.int64), ts[keep])


@dataclass(frozen=True)
class RankingState:
    """Everything the features read, as the network's buffers hold it: built from the training
    split by `ranking_state`, or taken back from a saved state_dict (`inputs_from_state`)."""

    category: torch.Tensor  # (I,) int64
    pair_keys: torch.Tensor  # (P,) int64 sorted u·I + i of the training pairs
    pair_counts: torch.Tensor  # (P,) float32 events on each pair
    cat_keys: torch.Tensor  # (Q,) int64 sorted u·C + c
    cat_since: torch.Tensor  # (Q,) float32 seconds from the last event in c to the end of training
    popularity: torch.Tensor  # (I,) float32 training events per item
    edges: torch.Tensor  # (4, K+1) float32 quantile edges of since, count, popularity, impressions
    shown_keys: torch.Tensor  # (R,) int64 sorted u·I + i of the pairs shown up to the end of training
    shown_counts: torch.Tensor  # (R,) float32 impressions of each


def training_features(train: InteractionData, category: np.ndarray, user: np.ndarray, item: np.ndarray,
                      ts: np.ndarray, pairs: Timeline | None = None, cats: Timeline | None = None):  # fmt: skip
    """Point-in-time (count, since, never) of (user, item) pairs as of `ts`, from the events of
    `train` strictly before it: (N,) float32 each."""
    n_items, n_cats = np.int64(train.n_items), np.int64(category.max() + 1)
    pairs = pairs or Timeline(train.user_idx * n_items + train.item_idx, train.timestamp)
    cats = cats or Timeline(train.user_idx * n_cats + category[train.item_idx], train.timestamp)
    count = pairs.count_before(user * n_items + item, ts)
    last, has = cats.last_before(user * n_cats + category[item], ts)
    since = np.where(has, ts - last, 0)
    return count.astype(np.float32), since.astype(np.float32), (~has).astype(np.float32)


def impressions_until(content: RankingContent | None, train: InteractionData) -> Timeline | None:
    """The impressions up to the end of `train` (none later: they would leak the future into the
    features) as a Timeline of u·I + i, or None when there are none."""
    if content is None or len(content.impression_ts) == 0:
        return None
    end = train.timestamp.max() if len(train) else np.iinfo(np.int64).min
    keep = content.impression_ts <= end
    if not keep.any():
        return None
    key = content.impression_user[keep] * np.int64(train.n_items) + content.impression_item[keep]
    return Timeline(key, content.impression_ts[keep])


def shown_before(shown: Timeline | None, n_items: int, user: np.ndarray, item: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """(N,) float32 impressions of each (user, item) strictly before ts (0 without a log)."""
    if shown is None:
        return np.zeros(len(user), np.float32)
    return shown.count_before(user * np.int64(n_items) + item, ts).astype(np.float32)


def ranking_state(train: InteractionData, category: torch.Tensor, quantiles: int,
                  content: RankingContent | None = None) -> RankingState:  # fmt: skip
    """The serving features as of the end of training, and the quantile edges of the training
    examples' point-in-time features (popularity: over the catalogue)."""
    cat = category.numpy()
    n_items, n_cats = np.int64(train.n_items), np.int64(cat.max() + 1)
    u, i, ts = train.user_idx, train.item_idx, train.timestamp
    pair_keys, pair_counts = np.unique(u * n_items + i, return_counts=True)
    ck = u * n_cats + cat[i]
    order = np.lexsort((ts, ck))
    cat_keys, first = np.unique(ck[order], return_index=True)
    last_idx = np.r_[first[1:], len(order)] - 1
    end = ts.max() if len(ts) else 0
    cat_since = (end - ts[order][last_idx]).astype(np.float32)
    count, since, never = training_features(train, cat, u, i, ts)
    pop = train.item_popularity.astype(np.float32)
    shown = impressions_until(content, train)
    seen = shown_before(shown, train.n_items, u, i, ts)
    edges = np.stack([quantile_edges(since[never == 0], quantiles), quantile_edges(count, quantiles),
                      quantile_edges(pop, quantiles), quantile_edges(seen, quantiles)])  # fmt: skip
    if shown is None:
        shown_keys, shown_counts = np.zeros(0, np.int64), np.zeros(0, np.float32)
    else:
        shown_keys = shown.groups  # every pair shown up to the end, and how often
        shown_counts = np.diff(np.r_[shown.starts, len(shown.keys)]).astype(np.float32)
    t = torch.as_tensor
    return RankingState(category.clone(), t(pair_keys, dtype=torch.int64), t(pair_counts, dtype=torch.float32),
                        t(cat_keys, dtype=torch.int64), t(cat_since), t(pop), t(edges),
                        t(shown_keys, dtype=torch.int64), t(shown_counts, dtype=torch.float32))  # fmt: skip


def sparse_lookup(keys: torch.Tensor, values: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """values at `query` among sorted `keys` (0 where absent), and whether present. Any shape."""
    if len(keys) == 0:
        zeros = torch.zeros(query.shape, device=query.device)
        return zeros, zeros.bool()
    at = torch.searchsorted(keys, query.contiguous()).clamp_max(len(keys) - 1)
    hit = keys[at] == query
    return torch.where(hit, values[at], torch.zeros_like(values[at])), hit
