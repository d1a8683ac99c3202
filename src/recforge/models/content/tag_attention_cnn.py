"""`tag_attention_cnn`: attention-based CNN for hashtag recommendation (Gong & Zhang 2016,
"Hashtag Recommendation Using Attention-Based Convolutional Neural Network", IJCAI).

Tags are predicted from an item's text, an extreme multi-label task over the tag vocabulary.
The words w_1..w_L of the item's title and description are embedded (M, (L, D)) and read by two
channels:

    local   θ_i = σ(W_a · M[i-h/2 : i+h/2] + b_a)       attention: a score per word from its window
            ŵ_i = θ_i · 1[θ_i ≥ η] · M_i                 trigger words kept, the others zeroed
            v   = Σ_i ŵ_i                                folding: one sum per dimension  (D,)
            r   = tanh(W_c v + b_c)                      compression into the space r    (R,)
    global  g   = max_t tanh(Conv_k(M))_t                a convolution over the whole text, max-pooled
    z = Dropout(tanh(W_h [r; g] + b_h))  ->  p = softmax(W_o z + b_o)   (T,) tag distribution

The compression is the paper's convolution over the folded vector: it spans the whole vector,
so it is a dense map and its max-pooling over the single output is the identity. With
`loss: softmax` (the paper's) the target is the item's tags as a distribution; with `sigmoid`
each tag is an independent binary label.

As a recommender the family ranks items for a user by the similarity of tag profiles:

    x̂(u, i) = w · cos(ȳ_u, p_i) + b_i + β · p_i

ȳ_u is the mean of the true tag vectors (normalised) of the user's history — computed from the
history `score_all` receives, so a user unseen in training is scored the same way
(`score_cold_users`) — and p_i the predicted tag distribution of item i from its text, so an item
unseen in training is scored from its text alone (`score_cold_items`, with b_i = 0). The tag-only
similarity ranks below popularity on the shop, whose users buy popular items too (NDCG@10 0.054
against 0.067 on the contract test's shop, even with true tags on both sides), so a small
interaction term — the scale w, the item biases b_i and a content bias β · p_i, trained with BPR
on (u, i, j) triples, leave-one-out (i is taken out of ȳ_u) — joins the tag loss:

    loss = tag loss on a batch of items + interaction_weight · BPR(x̂(u, i) - x̂(u, j))

Content comes from `item_content(items, item_map)`: the words of `title` and `text` tokenised as
the text encoder does (`encoders.text.tokenize`) and hashed into buckets with crc32, so the ids
do not depend on which items are encoded (the cold items' text is encoded the same way), and the
`tags` column ("a|b|c"; a source without one uses `genres`, else the category path's levels) as a
multi-hot matrix over the sorted vocabulary of the training items. Token ids and tags are
buffers and the vocabulary is the module's extra state, so `load` restores all three.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recforge.data.errors import DataError
from recforge.data.interactions import InteractionData
from recforge.encoders.text import PAD, item_documents
from recforge.models.base import Batch, Family, ModelConfig, RecommenderNetwork
from recforge.models.cf.bpr import batches as bpr_batches
from recforge.training.losses import bce, bpr, softmax_cross_entropy

TEXT_FIELDS = ("title", "text")
# item_content keeps this many words per item; `max_len` cuts further
CONTENT_WORDS = 64
# words are hashed into 1..HASH_SPACE-1 once; the network folds them into its `n_buckets`
HASH_SPACE = 1 << 24
TAG_SEP = "|"
# where an item's tags are read from, in order of preference
TAG_COLUMNS = ("tags", "genres")


@dataclass(frozen=True)
class TagContent:
    """What `build` receives as `item_vectors`: the items' hashed words and their tags."""

    tokens: torch.Tensor  # (I, L) int64 hashed word ids, 0 = padding
    tags: torch.Tensor  # (I, T) float32 multi-hot over `vocabulary`
    vocabulary: tuple[str, ...]  # the tags, sorted

    def __post_init__(self) -> None:
        if self.tokens.dim() != 2 or self.tags.dim() != 2 or self.tokens.shape[0] != self.tags.shape[0]:
            raise ValueError(f"tag content: tokens {tuple(self.tokens.shape)} and tags {tuple(self.tags.shape)} "
                             "must be (n_items, L) and (n_items, T)")  # fmt: skip
        if self.tags.shape[1] != len(self.vocabulary):
            raise ValueError(f"tag content: {self.tags.shape[1]} tag columns for {len(self.vocabulary)} tags")


