"""`youtube_candidates`: YouTube's candidate-generation network (Covington, Adams & Sargin 2016,
"Deep Neural Networks for YouTube Recommendations", §3).

Extreme multiclass classification of the next watch: a user tower maps the average of the
embedded items of the user's watch history (the most recent `max_history` items strictly before
the training example's time) and the example age (end of training minus the example's time,
normalised to [0, 1]; 0 at serving) through a ReLU tower to u (D,); the logit of item j is
u · v_j + b_j with separate output embeddings V (n_items, D). Trained with a sampled softmax with
the logQ correction (Yi et al. 2019, "Sampling-bias-corrected neural modeling for large corpus
item recommendations"): `negatives: in_batch` uses the batch's other targets (drawn ∝ training
frequency), `sampled` draws `n_negatives` items per batch ∝ frequency^alpha. Serving is u · V over
all items, so `user_vectors` and `item_embeddings` allow nearest-neighbour retrieval.

§3.3's other inputs, when the source has them (`item_content(items, users, user_map, item_map)`,
read by the pipelines as the family's content): the "search tokens" as the embedded words of the
titles and texts of the user's history items (each item's hashed words averaged, then averaged
over the history: a bag of the words the user has been reading), and the demographics as one
embedding per attribute column of the users table (categories as they are, numbers in
`DEMOGRAPHIC_BUCKETS` quantile buckets; code 0 = unknown, which users unseen in training get).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from torch import nn

from recforge.encoders.text import item_documents
from recforge.models.base import ContentAndVectors, Family, ModelConfig, RecommenderNetwork
from recforge.models.content.tag_attention_cnn import TEXT_FIELDS, fold_tokens, hash_words
from recforge.models.layers import init_embedding_from_vectors, lookup
from recforge.training.losses import sampled_softmax
from recforge.training.samplers import popularity_log_probs, shuffled_batches

# A masked candidate's logit: finite, so a row whose candidates are all masked stays finite.
MASKED = -1e4
PAD = -1


class YouTubeCandidatesConfig(ModelConfig):
    dim: int = Field(64, gt=0)  # D of u and V
    embedding_dim: int = Field(64, gt=0)  # the watch-history embeddings
    layers: tuple[int, ...] = (128, 64)  # ReLU tower widths before the linear map to D
    max_history: int = Field(50, gt=0)
    negatives: Literal["in_batch", "sampled"] = "in_batch"
    n_negatives: int = Field(256, gt=0)  # sampled negatives per batch
    alpha: float = Field(0.75, ge=0)  # sampled negatives ∝ frequency^alpha
    logq: bool = True
    example_age: bool = True
    item_bias: bool = True
    freeze_item_vectors: bool = False
    # §3.3 inputs, used when the pipeline hands the family its `item_content` (0 / false: off)
    text_words: int = Field(16, ge=0)  # words of title + text read per item
    text_buckets: int = Field(1 << 15, ge=16)  # rows of the hashed word table
    text_dim: int = Field(32, gt=0)
    demographics: bool = True
    demographic_dim: int = Field(8, gt=0)
    # share of training examples whose demographics are hidden (code 0), so the unknown code —
    # what users unseen in training get — is learned too
    demographic_dropout: float = Field(0.1, ge=0, lt=1)


DEMOGRAPHIC_BUCKETS = 10  # quantile buckets of a numeric users column
MAX_CATEGORIES = 1000  # codes per categorical users column; rarer values share one


@dataclass(frozen=True)
class CandidateSide:
    """The §3.3 side inputs, rows aligned to the id maps: `words` (n_items, L) crc32 word ids of
    each item's title + text (0 pads), `demographics` (n_users, F) int64 codes per users column
    (0 unknown) and `sizes` (F,) the codes of each column (unknown included)."""

    words: torch.Tensor | None
    demographics: torch.Tensor | None
    sizes: torch.Tensor | None


def _codes(column: pd.Series) -> tuple[np.ndarray, int]:
    """(codes (n,) with 0 for a missing value, number of codes) of one users column."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        x = column.astype("float64").to_numpy()
        ok = np.isfinite(x)
        if not ok.any():
            return np.zeros(len(x), np.int64), 1
        edges = np.unique(np.quantile(x[ok], np.linspace(0, 1, DEMOGRAPHIC_BUCKETS + 1)[1:-1]))
        codes = np.where(ok, 1 + np.searchsorted(edges, np.where(ok, x, 0.0), side="right"), 0)
        return codes.astype(np.int64), len(edges) + 2
    values = column.astype("string")
    top = values.value_counts().index[:MAX_CATEGORIES]
    codes = pd.Index(top).get_indexer(values) + 1  # 0: missing or beyond the top values
    codes[values.isna().to_numpy()] = 0
    return codes.astype(np.int64), len(top) + 1


