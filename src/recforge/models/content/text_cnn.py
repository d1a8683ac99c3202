"""`text_cnn`: a two-tower recommender whose item tower is Kim's sentence CNN over the item's text
(Kim 2014, "Convolutional neural networks for sentence classification"), trained end to end on
the interactions rather than on a proxy task (the `text` encoder of `pretraining` trains the same
CNN to classify categories, `encoders.text`).

    t_i = W · dropout(maxpool_time(ReLU(conv_{3,4,5}(E[w_1..w_L]))))      item tower (D,)
    p_u = P[u] + A · mean_{h ∈ H(u)} t_h                                    user tower (D,)
    x̂(u, i) = p_u · t_i

w_1..w_L are the words of the item's title and text (cut to `max_len`). `tokens: trigrams`
replaces a word's embedding by the sum of its hashed letter trigrams' ("#good#" -> #go, goo,
ood, od#, into `trigram_buckets`: the word hashing of DSSM / C-DSSM), so an unseen word of a new
item still has a vector. H(u) are the user's last `history` distinct training items (the target
left out while training); `history: 0` keeps the user tower an id embedding. Trained with BPR
or a sampled softmax over `negatives` uniform negatives.

The item tower reads only text, so a new item is scored from its text (`score_cold_items`), and
with `history > 0` a new user from the items of a fold-in history (`score_cold_users`, P[u] = 0).
Compared with `cdssm` the user side here is an id embedding (plus, optionally, the history's
item towers), and the score a dot product; cdssm's query is the history's text itself.

Content comes from `text_towers.item_content` (the bytes of each item's title, text and
category, kept as a buffer so `save`/`load` keep the text and its vocabulary). Without it (None,
or float item vectors, which then start the table) the item tower is an id table: plain
two-tower MF, which cannot score cold items.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.encoders.text import KimCNN
from recforge.models.base import Batch, ColdStartUnsupported, Family, ModelConfig, RecommenderNetwork
from recforge.models.layers import lookup
from recforge.models.content.text_towers import (
    batches,
    content_from_state,
    Tokenizer,
    Tokens,
    check_content,
    content_documents,
    embed_words,
    fold_in_items,
    id_table,
    in_chunks,
    item_content,
    leave_out,
    distinct_items,
    pool_rows,
    recent_items,
    split_item_vectors,
)
from recforge.training.losses import bpr, sampled_softmax

TEXT_FIELDS = ("title", "text")


class TextCNNConfig(ModelConfig):
    tokens: Tokens = "words"
    max_len: int = Field(32, ge=1, description="words of title + text kept per item")
    trigram_buckets: int = Field(2**14, ge=16, description="hash buckets of letter trigrams")
    max_trigrams: int = Field(20, ge=1, description="trigrams kept per word")
    embedding_dim: int = Field(32, gt=0)
    filter_widths: tuple[int, ...] = Field((3, 4, 5), min_length=1)
    n_filters: int = Field(32, gt=0)
    dropout: float = Field(0.2, ge=0, lt=1)
    dim: int = Field(32, gt=0, description="the towers' output: the projection of the pooled filters")
    history: int = Field(20, ge=0, description="the user's recent items read by the user tower; 0: ids only")
    loss: Literal["bpr", "softmax"] = "softmax"
    negatives: int = Field(4, ge=1)
    l2: float = Field(1e-6, ge=0, description="on the user embeddings")


class TextCNN(RecommenderNetwork):
    def __init__(
        self, n_users: int, n_items: int, config: TextCNNConfig, content: torch.Tensor | None,
        recent: torch.Tensor, vectors: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.n_users, self.n_items, self.history = n_users, n_items, config.history
        self.content: torch.Tensor | None
        if content is not None:
            self.register_buffer("content", content.to(torch.uint8))  # (I, 3, W)
            docs = content_documents(content, TEXT_FIELDS)
            self.tokenizer = Tokenizer(docs, config.tokens, config.max_len, config.trigram_buckets,
                                       config.max_trigrams, max(config.filter_widths))  # fmt: skip
            positions, words = self.tokenizer(docs)
            self.register_buffer("positions", positions, persistent=False)  # (I, L)
            self.register_buffer("words", words, persistent=False)  # (W + 1,) or (W + 1, G)
            self.cnn = KimCNN(self.tokenizer.n_embeddings, config.embedding_dim, config.filter_widths,
                              config.n_filters, config.dropout, n_classes=config.dim)  # fmt: skip
        else:
            self.content = None
            self.item = id_table(n_items, config.dim, vectors)
        self.user = nn.Embedding(n_users, config.dim)
        nn.init.normal_(self.user.weight, std=0.1)
        if config.history:
            self.register_buffer("recent", recent)  # (U, H) item indices, PAD on the left
            self.history_map = nn.Linear(config.dim, config.dim, bias=False)  # A
            nn.init.eye_(self.history_map.weight)

    # ------------------------------------------------------------------ towers
    def text_tower(self, positions: torch.Tensor, words: torch.Tensor) -> torch.Tensor:  # (N, L) -> (N, D)
        x = embed_words(self.cnn.embedding, positions, words)  # (N, L, E)
        return self.cnn.head(self.cnn.dropout(self.cnn.convolve(x)))  # (N, D)

    def items(self, item: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, D)
        if self.content is None:
            return lookup(self.item, item)
        return self.text_tower(self.positions[item], self.words)

    def users(self, user: torch.Tensor | None, rows: torch.Tensor | None,
              history: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        """p_u (B, D) from the user ids (None: unseen users, P[u] = 0) and their histories: (B, H)
        indices into item tower `rows` whose last row is padding (`text_towers.distinct_items`)."""
        out = lookup(self.user, user) if user is not None else 0.0
        if self.history:
            out = out + self.history_map(pool_rows(rows, history))  # (B, D)
        return out

    def with_padding(self, towers: torch.Tensor, history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(I, D) towers of every item, (B, H) history -> (rows with a padding row, indices)."""
        rows = torch.cat([towers, towers.new_zeros(1, towers.shape[1])])  # (I + 1, D)
        return rows, history.masked_fill(history < 0, len(towers))

    def all_items(self) -> torch.Tensor:  # (I, D)
        return in_chunks(self.items, self.n_items, self.user.weight.device)

    # ------------------------------------------------------------------ scoring
    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:  # (B,), (B,) -> (B,)
        if self.history:
            rows, (i, hist) = distinct_items(self.items, item, self.recent[user])
            return (self.users(user, rows, hist) * rows[i]).sum(-1)
        return (self.users(user, None, None) * self.items(item)).sum(-1)

    def user_vectors(self, user: torch.Tensor, towers: torch.Tensor | None) -> torch.Tensor:  # (B,) -> (B, D)
        """p_u of training users, given the (I, D) towers of every item (when history is used)."""
        if not self.history:
            return self.users(user, None, None)
        return self.users(user, *self.with_padding(towers, self.recent[user]))

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, I)
        towers = self.all_items()  # (I, D)
        return self.user_vectors(user, towers) @ towers.T

    def item_embeddings(self) -> torch.Tensor:
        with torch.no_grad():
            return self.all_items()

    def score_cold_items(self, user: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """(B,), (C, 3, W) item_content bytes of unseen items -> (B, C) through the item tower."""
        if self.content is None:
            raise ColdStartUnsupported("text_cnn was trained without item text: its item tower is an id table")
        content = check_content("text_cnn", content, "cold item content")
        positions, words = self.tokenizer(content_documents(content, TEXT_FIELDS))
        dev = self.content.device
        cold = self.text_tower(positions.to(dev), words.to(dev))  # (C, D)
        return self.user_vectors(user, self.all_items() if self.history else None) @ cold.T

    def score_cold_users(self, history: torch.Tensor) -> torch.Tensor:
        """(B, I) fold-in rows -> (B, I): p = A · mean of the history's item towers."""
        if not self.history:
            raise ColdStartUnsupported("text_cnn with history: 0 has only user ids on the user side")
        towers = self.all_items()  # (I, D)
        return self.users(None, *self.with_padding(towers, fold_in_items(history, self.history))) @ towers.T


def build(config: TextCNNConfig, train: InteractionData, item_vectors: torch.Tensor | None = None) -> TextCNN:
    """`item_vectors`: `item_content`'s (n_items, 3, W) bytes (the text model), or float
    (n_items, F) vectors to start the id fallback, or None."""
    content, vectors = split_item_vectors("text_cnn", item_vectors, train.n_items)
    return TextCNN(train.n_users, train.n_items, config, content, recent_items(train, config.history), vectors)


def loss(network: TextCNN, batch: Batch, config: TextCNNConfig) -> torch.Tensor:
    u, i, j = batch["user"], batch["item"], batch["negative"]  # (B,), (B,), (B, N)
    history = leave_out(network.recent[u], i) if config.history else u.new_empty(len(u), 0)  # (B, H)
    rows, (i, j, history) = distinct_items(network.items, i, j, history)  # rows: (R + 1, D)
    ti, tj = rows[i], rows[j]  # (B, D), (B, N, D)
    p = network.users(u, rows, history)  # (B, D)
    pos = (p * ti).sum(-1)  # (B,)
    neg = (p.unsqueeze(1) * tj).sum(-1)  # (B, N)
    out = bpr(pos, neg) if config.loss == "bpr" else sampled_softmax(pos, neg)
    if config.l2:
        out = out + config.l2 * lookup(network.user, u).square().sum() / len(u)
    return out


FAMILY = Family(
    name="text_cnn", config=TextCNNConfig, build=build, batches=batches, loss=loss,
    paper="Kim 2014 (text CNN) as an item tower", item_content=item_content, inputs_from_state=content_from_state,
)