def hash_words(docs: list[list[str]], length: int = CONTENT_WORDS) -> torch.Tensor:
    """(N, length) int64 crc32 ids in 1..HASH_SPACE-1 of each document's first `length` words
    (crc32 rather than `hash`, which Python salts per process); 0 pads."""
    uniq: dict[str, int] = {}
    pos = np.full((len(docs), length), -1, dtype=np.int64)  # index into uniq, -1 = padding
    for i, doc in enumerate(docs):  # once per item when the content is built, not in training
        for j, w in enumerate(doc[:length]):
            pos[i, j] = uniq.setdefault(w, len(uniq))
    ids = [1 + zlib.crc32(w.encode("utf-8")) % (HASH_SPACE - 1) for w in uniq]
    table = np.array([*ids, PAD], dtype=np.int64)  # the extra last entry is what -1 selects
    return torch.from_numpy(table[pos])


def item_tag_lists(items: pd.DataFrame, ids: pd.Series) -> list[list[str]]:
    """The tags of each id's item ([] for an item missing from `items` or without tags): the
    `tags` column split on "|", else `genres`, else the levels of `category` ("a/b" -> a, b)."""
    table = items.drop_duplicates("item_id").astype({"item_id": "string"}).set_index("item_id")
    table = table.reindex(ids.to_numpy())
    column = next((c for c in TAG_COLUMNS if c in table.columns), None)
    if column is not None:
        raw, sep = table[column], TAG_SEP
    elif "category" in table.columns:
        raw, sep = table["category"], "/"
    else:
        raise DataError(f"no tags: the items table needs one of {[*TAG_COLUMNS, 'category']}; "
                        f"found {list(items.columns)}", source="items", column=TAG_COLUMNS[0])  # fmt: skip
    values = raw.astype("string").fillna("").str.split(sep).tolist()
    return [[t.strip() for t in dict.fromkeys(v) if t.strip()] for v in values]


def multi_hot(tag_lists: list[list[str]], vocabulary: tuple[str, ...]) -> torch.Tensor:
    """(N, T) float32: 1 where an item has the tag; tags outside `vocabulary` are dropped."""
    index = {t: k for k, t in enumerate(vocabulary)}
    rows = [r for r, tags in enumerate(tag_lists) for t in tags if t in index]
    cols = [index[t] for tags in tag_lists for t in tags if t in index]
    out = torch.zeros(len(tag_lists), len(vocabulary))
    out[torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)] = 1.0
    return out


def item_content(items: pd.DataFrame, item_map: pd.DataFrame) -> TagContent:
    """The hashed words of `title` + `text` and the tags of the items of `item_map`, rows in
    item_idx order; the tag vocabulary is the sorted set of these items' tags."""
    ids = item_map.sort_values("item_idx")["item_id"].astype("string").reset_index(drop=True)
    table = items.drop_duplicates("item_id").astype({"item_id": "string"}).set_index("item_id")
    table = table.reindex(ids.to_numpy()).reset_index()
    tokens = hash_words(item_documents(table, TEXT_FIELDS) if len(table) else [])  # no cold items: empty
    tag_lists = item_tag_lists(items, ids)
    vocabulary = tuple(sorted({t for tags in tag_lists for t in tags}))
    return TagContent(tokens, multi_hot(tag_lists, vocabulary), vocabulary)


class TagAttentionCNNConfig(ModelConfig):
    n_buckets: int = Field(1 << 14, ge=16, description="rows of the hashed word table")
    max_len: int = Field(48, ge=1, description="words read per item")
    embedding_dim: int = Field(64, gt=0)  # D
    window: int = Field(5, ge=1, description="h: words around a word that decide its attention")
    threshold: float = Field(0.25, ge=0, lt=1, description="η: words attended below it are zeroed")
    compressed_dim: int = Field(64, gt=0)  # R
    global_widths: tuple[int, ...] = Field((3,), min_length=1, description="widths of the global convolutions")
    global_filters: int = Field(64, gt=0)
    hidden: int = Field(128, gt=0)
    dropout: float = Field(0.3, ge=0, lt=1)
    loss: Literal["softmax", "sigmoid"] = "softmax"
    interaction_weight: float = Field(1.0, ge=0, description="weight of the BPR term beside the tag loss")
    tag_batch_size: int = Field(64, gt=0, description="items per batch for the tag loss")


