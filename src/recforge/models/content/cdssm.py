"""`cdssm`: the convolutional deep structured semantic model (Shen, He, Gao, Deng & Mesnil 2014,
"A Latent Semantic Model with Convolutional-Pooling Structure for Information Retrieval"),
with the user's recent items as the query (the shop has no search log).

    Q = the titles of the user's last `history` distinct training items, one sentence each
    D = the item's title and text
    word hashing   l_t = letter-trigram count vector of word t, times E  (embedding_dim)
    convolution    h_t = tanh(W_c [l_{t-1}; l_t; l_{t+1}])                (conv_dim)   window 3
    max pooling    v   = max_t h_t  over every word of the text            (conv_dim)
    semantic layer y   = tanh(W_s v)                                      (dim)
    R(Q, D) = cos(y_Q, y_D)
    P(D+ | Q) = exp(γ R(Q, D+)) / Σ_{D' ∈ {D+} ∪ D-} exp(γ R(Q, D'))      loss -log P(D+ | Q)

D- are `negatives` uniform items the user has not interacted with (the paper samples 4 unclicked
documents); γ is the smoothing factor. Query and document have their own towers (the query is
short titles, the document a description). The paper's convolution reads the window's raw
trigram count vectors (3 × ~30k); here each word's count vector is first multiplied by a trigram
table E, which makes W_c · (I_3 ⊗ E) a low-rank factor of that convolution. A training query
leaves the clicked item out of the history it is built from. Max pooling skips padding, and a
convolution window never spans two titles (each title is a sentence of the query).

Both sides are text, so cdssm scores a new item from its text (`score_cold_items`) and a new user
from the titles of a fold-in history (`score_cold_users`); it has no id embedding at all, which
is what separates it from `text_cnn` (an id embedding on the user side, a dot product).
Content: `text_towers.item_content`; without it (None or float vectors) the document tower is an
id table and the query the mean of the history's rows (no cold items then).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.models.base import ColdStartUnsupported, Family, ModelConfig, RecommenderNetwork
from recforge.models.layers import lookup
from recforge.models.content.text_towers import (
    batches,
    content_from_state,
    relevance_loss,
    Tokenizer,
    check_content,
    content_documents,
    embed_words,
    fold_in_items,
    id_table,
    in_chunks,
    item_content,
    distinct_items,
    pool_rows,
    recent_items,
    split_item_vectors,
    word_mask,
)

QUERY_FIELDS, DOCUMENT_FIELDS = ("title",), ("title", "text")


class CDSSMConfig(ModelConfig):
    history: int = Field(10, ge=1, description="recent items whose titles make the query")
    title_len: int = Field(6, ge=1, description="words kept per title in the query")
    max_len: int = Field(32, ge=1, description="words of the document (title + text)")
    trigram_buckets: int = Field(2**14, ge=16)
    max_trigrams: int = Field(20, ge=1, description="trigrams kept per word")
    embedding_dim: int = Field(32, gt=0, description="E: the trigram table the convolution reads")
    window: int = Field(3, ge=1, description="words per convolution window (odd: centred)")
    conv_dim: int = Field(64, gt=0, description="the convolution's feature maps (paper: 300)")
    dim: int = Field(32, gt=0, description="the semantic layer (paper: 128)")
    gamma: float = Field(10.0, gt=0, description="γ, the softmax smoothing factor")
    negatives: int = Field(4, ge=1)


class ConvTower(nn.Module):
    """Letter-trigram word hashing -> convolution over word windows -> max pooling (`pool`) ->
    the tanh semantic layer (`forward`)."""

    def __init__(self, n_buckets: int, config: CDSSMConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_buckets, config.embedding_dim, padding_idx=0)
        self.conv = nn.Conv1d(config.embedding_dim, config.conv_dim, config.window, padding=config.window // 2)
        self.semantic = nn.Linear(config.conv_dim, config.dim)
        nn.init.normal_(self.embedding.weight, std=config.embedding_dim**-0.5)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def pool(self, positions: torch.Tensor, words: torch.Tensor) -> torch.Tensor:  # (N, L) -> (N, K)
        """max_t tanh(W_c [l_{t-1}; l_t; l_{t+1}]) over the text's words (padding skipped; a
        text without words pools to -1, tanh's floor)."""
        x = embed_words(self.embedding, positions, words).transpose(1, 2)  # (N, E, L)
        h = torch.tanh(self.conv(x))[..., : positions.shape[1]]  # (N, K, L), one window per word
        h = h.masked_fill(~word_mask(positions, words).unsqueeze(1), -1.0)
        return h.max(dim=2).values  # (N, K)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:  # (…, K) -> (…, dim)
        return torch.tanh(self.semantic(pooled))


