"""`youtube_ranking`: the ranking network of YouTube's two-stage recommender (Covington, Adams &
Sargin 2016, "Deep Neural Networks for YouTube Recommendations", §4).

A ReLU tower over features of one (user u, candidate item i) pair, one logit out:

    x(u, i) = [ e_i,                       the candidate's item embedding            (D,)
                h_u,                       mean of e_j over u's training items j ≠ i (D,)
                φ(since(u, cat(i))), never time since u last met i's category    (3,), (1,)
                φ(count(u, i)),            u's previous events on i                  (3,)
                φ(shown(u, i)),            previous impressions of i to u            (3,)
                φ(pop(i)) ]                i's training events                       (3,)
    φ(x) = [x̃, x̃², √x̃],  x̃ = CDF of x over the training examples, in [0, 1)          (§4.1)
    logit = w · ReLU(… ReLU(W_1 x + b_1) …) + b

Deviations, all forced by our sources:
- "previous impressions": `shown(u, i)` counts the rows of the source's impression log
  (`data/03_primary/impressions.parquet`, the shop's; up to the end of training only) that
  showed i to u; a source without one (MovieLens) leaves it 0, and `count(u, i)`, the user's
  earlier events on the item (views, clicks, …), is then the only exposure signal.
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

This module holds the family: its config, the network, `build`, `batches`, `loss` and `FAMILY`.
The features (point-in-time lookups, serving state, CDF normalisation) are in
`models.features.ranking_features`; the engagement weights and the loss in `training.engagement`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.models.base import Batch, Family, ModelConfig, RecommenderNetwork
from recforge.models.features.ranking_features import (
    PHI_COLUMNS,
    RankingContent,
    RankingState,
    Timeline,
    impressions_until,
    phi,
    ranking_content,
    ranking_state,
    shown_before,
    sparse_lookup,
    training_features,
)
from recforge.models.layers import init_embedding_from_vectors
from recforge.training.engagement import DEFAULT_EVENT_WEIGHTS, EventWeights, engagement_weights, weighted_logistic_loss
from recforge.training.samplers import Positives, shuffled_chunks, uniform_negatives

# Positives are drawn for this many rows at once (one sampler call per many batches).
_DRAW_ROWS = 1 << 16


class YouTubeRankingConfig(ModelConfig):
    dim: int = Field(32, gt=0, description="item embedding size")
    layers: tuple[int, ...] = Field((128, 64), min_length=1, description="ReLU tower widths")
    n_negatives: int = Field(4, gt=0, description="uniform unseen negatives per positive")
    quantiles: int = Field(100, ge=2, description="quantile edges of the CDF normalisation")
    # checked by `training.engagement.check_event_weights`, completed with the defaults
    event_weights: EventWeights = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    freeze_item_vectors: bool = False


# ------------------------------------------------------------------ the network
class YouTubeRanker(RecommenderNetwork):
    def __init__(self, n_users: int, n_items: int, config: YouTubeRankingConfig, state: RankingState) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        for name in RankingState.__dataclass_fields__:
            self.register_buffer(name, getattr(state, name))
        self.n_categories = int(state.category.max()) + 1 if n_items else 0
        self.content: RankingContent | None = None  # the impression log for training; not state
        self.item = nn.Embedding(n_items, config.dim)
        nn.init.normal_(self.item.weight, std=0.1)
        h = config.layers[0]
        # the first layer split by what each part depends on, so `score_all` computes the item
        # and user parts once and broadcasts them over the (user, item) grid
        self.item_in = nn.Linear(config.dim + PHI_COLUMNS, h)  # [e_i, φ(pop)]
        self.user_in = nn.Linear(config.dim, h, bias=False)  # h_u
        self.pair_in = nn.Linear(3 * PHI_COLUMNS + 1, h, bias=False)  # [φ(since), never, φ(count), φ(shown)]
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
               never: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """Broadcastable parts of one grid: user_part W_h·Σe (…, H), item_part (…, H), item_emb
        W_h·e_i (…, H); in_hist, n_hist, count, since, never, shown (…,) -> logits (…,)."""
        # h_u leaves the candidate out: (Σ e_j - [i ∈ hist]·e_i) / (n - [i ∈ hist])
        denom = (n_hist - in_hist).clamp_min(1.0)  # (…,)
        hist = (user_part - in_hist.unsqueeze(-1) * item_emb) / denom.unsqueeze(-1)  # (…, H)
        pair = torch.cat([phi(since, self.edges[0]) * (1 - never).unsqueeze(-1), never.unsqueeze(-1),
                          phi(count, self.edges[1]), phi(shown, self.edges[3])], dim=-1)  # (…, 10)  # fmt: skip
        h = F.relu(hist + item_part + self.pair_in(pair))  # (…, H)
        return self.out(self.tower(h)).squeeze(-1)  # (…,)

    def _item_part(self, item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.item(item)  # (…, D)
        part = self.item_in(torch.cat([e, phi(self.popularity[item], self.edges[2])], dim=-1))  # (…, H)
        return part, self.user_in(e)

    def pair_logits(self, user: torch.Tensor, item: torch.Tensor, count: torch.Tensor, since: torch.Tensor,
                    never: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """(B,) pairs with their (count, since, never, shown) features -> (B,) logits."""
        s, n = self.history_sum(user)  # (B, D), (B,)
        _, in_hist = sparse_lookup(self.pair_keys, self.pair_counts, user * self.n_items + item)
        item_part, item_emb = self._item_part(item)
        return self.logits(self.user_in(s), item_part, item_emb, in_hist.to(s.dtype), n, count, since, never, shown)

    def serving_features(self, user: torch.Tensor, item: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(count, since, never, shown, in_hist) as of the end of training, for broadcastable
        user/item."""
        key = user * self.n_items + item
        count, in_hist = sparse_lookup(self.pair_keys, self.pair_counts, key)
        since, has = sparse_lookup(self.cat_keys, self.cat_since, user * self.n_categories + self.category[item])
        shown, _ = sparse_lookup(self.shown_keys, self.shown_counts, key)
        return count, since, (~has).to(since.dtype), shown, in_hist.to(since.dtype)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:  # (B,), (B,) -> (B,)
        count, since, never, shown, in_hist = self.serving_features(user, item)
        s, n = self.history_sum(user)
        item_part, item_emb = self._item_part(item)
        return self.logits(self.user_in(s), item_part, item_emb, in_hist, n, count, since, never, shown)

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        s, n = self.history_sum(user)  # (B, D), (B,)
        user_part = self.user_in(s)[:, None]  # (B, 1, H)
        b, width = len(user), self.item_in.out_features
        chunk = max(1, (1 << 22) // max(b * width, 1))
        out = []
        for start in range(0, self.n_items, chunk):
            items = torch.arange(start, min(start + chunk, self.n_items), device=user.device)  # (C,)
            count, since, never, shown, in_hist = self.serving_features(user[:, None], items[None, :])  # (B, C)
            item_part, item_emb = self._item_part(items)  # (C, H) each
            out.append(self.logits(user_part, item_part[None], item_emb[None], in_hist, n[:, None],
                                   count, since, never, shown))  # (B, C)  # fmt: skip
        return torch.cat(out, dim=1)  # (B, I)

    def item_embeddings(self) -> torch.Tensor:
        return self.item.weight


def build(config: YouTubeRankingConfig, train: InteractionData, item_vectors=None) -> YouTubeRanker:
    """`item_vectors`: `ranking_content`'s categories and impressions (what the pipelines hand
    it); or `item_content`'s (n_items,) int64 category codes alone; or float (n_items, F)
    vectors to start the item embeddings (every item then its own category); or a
    `RankingState` from a saved model (`Recommender.load`); or None."""
    vectors, content = None, None
    if isinstance(item_vectors, RankingContent):
        content, item_vectors = item_vectors, item_vectors.category
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
        state = ranking_state(train, category, config.quantiles, content)
    net = YouTubeRanker(train.n_users, train.n_items, config, state)
    net.content = content
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
    shown_log = impressions_until(network.content, train)
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
        feats = (*feats, shown_before(shown_log, train.n_items, uu.numpy().ravel(), ii.numpy().ravel(), tt.numpy().ravel()))
        count, since, never, shown = (torch.from_numpy(f).view(-1, 1 + k) for f in feats)  # (R, 1+k) each
        label = torch.zeros(len(idx), 1 + k)
        label[:, 0] = 1
        ww = torch.cat([w[:, None], torch.ones(len(idx), k)], 1)
        for b in range(0, len(idx), batch_size):
            s = slice(b, b + batch_size)
            yield {"user": uu[s].reshape(-1), "item": ii[s].reshape(-1), "label": label[s].reshape(-1),
                   "weight": ww[s].reshape(-1), "count": count[s].reshape(-1), "since": since[s].reshape(-1),
                   "never": never[s].reshape(-1), "shown": shown[s].reshape(-1)}  # fmt: skip


def loss(network: YouTubeRanker, batch: Batch, config: YouTubeRankingConfig) -> torch.Tensor:
    z = network.pair_logits(batch["user"], batch["item"], batch["count"], batch["since"], batch["never"],
                            batch["shown"])  # (B,)
    return weighted_logistic_loss(z, batch["label"], batch["weight"])


FAMILY = Family(
    name="youtube_ranking", config=YouTubeRankingConfig, build=build, batches=batches, loss=loss,
    paper="Covington, Adams & Sargin 2016 (YouTube DNN, ranking)", item_content=ranking_content,
    content_inputs=("items", "impressions", "user_map"), inputs_from_state=inputs_from_state,
)
