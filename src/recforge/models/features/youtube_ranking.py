"""`youtube_ranking`: the ranking network of YouTube's two-stage recommender (Covington, Adams &
Sargin 2016, "Deep Neural Networks for YouTube Recommendations", §4).

A ReLU tower over features of one (user u, candidate item i) pair, one logit out:

    x(u, i) = [ e_i,                       the candidate's item embedding            (D,)
                h_u,                       mean of e_j over u's training items j ≠ i (D,)
                φ(since(u, cat(i))), never time since u last met i's category    (3,), (1,)
                φ(count(u, i)),            u's previous events on i                  (3,)
                φ(pop(i)) ]                i's training events                       (3,)
    φ(x) = [x̃, x̃², √x̃],  x̃ = CDF of x over the training examples, in [0, 1)          (§4.1)
    logit = w · ReLU(… ReLU(W_1 x + b_1) …) + b

Deviations, all forced by our sources:
- "previous impressions": InteractionData has no impression log, so `count(u, i)` is the number
  of the user's earlier events on the item (views, clicks, … are the impressions we can see).
- the category is the items table's full `category` path; an item without one (or a source
  without the column, or no items table at all) is its own category, so the feature becomes the
  time since the user last met that item.
- the history embedding leaves the candidate out, so a training positive never sees itself.
- training features are point-in-time (as of the positive's timestamp: counts and last times of
  strictly earlier events); serving features are as of the end of training. Both live in
  registered buffers, so `Recommender.load` (which rebuilds from zero timestamps) restores them.

Training is weighted logistic regression (§4.2): each training event is a positive weighted by
its engagement (`engagement_weights`: the event's weight, purchase > add_to_cart > click > view,
or the rating), with `n_negatives` items sampled uniformly from the user's unseen items at unit
weight. The learned odds e^logit then estimate the expected engagement of the impression.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn

from recforge.data.errors import DataError
from recforge.data.interactions import InteractionData
from recforge.data.schema import EVENTS
from recforge.models.base import Batch, Family, ModelConfig, RecommenderNetwork
from recforge.models.layers import init_embedding_from_vectors
from recforge.training.samplers import Positives, shuffled_chunks, uniform_negatives

# Positives are drawn for this many rows at once (one sampler call per many batches).
_DRAW_ROWS = 1 << 16
# φ's three columns per continuous feature
_PHI = 3
DEFAULT_EVENT_WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}
_WEIGHTED_EVENTS = tuple(e for e in EVENTS if e != "rating")


class YouTubeRankingConfig(ModelConfig):
    dim: int = Field(32, gt=0, description="item embedding size")
    layers: tuple[int, ...] = Field((128, 64), min_length=1, description="ReLU tower widths")
    n_negatives: int = Field(4, gt=0, description="uniform unseen negatives per positive")
    quantiles: int = Field(100, ge=2, description="quantile edges of the CDF normalisation")
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    freeze_item_vectors: bool = False

    @field_validator("event_weights")
    @classmethod
    def _known_positive_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(_WEIGHTED_EVENTS))
        if unknown:
            raise ValueError(f"youtube_ranking: event_weights has unknown events {unknown}; "
                             f"allowed {list(_WEIGHTED_EVENTS)} (rating rows are weighted by the rating)")
        bad = {k: v for k, v in weights.items() if not (np.isfinite(v) and v > 0)}
        if bad:
            raise ValueError(f"youtube_ranking: event_weights must be finite and > 0, got {bad}")
        return {**DEFAULT_EVENT_WEIGHTS, **weights}


# ------------------------------------------------------------------ engagement and the loss
def engagement_weights(
    data: InteractionData, config: YouTubeRankingConfig | Mapping[str, float] | None = None
) -> np.ndarray:
    """(N,) float32 engagement of each event, the positive weights of weighted logistic
    regression (Covington et al. 2016 §4.2, where it is watch time): `config.event_weights[event]`
    (defaults view 1 < click 2 < add_to_cart 4 < purchase 8), the rating for `rating` rows, and
    `value` when the split carries no event column. A weight that is not finite and > 0 (a zero
    rating, an event with no weight) is a `DataError` naming the rows."""
    if config is None:
        weights = dict(DEFAULT_EVENT_WEIGHTS)
    elif isinstance(config, Mapping):
        weights = YouTubeRankingConfig(event_weights=dict(config)).event_weights
    else:
        weights = config.event_weights
    value = np.asarray(data.value, dtype=np.float32)
    if data.event is None:
        out = value.copy()
    else:
        table = np.full(len(EVENTS) + 1, np.nan, dtype=np.float32)  # last slot: code -1 (unknown)
        for name, w in weights.items():
            table[EVENTS.index(name)] = w
        codes = np.asarray(data.event, dtype=np.int64)
        out = table[codes]
        is_rating = codes == EVENTS.index("rating")
        out[is_rating] = value[is_rating]
    bad = ~(np.isfinite(out) & (out > 0))
    if bad.any():
        rows = np.flatnonzero(bad)
        raise DataError(f"youtube_ranking: {len(rows)} event(s) have no positive engagement weight "
                        "(a rating <= 0, or an unknown event)", column="event" if data.event is not None else "value",
                        rows=rows[:10].tolist())  # fmt: skip
    return out


def weighted_logistic_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted logistic regression of Covington, Adams & Sargin 2016 §4.2: Σ w·ℓ / Σ w with
    ℓ = -y·log σ(z) - (1-y)·log(1-σ(z)), positives weighted by engagement and negatives by 1, so
    the odds e^z learned estimate the expected engagement (Σ T_i / (N - k) ≈ E[T] for a small
    click rate). (B,), (B,), (B,) -> scalar."""
    z = logits.float()
    loss = F.binary_cross_entropy_with_logits(z, labels.to(z.dtype), reduction="none")  # (B,)
    w = weights.to(z.dtype)
    return (loss * w).sum() / w.sum().clamp_min(torch.finfo(z.dtype).tiny)


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
class RankingState:
    """Everything the features read, as the network's buffers hold it: built from the training
    split by `ranking_state`, or taken back from a saved state_dict (`inputs_from_state`)."""

    category: torch.Tensor  # (I,) int64
    pair_keys: torch.Tensor  # (P,) int64 sorted u·I + i of the training pairs
    pair_counts: torch.Tensor  # (P,) float32 events on each pair
    cat_keys: torch.Tensor  # (Q,) int64 sorted u·C + c
    cat_since: torch.Tensor  # (Q,) float32 seconds from the last event in c to the end of training
    popularity: torch.Tensor  # (I,) float32 training events per item
    edges: torch.Tensor  # (3, K+1) float32 quantile edges of since, count, popularity


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