def item_content(items: pd.DataFrame, users: pd.DataFrame, user_map: pd.DataFrame, item_map: pd.DataFrame) -> CandidateSide:
    """The side inputs over the maps: hashed words of each item's title + text (none where the
    items table lacks the item or the columns) and the codes of each attribute column of the
    users table (every column but user_id; a user missing from it is unknown)."""
    ids = item_map.sort_values("item_idx")["item_id"].astype("string").reset_index(drop=True)
    table = items.drop_duplicates("item_id").astype({"item_id": "string"}).set_index("item_id")
    table = table.reindex(ids.to_numpy()).reset_index()
    fields = [f for f in TEXT_FIELDS if f in table.columns]
    words = hash_words(item_documents(table, fields) if len(table) and fields else [[] for _ in range(len(ids))])
    order = user_map.sort_values("user_idx")["user_id"].astype("string").to_numpy()
    attrs = users.drop_duplicates("user_id").astype({"user_id": "string"}).set_index("user_id").reindex(order)
    columns = [_codes(attrs[c]) for c in attrs.columns]
    demographics = np.stack([c for c, _ in columns], axis=1) if columns else np.zeros((len(order), 0), np.int64)
    sizes = torch.tensor([n for _, n in columns], dtype=torch.int64)
    return CandidateSide(words, torch.as_tensor(demographics, dtype=torch.int64), sizes)


def sorted_sequences(train) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The training rows ordered by (user, timestamp, row): (order (N,), sorted items (N,),
    sorted timestamps (N,), the start of each row's user run (N,))."""
    order = np.lexsort((np.arange(len(train)), train.timestamp, train.user_idx))  # (N,)
    users = train.user_idx[order]
    first = np.r_[True, users[1:] != users[:-1]]  # (N,)
    start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))  # (N,)
    return order, train.item_idx[order], train.timestamp[order], start


def history_windows(
    positions: torch.Tensor, items: torch.Tensor, times: torch.Tensor, start: torch.Tensor, length: int
) -> torch.Tensor:
    """(B,) positions in the sorted sequences -> (B, L) the user's most recent items strictly
    before each position's time (PAD elsewhere): the target and later items never leak in."""
    idx = positions[:, None] - length + torch.arange(length)  # (B, L)
    ok = idx >= start[positions][:, None]
    safe = idx.clamp_min(0)
    ok &= times[safe] < times[positions][:, None]  # ties with the target's time are not "before"
    return torch.where(ok, items[safe], torch.full_like(safe, PAD))  # (B, L)


def last_items(train, length: int) -> torch.Tensor:
    """(n_users, L) each user's `length` most recent training items (PAD where fewer)."""
    order, items, _, start = sorted_sequences(train)
    n = len(items)
    users = train.user_idx[order]
    end = np.zeros(train.n_users, dtype=np.int64)
    np.maximum.at(end, users, np.arange(1, n + 1))  # one past each user's last row
    first = np.full(train.n_users, np.iinfo(np.int64).max)
    np.minimum.at(first, users, start)
    idx = end[:, None] - length + np.arange(length)  # (U, L)
    ok = (idx >= first[:, None]) & (end[:, None] > 0)
    out = np.where(ok, items[np.clip(idx, 0, max(n - 1, 0))] if n else PAD, PAD)
    return torch.as_tensor(out, dtype=torch.int64)