class CDSSM(RecommenderNetwork):
    def __init__(
        self, n_users: int, n_items: int, config: CDSSMConfig, content: torch.Tensor | None,
        recent: torch.Tensor, vectors: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.n_users, self.n_items, self.history = n_users, n_items, config.history
        self.register_buffer("recent", recent)  # (U, H) item indices, PAD on the left
        self.content: torch.Tensor | None
        if content is not None:
            self.register_buffer("content", content.to(torch.uint8))  # (I, 3, W)
            titles, docs = content_documents(content, QUERY_FIELDS), content_documents(content, DOCUMENT_FIELDS)
            args = (config.trigram_buckets, config.max_trigrams, config.window)
            self.title_tokens = Tokenizer(titles, "trigrams", config.title_len, *args)
            self.doc_tokens = Tokenizer(docs, "trigrams", config.max_len, *args)
            title_positions, title_words = self.title_tokens(titles)
            doc_positions, doc_words = self.doc_tokens(docs)
            self.register_buffer("title_positions", title_positions, persistent=False)
            self.register_buffer("title_words", title_words, persistent=False)
            self.register_buffer("doc_positions", doc_positions, persistent=False)
            self.register_buffer("doc_words", doc_words, persistent=False)
            self.query_tower = ConvTower(config.trigram_buckets, config)
            self.doc_tower = ConvTower(config.trigram_buckets, config)
        else:
            self.content = None
            self.item = id_table(n_items, config.dim, vectors)
            self.query_item = id_table(n_items, config.dim, None)

    # ------------------------------------------------------------------ towers
    def queries(self, history: torch.Tensor) -> torch.Tensor:  # (B, H) items, PAD -> (B, dim)
        """y_Q of the queries made of these items' titles. Each title is a sentence of its own (a
        window never spans two), so its pooled convolution is computed once per distinct item and
        the query max-pools over its titles' windows: the same max over all of the query's words."""
        if self.content is None:
            rows, (idx,) = distinct_items(lambda it: lookup(self.query_item, it), history)
            return pool_rows(rows, idx)  # the mean of the history's rows
        rows, (idx,) = distinct_items(self.title_pool, history)  # (U + 1, K), (B, H)
        return self.query_tower(pool_rows(rows, idx, "max"))  # (B, dim); no titles: v = 0

    def title_pool(self, item: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, K)
        return self.query_tower.pool(self.title_positions[item], self.title_words)

    def documents(self, item: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, dim)
        if self.content is None:
            return lookup(self.item, item)
        return self.doc_tower(self.doc_tower.pool(self.doc_positions[item], self.doc_words))

    def all_documents(self) -> torch.Tensor:  # (I, dim) unit rows
        dev = self.recent.device
        return F.normalize(in_chunks(self.documents, self.n_items, dev), dim=-1)

    def relevance(self, history: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """R(Q, D) (B, …) for the queries of (B, H) histories and (B, …) items."""
        q = F.normalize(self.queries(history), dim=-1)  # (B, dim)
        rows, (idx,) = distinct_items(self.documents, item)
        d = F.normalize(rows[idx], dim=-1)  # (B, …, dim)
        return (d * q.view(q.shape[0], *([1] * (item.dim() - 1)), -1)).sum(-1)

    # ------------------------------------------------------------------ scoring
    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:  # (B,), (B,) -> (B,)
        return self.relevance(self.recent[user], item)

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, I)
        q = F.normalize(self.queries(self.recent[user]), dim=-1)  # (B, dim)
        return q @ self.all_documents().T

    def item_embeddings(self) -> torch.Tensor:
        with torch.no_grad():
            return self.all_documents()

    def score_cold_items(self, user: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """(B,), (C, 3, W) item_content bytes of unseen items -> (B, C) relevances."""
        if self.content is None:
            raise ColdStartUnsupported("cdssm was trained without item text: its document tower is an id table")
        content = check_content("cdssm", content, "cold item content")
        positions, words = self.doc_tokens(content_documents(content, DOCUMENT_FIELDS))
        dev = self.content.device
        d = F.normalize(self.doc_tower(self.doc_tower.pool(positions.to(dev), words.to(dev))), dim=-1)  # (C, dim)
        q = F.normalize(self.queries(self.recent[user]), dim=-1)  # (B, dim)
        return q @ d.T

    def score_cold_users(self, history: torch.Tensor) -> torch.Tensor:
        """(B, I) fold-in rows -> (B, I): the query made of those items' titles."""
        q = F.normalize(self.queries(fold_in_items(history, self.history)), dim=-1)  # (B, dim)
        return q @ self.all_documents().T


def build(config: CDSSMConfig, train: InteractionData, item_vectors: torch.Tensor | None = None) -> CDSSM:
    """`item_vectors`: `item_content`'s (n_items, 3, W) bytes, or float (n_items, F) vectors to
    start the id fallback's document table, or None."""
    content, vectors = split_item_vectors("cdssm", item_vectors, train.n_items)
    return CDSSM(train.n_users, train.n_items, config, content, recent_items(train, config.history), vectors)


FAMILY = Family(
    name="cdssm", config=CDSSMConfig, build=build, batches=batches, loss=relevance_loss,
    paper="Shen et al. 2014 (C-DSSM)", item_content=item_content, inputs_from_state=content_from_state,
)