def ranking_state(train: InteractionData, category: torch.Tensor, quantiles: int) -> RankingState:
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
    edges = np.stack([quantile_edges(since[never == 0], quantiles), quantile_edges(count, quantiles),
                      quantile_edges(pop, quantiles)])  # fmt: skip
    t = torch.as_tensor
    return RankingState(category.clone(), t(pair_keys, dtype=torch.int64), t(pair_counts, dtype=torch.float32),
                        t(cat_keys, dtype=torch.int64), t(cat_since), t(pop), t(edges))  # fmt: skip


def _sparse_lookup(keys: torch.Tensor, values: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """values at `query` among sorted `keys` (0 where absent), and whether present. Any shape."""
    if len(keys) == 0:
        zeros = torch.zeros(query.shape, device=query.device)
        return zeros, zeros.bool()
    at = torch.searchsorted(keys, query.contiguous()).clamp_max(len(keys) - 1)
    hit = keys[at] == query
    return torch.where(hit, values[at], torch.zeros_like(values[at])), hit


# ------------------------------------------------------------------ the network
class YouTubeRanker(RecommenderNetwork):
    def __init__(self, n_users: int, n_items: int, config: YouTubeRankingConfig, state: RankingState) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        for name in RankingState.__dataclass_fields__:
            self.register_buffer(name, getattr(state, name))
        self.n_categories = int(state.category.max()) + 1 if n_items else 0
        self.item = nn.Embedding(n_items, config.dim)
        nn.init.normal_(self.item.weight, std=0.1)
        h = config.layers[0]
        # the first layer split by what each part depends on, so `score_all` computes the item
        # and user parts once and broadcasts them over the (user, item) grid
        self.item_in = nn.Linear(config.dim + _PHI, h)  # [e_i, φ(pop)]
        self.user_in = nn.Linear(config.dim, h, bias=False)  # h_u
        self.pair_in = nn.Linear(2 * _PHI + 1, h, bias=False)  # [φ(since), never, φ(count)]
        tower: list[nn.Module] = []
        for a, b in zip(config.layers[:-1], config.layers[1:]):
            tower += [nn.Linear(a, b), nn.ReLU()]
        self.tower = nn.Sequential(*tower)
        self.out = nn.Linear(config.layers[-1], 1)

    def history_sum(self, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) -> Σ e_j over each user's distinct training items (B, D), and their number (B,):
        the users' rows of the sorted pair keys, gathered ragged without a loop."""
        n = self.n_items
        starts = torch.searchsorted(self.pair_keys, user * n)  # (B,)
        lens = torch.searchsorted(self.pair_keys, (user + 1) * n) - starts  # (B,)
        offsets = torch.cumsum(lens, 0) - lens  # (B,)
        total = int(lens.sum())
        within = torch.arange(total, device=user.device) - offsets.repeat_interleave(lens, output_size=total)
        flat = starts.repeat_interleave(lens, output_size=total) + within  # (Σ,)
        items = self.pair_keys[flat] - (user * n).repeat_interleave(lens, output_size=total)  # (Σ,)
        return F.embedding_bag(items, self.item.weight, offsets, mode="sum"), lens.to(self.item.weight.dtype)

    def logits(self, user_part: torch.Tensor, item_part: torch.Tensor, item_emb: torch.Tensor,
               in_hist: torch.Tensor, n_hist: torch.Tensor, count: torch.Tensor, since: torch.Tensor,
               never: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """Broadcastable parts of one grid: user_part W_h·Σe (…, H), item_part (…, H), item_emb
        W_h·e_i (…, H); in_hist, n_hist, count, since, never (…,) -> logits (…,)."""
        # h_u leaves the candidate out: (Σ e_j - [i ∈ hist]·e_i) / (n - [i ∈ hist])
        denom = (n_hist - in_hist).clamp_min(1.0)  # (…,)
        hist = (user_part - in_hist.unsqueeze(-1) * item_emb) / denom.unsqueeze(-1)  # (…, H)
        pair = torch.cat([phi(since, self.edges[0]) * (1 - never).unsqueeze(-1), never.unsqueeze(-1),
                          phi(count, self.edges[1])], dim=-1)  # (…, 7)  # fmt: skip
        h = F.relu(hist + item_part + self.pair_in(pair))  # (…, H)
        return self.out(self.tower(h)).squeeze(-1)  # (…,)

    def _item_part(self, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.item(item)  # (…, D)
        part = self.item_in(torch.cat([e, phi(self.popularity[item], self.edges[2])], dim=-1))  # (…, H)
        return part, self.user_in(e)

    def pair_logits(self, user: torch.Tensor, item: torch.Tensor, count: torch.Tensor, since: torch.Tensor,
                    never: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """(B,) pairs with their (count, since, never) features -> (B,) logits."""
        s, n = self.history_sum(user)  # (B, D), (B,)
        _, in_hist = _sparse_lookup(self.pair_keys, self.pair_counts, user * self.n_items + item)
        item_part, item_emb = self._item_part(item)
        return self.logits(self.user_in(s), item_part, item_emb, in_hist.to(s.dtype), n, count, since, never)

    def serving_features(self, user: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(count, since, never, in_hist) as of the end of training, for broadcastable user/item."""
        count, in_hist = _sparse_lookup(self.pair_keys, self.pair_counts, user * self.n_items + item)
        since, has = _sparse_lookup(self.cat_keys, self.cat_since, user * self.n_categories + self.category[item])
        return count, since, (~has).to(since.dtype), in_hist.to(since.dtype)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:  # (B,), (B,) -> (B,)
        count, since, never, in_hist = self.serving_features(user, item)
        s, n = self.history_sum(user)
        item_part, item_emb = self._item_part(item)
        return self.logits(self.user_in(s), item_part, item_emb, in_hist, n, count, since, never)

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        s, n = self.history_sum(user)  # (B, D), (B,)
        user_part = self.user_in(s)[:, None]  # (B, 1, H)
        b, width = len(user), self.item_in.out_features
        chunk = max(1, (1 << 22) // max(b * width, 1))
        out = []
        for start in range(0, self.n_items, chunk):
            items = torch.arange(start, min(start + chunk, self.n_items), device=user.device)  # (C,)
            count, since, never, in_hist = self.serving_features(user[:, None], items[None, :])  # (B, C) each
            item_part, item_emb = self._item_part(items)  # (C, H) each
            out.append(self.logits(user_part, item_part[None], item_emb[None], in_hist, n[:, None],
                                   count, since, never))  # (B, C)  # fmt: skip
        return torch.cat(out, dim=1)  # (B, I)

    def item_embeddings(self) -> torch.Tensor:
        return self.item.weight


def build(config: YouTubeRankingConfig, train: InteractionData, item_vectors=None) -> YouTubeRanker:
    """`item_vectors`: `item_content`'s (n_items,) int64 category codes; or float (n_items, F)
    vectors to start the item embeddings (every item then its own category); or a
    `RankingState` from a saved model (`Recommender.load`); or None."""
    vectors = None
    if isinstance(item_vectors, RankingState):
        state = item_vectors
    else:
        category = torch.arange(train.n_items, dtype=torch.int64)
        if isinstance(item_vectors, torch.Tensor) and not torch.is_floating_point(item_vectors):
            if item_vectors.dim() != 1 or len(item_vectors) != train.n_items:
                raise ValueError(f"youtube_ranking: item categories have shape {tuple(item_vectors.shape)}; expected "
                                 f"({train.n_items},) from youtube_ranking.item_content")  # fmt: skip
            category = item_vectors.to(torch.int64)
        elif isinstance(item_vectors, torch.Tensor):
            vectors = item_vectors
        elif item_vectors is not None:
            raise TypeError(f"youtube_ranking: item_vectors must be category codes, float vectors or None, "
                            f"got {type(item_vectors).__name__}")  # fmt: skip
        state = ranking_state(train, category, config.quantiles)
    net = YouTubeRanker(train.n_users, train.n_items, config, state)
    if vectors is not None:
        init_embedding_from_vectors(net.item, vectors, freeze=config.freeze_item_vectors)
    return net


def inputs_from_state(state: dict[str, torch.Tensor]) -> RankingState:
    """The feature buffers a saved model was trained with, so `load` sizes them as they were."""
    return RankingState(**{name: state[name] for name in RankingState.__dataclass_fields__})


def batches(network: YouTubeRanker, train: InteractionData, config: YouTubeRankingConfig, batch_size: int,
            generator: torch.Generator) -> Iterator[Batch]:  # fmt: skip
    """Every training event a positive (weight: its engagement), `n_negatives` uniform unseen items
    per positive (weight 1), all with their features as of the positive's timestamp. A batch holds
    `batch_size` positives and their negatives."""
    category = network.category.cpu().numpy()
    n_items, n_cats = np.int64(train.n_items), np.int64(category.max() + 1)
    pairs = Timeline(train.user_idx * n_items + train.item_idx, train.timestamp)
    cats = Timeline(train.user_idx * n_cats + category[train.item_idx], train.timestamp)
    weight = torch.as_tensor(engagement_weights(train, config))  # (N,)
    user = torch.as_tensor(train.user_idx, dtype=torch.int64)
    item = torch.as_tensor(train.item_idx, dtype=torch.int64)
    ts = torch.as_tensor(train.timestamp, dtype=torch.int64)
    positives, k = Positives(train.csr), config.n_negatives
    for idx in shuffled_chunks(len(user), batch_size, generator, _DRAW_ROWS):  # (R,)
        u, i, t, w = user[idx], item[idx], ts[idx], weight[idx]
        j = uniform_negatives(u, positives, k, generator)  # (R, k)
        uu = torch.cat([u[:, None], u[:, None].expand(-1, k)], 1)  # (R, 1+k)
        ii = torch.cat([i[:, None], j], 1)  # (R, 1+k)
        tt = t[:, None].expand(-1, 1 + k)
        feats = training_features(train, category, uu.numpy().ravel(), ii.numpy().ravel(),
                                  tt.numpy().ravel(), pairs, cats)  # fmt: skip
        count, since, never = (torch.from_numpy(f).view(-1, 1 + k) for f in feats)  # (R, 1+k) each
        label = torch.zeros(len(idx), 1 + k)
        label[:, 0] = 1
        ww = torch.cat([w[:, None], torch.ones(len(idx), k)], 1)
        for b in range(0, len(idx), batch_size):
            s = slice(b, b + batch_size)
            yield {"user": uu[s].reshape(-1), "item": ii[s].reshape(-1), "label": label[s].reshape(-1),
                   "weight": ww[s].reshape(-1), "count": count[s].reshape(-1), "since": since[s].reshape(-1),
                   "never": never[s].reshape(-1)}  # fmt: skip


def loss(network: YouTubeRanker, batch: Batch, config: YouTubeRankingConfig) -> torch.Tensor:
    z = network.pair_logits(batch["user"], batch["item"], batch["count"], batch["since"], batch["never"])  # (B,)
    return weighted_logistic_loss(z, batch["label"], batch["weight"])


FAMILY = Family(
    name="youtube_ranking", config=YouTubeRankingConfig, build=build, batches=batches, loss=loss,
    paper="Covington, Adams & Sargin 2016 (YouTube DNN, ranking)", item_content=item_content,
    inputs_from_state=inputs_from_state,
)