class YouTubeCandidates(RecommenderNetwork):
    def __init__(self, n_users: int, n_items: int, config: YouTubeCandidatesConfig,
                 side: CandidateSide | None = None) -> None:  # fmt: skip
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.use_age = config.example_age
        self.watch = nn.Embedding(n_items, config.embedding_dim)
        self.item = nn.Embedding(n_items, config.dim)  # V, the softmax weights
        self.item_bias = nn.Parameter(torch.zeros(n_items), requires_grad=config.item_bias)
        nn.init.normal_(self.watch.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)
        width = config.embedding_dim + int(config.example_age)
        self.use_text = side is not None and side.words is not None and config.text_words > 0
        if self.use_text:  # the "search tokens": words of the history items' titles and texts
            self.register_buffer("words", fold_tokens(side.words, config.text_buckets, config.text_words))  # (I, L)
            self.word = nn.Embedding(config.text_buckets, config.text_dim, padding_idx=0)
            nn.init.normal_(self.word.weight, std=0.1)
            with torch.no_grad():
                self.word.weight[0] = 0.0
            width += config.text_dim
        self.use_demographics = side is not None and side.sizes is not None and len(side.sizes) > 0 and config.demographics
        if self.use_demographics:
            self.register_buffer("demographics", side.demographics.clone())  # (U, F) codes, 0 unknown
            self.register_buffer("demographic_sizes", side.sizes.clone())  # (F,)
            self.demographic = nn.ModuleList(nn.Embedding(int(n), config.demographic_dim) for n in side.sizes)
            width += len(side.sizes) * config.demographic_dim
        tower: list[nn.Module] = []
        for w in config.layers:
            tower += [nn.Linear(width, w), nn.ReLU()]
            width = w
        # a linear last layer: a ReLU there would zero whole directions of u for some users
        tower.append(nn.Linear(width, config.dim))
        self.tower = nn.Sequential(*tower)
        # each user's most recent training items, the serving history (saved with the state)
        self.register_buffer("history", torch.full((n_users, config.max_history), PAD, dtype=torch.int64))

    def item_text(self, items: torch.Tensor) -> torch.Tensor:
        """(Q,) item indices -> (Q, T): the mean embedding of each item's words (0 without)."""
        w = self.words[items]  # (Q, L)
        return self.word(w).sum(1) / (w > 0).sum(1, keepdim=True).clamp_min(1)

    def encode(self, items: torch.Tensor, age: torch.Tensor | None = None, user: torch.Tensor | None = None,
               hide: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """(B, L) history items (PAD = -1), (B,) example age, (B,) users (None: unknown, as for
        a user unseen in training), (B,) bool users whose demographics are hidden -> (B, D)."""
        ok = (items >= 0).unsqueeze(-1).float()  # (B, L, 1)
        n = ok.sum(1).clamp_min(1.0)  # (B, 1)
        parts = [(lookup(self.watch, items.clamp_min(0)) * ok).sum(1) / n]  # (B, E)
        if self.use_text:  # each distinct history item's words once
            uniq, inverse = torch.unique(items.clamp_min(0), return_inverse=True)
            parts.append((self.item_text(uniq)[inverse] * ok).sum(1) / n)  # (B, T)
        return self.tower(torch.cat(parts + self._context(len(items), items.device, age, user, hide), dim=-1))

    def _context(self, b: int, device: torch.device, age: torch.Tensor | None, user: torch.Tensor | None,
                 hide: torch.Tensor | None = None) -> list[torch.Tensor]:  # fmt: skip
        """The demographic embeddings (code 0 for unknown users) and the example age (0 at serving)."""
        parts = []
        if self.use_demographics:
            codes = self.demographics[user] if user is not None else torch.zeros(
                b, len(self.demographic), dtype=torch.int64, device=device)  # fmt: skip
            if hide is not None:
                codes = codes.masked_fill(hide[:, None], 0)
            parts += [emb(codes[:, f]) for f, emb in enumerate(self.demographic)]
        if self.use_age:
            a = torch.zeros(b, device=device) if age is None else age
            parts.append(a.to(self.watch.weight.dtype).unsqueeze(-1))
        return parts

    def user_vectors(self, user: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) -> (B, D): u from each user's last `max_history` training items (and their words,
        and the user's demographics) at example age 0, for nearest-neighbour retrieval among
        `item_embeddings()` (scores add `item_bias`). `history` (dense rows) is ignored: the
        ordered history is kept in the network."""
        return self.encode(self.history[user], user=user)

    def logits(self, u: torch.Tensor) -> torch.Tensor:
        return u @ self.item.weight.T + self.item_bias  # (B, I)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        u = self.user_vectors(user)  # (B, D)
        return (u * self.item(item)).sum(-1) + self.item_bias[item]  # (B,)

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.logits(self.user_vectors(user))  # (B, I)

    def cold_user_vectors(self, history: torch.Tensor) -> torch.Tensor:
        """(B, n_items) fold-in histories -> (B, D): the mean over every item of the history
        (a dense row carries no order to pick the most recent) and of its items' words; the
        user's demographics are unknown (code 0), the example age 0."""
        w = (history > 0).float()  # (B, I)
        w = w / w.sum(1, keepdim=True).clamp_min(1.0)
        parts = [w @ self.watch.weight]  # (B, E)
        if self.use_text:
            parts.append(w @ self.item_text(torch.arange(self.n_items, device=w.device)))  # (B, T)
        return self.tower(torch.cat(parts + self._context(len(w), w.device, None, None), dim=-1))

    def score_cold_users(self, history: torch.Tensor) -> torch.Tensor:
        return self.logits(self.cold_user_vectors(history))  # (B, I)

    def item_embeddings(self) -> torch.Tensor:
        return self.item.weight

    def retrieval_items(self) -> torch.Tensor:
        return torch.cat([self.item.weight, self.item_bias[:, None]], dim=1)  # (I, D + 1)

    def retrieval_users(self, user: torch.Tensor) -> torch.Tensor:
        u = self.user_vectors(user)
        return torch.cat([u, torch.ones_like(u[:, :1])], dim=1)  # (B, D + 1)


def build(config: YouTubeCandidatesConfig, train, item_vectors=None) -> YouTubeCandidates:
    """`item_vectors`: the `CandidateSide` of `item_content` (the pipelines' content), optionally
    with pretrained vectors (`ContentAndVectors`), or just an (n_items, D) vector tensor that
    starts both the history and the output embeddings."""
    side = None
    if isinstance(item_vectors, ContentAndVectors):
        side, item_vectors = item_vectors.content, item_vectors.vectors
    elif isinstance(item_vectors, CandidateSide):
        side, item_vectors = item_vectors, None
    if side is not None:
        if side.words is not None and side.words.shape[0] != train.n_items:
            raise ValueError(f"youtube_candidates: words for {side.words.shape[0]} items, the split has {train.n_items}")
        if side.demographics is not None and side.demographics.shape[0] != train.n_users:
            raise ValueError(f"youtube_candidates: demographics for {side.demographics.shape[0]} users, "
                             f"the split has {train.n_users}")  # fmt: skip
    net = YouTubeCandidates(train.n_users, train.n_items, config, side)
    net.history.copy_(last_items(train, config.max_history))
    if item_vectors is not None:
        init_embedding_from_vectors(net.watch, item_vectors, freeze=config.freeze_item_vectors)
        init_embedding_from_vectors(net.item, item_vectors, freeze=config.freeze_item_vectors)
    return net


def batches(network, train, config, batch_size, generator):
    """Shuffled training examples: each row's target, its history strictly before its time and
    its example age; for `negatives: sampled`, `n_negatives` items per batch ∝ frequency^alpha."""
    order, items, times, start = sorted_sequences(train)
    items_t, times_t = torch.as_tensor(items), torch.as_tensor(times)
    start_t = torch.as_tensor(start)
    users_t = torch.as_tensor(train.user_idx[order], dtype=torch.int64)
    end, span = times.max(initial=0), max(int(np.ptp(times)) if len(times) else 0, 1)
    age = torch.as_tensor((end - times) / span, dtype=torch.float32)  # (N,) in [0, 1]
    pop = np.maximum(train.item_popularity, 0.0)
    target_log_q = popularity_log_probs(pop, 1.0)  # (I,) in-batch candidates ∝ frequency
    if config.negatives == "sampled":
        neg_log_q = popularity_log_probs(pop, config.alpha)
        neg_probs = neg_log_q.exp()
    for pos in shuffled_batches(len(order), batch_size, generator):  # (B,)
        batch = {
            "history": history_windows(pos, items_t, times_t, start_t, config.max_history),
            "item": items_t[pos], "age": age[pos], "log_q": target_log_q[items_t[pos]], "user": users_t[pos],
        }
        if network.use_demographics:
            batch["hide"] = torch.rand(len(pos), generator=generator) < config.demographic_dropout
        if config.negatives == "sampled":
            neg = torch.multinomial(neg_probs, config.n_negatives, replacement=True, generator=generator)
            # log of the expected count among the N draws
            batch["negative"], batch["negative_log_q"] = neg, neg_log_q[neg] + np.log(config.n_negatives)
            batch["positive_log_q"] = neg_log_q[items_t[pos]] + np.log(config.n_negatives)
        yield batch


def in_batch_softmax(u: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, item: torch.Tensor,
                     log_q: torch.Tensor | None) -> torch.Tensor:
    """Softmax of each example's target against the batch's targets (Yi et al. 2019, eq. 3):
    logit s_ij = u_i · v_j + b_j − log q_j, label j = i; another row with the same target item is
    masked, since it is the positive, not a negative. (B, D), (B, D), (B,), (B,), (B,) -> scalar."""
    s = (u @ v.T + bias).float()  # (B, B)
    if log_q is not None:
        s = s - log_q.float()
    same = (item[:, None] == item[None, :]) & ~torch.eye(len(item), dtype=torch.bool, device=item.device)
    s = s.masked_fill(same, MASKED)
    return (torch.logsumexp(s, dim=1) - s.diagonal()).mean()


def loss(network: YouTubeCandidates, batch, config: YouTubeCandidatesConfig) -> torch.Tensor:
    u = network.encode(batch["history"], batch["age"], batch["user"], batch.get("hide"))  # (B, D)
    item = batch["item"]
    v, b = lookup(network.item, item), network.item_bias[item]  # (B, D), (B,)
    if config.negatives == "in_batch":
        return in_batch_softmax(u, v, b, item, batch["log_q"] if config.logq else None)
    neg = batch["negative"]  # (N,)
    s_neg = u @ lookup(network.item, neg).T + network.item_bias[neg]  # (B, N)
    s_neg = s_neg.masked_fill(neg[None, :] == item[:, None], MASKED)
    pos = (u * v).sum(-1) + b  # (B,)
    if not config.logq:
        return sampled_softmax(pos, s_neg)
    # the positive is corrected like the candidates it competes with (Jean et al. 2015)
    return sampled_softmax(pos, s_neg, batch["positive_log_q"], batch["negative_log_q"])


def inputs_from_state(state: dict[str, torch.Tensor]) -> CandidateSide | None:
    """The side inputs a saved network was built with, from its buffers (None: it had none)."""
    if "words" not in state and "demographics" not in state:
        return None
    return CandidateSide(state.get("words"), state.get("demographics"), state.get("demographic_sizes"))


FAMILY = Family(
    name="youtube_candidates", config=YouTubeCandidatesConfig, build=build, batches=batches, loss=loss,
    paper="Covington, Adams & Sargin 2016", item_content=item_content,
    content_inputs=("items", "users", "user_map"), inputs_from_state=inputs_from_state,
)