class TagAttentionCNN(RecommenderNetwork):
    def __init__(self, train_rows: sp.csr_matrix, content: TagContent, config: TagAttentionCNNConfig) -> None:
        super().__init__()
        self.n_users, self.n_items = train_rows.shape
        self.threshold, self.loss_kind = config.threshold, config.loss
        self.vocabulary = tuple(content.vocabulary)  # saved as the extra state
        d, t = config.embedding_dim, len(self.vocabulary)
        self.register_buffer("tokens", fold_tokens(content.tokens, config.n_buckets, config.max_len))  # (I, L)
        self.register_buffer("tags", content.tags.float())  # (I, T) multi-hot
        # the training rows' profiles (cold items, leave-one-out BPR): each user's sum of normalised
        # tag vectors and count, rebuilt from the rows on load
        seen = (train_rows > 0).astype(np.float32)  # (U, I) sparse
        sums = np.asarray(seen @ unit_rows(self.tags).numpy(), dtype=np.float32)  # (U, T)
        self.register_buffer("user_tag_sum", torch.from_numpy(sums), persistent=False)
        self.register_buffer("user_count", torch.from_numpy(np.asarray(seen.sum(1), dtype=np.float32)[:, 0]),
                             persistent=False)  # (U,)
        self.embedding = nn.Embedding(config.n_buckets, d, padding_idx=PAD)
        # local channel: the attention window is a convolution of width h with one output
        self.attention = nn.Conv1d(d, 1, config.window, padding=config.window // 2)
        self.compression = nn.Linear(d, config.compressed_dim)
        # global channel
        self.convs = nn.ModuleList(
            nn.Conv1d(d, config.global_filters, w, padding=w // 2) for w in config.global_widths
        )
        channels = config.compressed_dim + config.global_filters * len(config.global_widths)
        self.hidden = nn.Linear(channels, config.hidden)
        self.drop = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.hidden, t)
        # the interaction term
        self.log_scale = nn.Parameter(torch.tensor(math.log(5.0)))  # w = exp(log_scale) > 0
        self.item_bias = nn.Embedding(self.n_items, 1)
        self.content_bias = nn.Linear(t, 1, bias=False)  # β
        nn.init.normal_(self.embedding.weight, std=0.1)
        nn.init.constant_(self.attention.bias, 1.0)  # σ(1) ≈ 0.73: every word starts above η
        nn.init.zeros_(self.item_bias.weight)
        nn.init.zeros_(self.content_bias.weight)
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def get_extra_state(self) -> dict[str, list[str]]:
        return {"tag_vocabulary": list(self.vocabulary)}

    def set_extra_state(self, state: dict[str, list[str]]) -> None:
        if tuple(state["tag_vocabulary"]) != self.vocabulary:
            raise ValueError("tag_attention_cnn: the saved tag vocabulary differs from the one built")

    # ------------------------------------------------------------------ tags from text
    def local_channel(self, m: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, D, L) word embeddings, (B, 1, L) real words -> (B, R): attention, folding, compression."""
        theta = torch.sigmoid(self.attention(m)[..., : m.shape[2]]) * mask  # (B, 1, L)
        gate = theta * (theta >= self.threshold)  # trigger words keep their score, the others 0
        folded = (gate * m).sum(-1)  # (B, D)
        return torch.tanh(self.compression(folded))  # (B, R)

    def global_channel(self, m: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, D, L), (B, 1, L) -> (B, F·n_widths): convolutions max-pooled over the real words."""
        pooled = [torch.tanh(conv(m)[..., : m.shape[2]]).masked_fill(~mask, -1.0).amax(-1) for conv in self.convs]
        return torch.cat(pooled, dim=1)

    def tag_logits(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, T)
        mask = (tokens != PAD).unsqueeze(1)  # (B, 1, L)
        m = self.embedding(tokens).transpose(1, 2)  # (B, D, L)
        z = torch.cat([self.local_channel(m, mask), self.global_channel(m, mask)], dim=1)  # (B, R + F)
        return self.output(self.drop(torch.tanh(self.hidden(z))))  # (B, T)

    def tag_distribution(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, L) -> (B, T)
        logits = self.tag_logits(tokens)
        return torch.softmax(logits, -1) if self.loss_kind == "softmax" else torch.sigmoid(logits)

    def predict_tags(self, tokens: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """(N, L) hashed word ids (`item_content(...).tokens`, any vocabulary size) -> (N, T)."""
        tokens = fold_tokens(tokens, self.embedding.num_embeddings, self.tokens.shape[1]).to(self.tokens.device)
        if len(tokens) == 0:
            return torch.zeros(0, len(self.vocabulary), device=self.tokens.device)
        return torch.cat([self.tag_distribution(t) for t in tokens.split(chunk)])

    def item_tags(self) -> torch.Tensor:
        """(I, T) predicted tag distributions of the training items; cached while the weights,
        the device and eval mode stay (evaluation scores many user batches against them)."""
        if self.training or torch.is_grad_enabled():
            return self.predict_tags(self.tokens)
        key = (self.tokens.device, tuple(p._version for p in self.parameters()))
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self.predict_tags(self.tokens))
        return self._cache[1]

    # ------------------------------------------------------------------ recommendation
    def profile(self, history: torch.Tensor) -> torch.Tensor:  # (B, I) -> (B, T)
        """Mean normalised true tag vector of each user's history items."""
        seen = (history > 0).to(self.tags.dtype)
        return seen @ unit_rows(self.tags) / seen.sum(1, keepdim=True).clamp_min(1.0)

    def score_items(self, profile: torch.Tensor, p: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """(B, T) profiles, (C, T) item tag distributions, (C,) item biases -> (B, C)."""
        sim = F.normalize(profile, dim=1) @ F.normalize(p, dim=1).T  # (B, C)
        return self.log_scale.exp() * sim + bias + self.content_bias(p).T

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("tag_attention_cnn scores from a user's history: use score_all")

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.score_items(self.profile(history), self.item_tags(), self.item_bias.weight[:, 0])  # (B, I)

    def score_cold_items(self, user: torch.Tensor, content: TagContent) -> torch.Tensor:
        """(B,), the `item_content` of C items unseen in training -> (B, C): their tags are
        predicted from their text, the users' profiles are their training rows' tags, and the
        items' own biases b_i are unknown (0)."""
        p = self.predict_tags(check_cold_content(content))  # (C, T)
        profile = self.user_tag_sum[user] / self.user_count[user].clamp_min(1.0)[:, None]  # (B, T)
        return self.score_items(profile, p, torch.zeros(len(p), device=p.device))

    def score_cold_users(self, history: torch.Tensor) -> torch.Tensor:
        """(B, n_items) fold-in histories -> (B, n_items): the profile is the history's tags."""
        return self.score_all(torch.zeros(len(history), dtype=torch.long, device=history.device), history)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_tags()  # (I, T): items are similar when their predicted tags are


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to sum 1 (all-zero rows stay zero)."""
    return x / x.sum(1, keepdim=True).clamp_min(1e-12)


def fold_tokens(tokens: torch.Tensor, n_buckets: int, length: int) -> torch.Tensor:
    """Hashed word ids folded into 1..n_buckets-1 (0 stays padding), cut or padded to `length`."""
    if tokens.dim() != 2 or tokens.is_floating_point():
        raise TypeError(f"tag_attention_cnn: expected (n_items, L) integer word ids from item_content, got a "
                        f"{tokens.dtype} tensor of shape {tuple(tokens.shape)}")  # fmt: skip
    t = tokens.long()
    t = torch.where(t > 0, 1 + (t - 1) % (n_buckets - 1), 0)
    return F.pad(t[:, :length], (0, max(0, length - t.shape[1])))


def check_cold_content(content: object) -> torch.Tensor:
    if not isinstance(content, TagContent):
        raise TypeError("tag_attention_cnn: cold items need their TagContent from tag_attention_cnn.item_content"
                        f"(items, item_map), got {type(content).__name__}")  # fmt: skip
    return content.tokens


def build(
    config: TagAttentionCNNConfig, train: InteractionData, item_vectors: TagContent | None = None
) -> TagAttentionCNN:
    """`item_vectors`: the items' `TagContent` from `item_content(items, item_map)`."""
    if not isinstance(item_vectors, TagContent):
        got = "nothing" if item_vectors is None else f"a {type(item_vectors).__name__}"
        raise TypeError(f"tag_attention_cnn reads item text and tags: pass tag_attention_cnn.item_content(items, "
                        f"item_map) as item_vectors (got {got}; a vector table cannot stand in for tags)")  # fmt: skip
    if item_vectors.tokens.shape[0] != train.n_items:
        raise ValueError(f"tag_attention_cnn: item content for {item_vectors.tokens.shape[0]} items, the "
                         f"training data has {train.n_items}")  # fmt: skip
    if not item_vectors.vocabulary:
        raise DataError("no item has a tag: nothing to learn", source="items", column=TAG_COLUMNS[0])
    return TagAttentionCNN(train.csr, item_vectors, config)


def content_from_state(state: dict[str, torch.Tensor]) -> TagContent:
    """The content a saved network was trained with (`Recommender.load`)."""
    return TagContent(state["tokens"], state["tags"], tuple(state["_extra_state"]["tag_vocabulary"]))


def batches(
    network: TagAttentionCNN, train, config: TagAttentionCNNConfig, batch_size, generator
) -> Iterator[Batch]:
    """BPR's (user, item, negative) triples, each batch with `tag_batch_size` items for the tag
    loss, cycling through all items in a seeded order (every item's tags as often as another's)."""
    n = network.n_items
    laps = max(1, math.ceil(math.ceil(len(train) / batch_size) * config.tag_batch_size / n))
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(laps + 1)])
    for k, batch in enumerate(bpr_batches(network, train, config, batch_size, generator)):
        batch["tag_item"] = order[k * config.tag_batch_size : (k + 1) * config.tag_batch_size]
        yield batch


def loss(network: TagAttentionCNN, batch: Batch, config: TagAttentionCNNConfig) -> torch.Tensor:
    tag_items = batch["tag_item"]  # (N,)
    n = len(tag_items)
    u, i, j = batch["user"], batch["item"], batch["negative"]  # (B,) each
    b = len(u) if config.interaction_weight else 0
    # the text side runs once per distinct item of the batch (popular items recur among the triples)
    uniq, inverse = torch.unique(torch.cat([tag_items, i[:b], j[:b]]), return_inverse=True)
    logits = network.tag_logits(network.tokens[uniq])[inverse]  # (N + 2B, T)
    target = network.tags[tag_items]  # (N, T)
    if config.loss == "softmax":
        has = target.sum(1) > 0
        out = softmax_cross_entropy(logits[:n][has], unit_rows(target[has])) if has.any() else logits.sum() * 0
    else:
        out = bce(logits[:n], target)
    if not b:
        return out
    p = torch.softmax(logits[n:], -1) if config.loss == "softmax" else torch.sigmoid(logits[n:])  # (2B, T)
    # leave-one-out: the positive is taken out of its user's profile
    profile = network.user_tag_sum[u] - unit_rows(network.tags[i])  # (B, T)
    sim = (F.normalize(profile, dim=1) * F.normalize(p, dim=1).view(2, b, -1)).sum(-1)  # (2, B)
    both = torch.cat([i, j])  # (2B,)
    x = network.log_scale.exp() * sim + network.item_bias(both).view(2, b) + network.content_bias(p).view(2, b)
    return out + config.interaction_weight * bpr(x[0], x[1])

FAMILY = Family(
    name="tag_attention_cnn", config=TagAttentionCNNConfig, build=build, batches=batches, loss=loss,
    paper="Gong & Zhang 2016 (attention-based CNN for hashtags)", item_content=item_content,
    inputs_from_state=content_from_state,
)
