"""`mv_dnn`: the multi-view deep neural network (Elkahky, Song & He 2015, "A Multi-View Deep
Learning Approach for Cross Domain User Modeling in Recommendation Systems"; deck 003).

One user view and several item views, each through its own tanh MLP into one semantic space:

    y_u = MLP_user(bag(the text of the user's last `history` training items))
    y_i = Σ_v MLP_v(bag_v(i))          v ∈ `views`: "text" (title + text), "category",
                                          "vectors" (the pretrained content vectors, linear in)
    R(u, i) = cos(y_u, y_i)
    P(i+ | u) = exp(γ R(u, i+)) / Σ_{i' ∈ {i+} ∪ I-} exp(γ R(u, i'))          loss -log P(i+ | u)

A bag is DSSM's sparse input: the normalised counts of the words — or, with `tokens: trigrams`,
of their hashed letter trigrams — times the view's first layer (`text_towers.WordBag`); the
user's bag is the mean of their items' bags. The paper's user view is the user's search and
browsing features and its item views are other domains (apps, news, movies); here the user view
is the user's history (the clicked item left out while training) and the item views are the
kinds of content an item has. The views are added in the shared space before the cosine, so the
network learns how much each view counts. I- are `negatives` uniform unseen items.

Content comes from the items table (`text_towers.item_content`: text and category) and, for the
"vectors" view, from the pretraining vector tables the `vectors` parameter names (`image` by
default; side by side, as for vbpr): the pipeline hands the family both (`ContentAndVectors`).
A source without those tables drops the view with a warning. Float `item_vectors` alone (or
none) make the no-text fallback: an id-table item view and an id-table bag for the user view,
which scores no cold items.
Every view reads content only, so a new item is scored from its text and category
(`score_cold_items`) and a new user from a fold-in history (`score_cold_users`).
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.models.base import ColdStartUnsupported, ContentAndVectors, Family, ModelConfig, RecommenderNetwork
from recforge.models.layers import lookup
from recforge.models.content.text_towers import (
    batches,
    content_from_state,
    relevance_loss,
    Tokenizer,
    Tokens,
    WordBag,
    check_content,
    content_documents,
    fold_in_items,
    id_table,
    in_chunks,
    item_content,
    distinct_items,
    pool_rows,
    recent_items,
    split_item_vectors,
)

# the items columns each item view reads; the user view reads the history's "text"
logger = logging.getLogger(__name__)

VIEW_FIELDS = {"text": ("title", "text"), "category": ("category",)}


class MVDNNConfig(ModelConfig):
    tokens: Tokens = "trigrams"
    max_len: int = Field(48, ge=1, description="words of title + text kept per item")
    trigram_buckets: int = Field(2**14, ge=16)
    max_trigrams: int = Field(20, ge=1, description="trigrams kept per word")
    layers: tuple[int, ...] = Field((128, 64), min_length=1, description="each view's tanh layers (the last: the space)")
    # "vectors": the content-vector view (opt-in; the default run's figures use text and category)
    views: tuple[Literal["text", "category", "vectors"], ...] = Field(("text", "category"), min_length=1)
    # the content tables of the "vectors" view (pipelines/training: ITEM_VECTORS)
    vectors: tuple[Literal["image", "text", "audio"], ...] = Field(("image",), min_length=1)
    history: int = Field(20, ge=1, description="the user's recent items the user view reads")
    gamma: float = Field(10.0, gt=0, description="γ, the softmax smoothing factor")
    negatives: int = Field(4, ge=1)


def mlp(layers: tuple[int, ...]) -> nn.Sequential:
    """The layers after a view's bag: Linear + tanh for each next width."""
    mods: list[nn.Module] = []
    for a, b in zip(layers[:-1], layers[1:]):
        mods += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*mods)


class MVDNN(RecommenderNetwork):
    def __init__(
        self, n_users: int, n_items: int, config: MVDNNConfig, content: torch.Tensor | None,
        recent: torch.Tensor, vectors: torch.Tensor | None = None, content_vectors: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.n_users, self.n_items, self.history = n_users, n_items, config.history
        width = config.layers[0]
        views = tuple(config.views)
        if "vectors" in views and (content is None or content_vectors is None):
            if content is not None:
                logger.warning("mv_dnn: no content vectors (none of %s in this source); the 'vectors' view "
                               "is left out", list(config.vectors))  # fmt: skip
            views = tuple(v for v in views if v != "vectors") or ("text",)
        self.views = views
        if "vectors" in views:
            self.register_buffer("content_vectors", content_vectors.float())  # (I, F)
            self.vector_in = nn.Linear(content_vectors.shape[1], width)
        self.register_buffer("recent", recent)  # (U, H) item indices, PAD on the left
        self.content: torch.Tensor | None
        if content is not None:
            self.register_buffer("content", content.to(torch.uint8))  # (I, 3, W)
            docs = {v: content_documents(content, fields) for v, fields in VIEW_FIELDS.items()}
            self.tokenizers = {
                "text": Tokenizer(docs["text"], config.tokens, config.max_len, config.trigram_buckets, config.max_trigrams),
                # categories are a closed set of words: a vocabulary (an unseen one is <unk>)
                "category": Tokenizer(docs["category"], "words", 8, config.trigram_buckets, 1),
            }  # fmt: skip
            for view, tokens in self.tokenizers.items():
                positions, words = tokens(docs[view])
                self.register_buffer(f"{view}_positions", positions, persistent=False)  # (I, L)
                self.register_buffer(f"{view}_words", words, persistent=False)  # (W + 1,) or (W + 1, G)
            self.user_bag = WordBag(self.tokenizers["text"].n_embeddings, width)
            self.bags = nn.ModuleDict({v: WordBag(self.tokenizers[v].n_embeddings, width)
                                       for v in self.views if v != "vectors"})  # fmt: skip
        else:
            self.content = None
            self.user_item = id_table(n_items, width, None)
            self.item = id_table(n_items, width, vectors)
        self.user_mlp = mlp(config.layers)
        self.item_mlps = nn.ModuleDict({v: mlp(config.layers) for v in self.views})

    # ------------------------------------------------------------------ views
    def history_bags(self, item: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, width), the user view's
        if self.content is None:
            return lookup(self.user_item, item)
        return self.user_bag(self.text_positions[item], self.text_words)

    def users(self, history: torch.Tensor) -> torch.Tensor:  # (B, H) items, PAD -> (B, dim)
        rows, (idx,) = distinct_items(self.history_bags, history)  # (U + 1, width), (B, H)
        return self.user_mlp(torch.tanh(pool_rows(rows, idx)))  # the mean of the items' bags

    def items(self, item: torch.Tensor) -> torch.Tensor:  # (N,) -> (N, dim)
        if self.content is None:
            return sum(self.item_mlps[v](torch.tanh(lookup(self.item, item))) for v in self.views)
        inputs = {v: (getattr(self, f"{v}_positions")[item], getattr(self, f"{v}_words"))
                  for v in self.views if v != "vectors"}  # fmt: skip
        if "vectors" in self.views:
            inputs["vectors"] = self.content_vectors[item]
        return self.view_sum(inputs)

    def view_sum(self, inputs: dict[str, object]) -> torch.Tensor:
        """Σ_v MLP_v(tanh(first layer_v)) over the views' inputs: (positions, word table) for a bag,
        (N, F) vectors for the "vectors" view."""
        first = {v: self.vector_in(x) if v == "vectors" else self.bags[v](*x) for v, x in inputs.items()}
        return sum(self.item_mlps[v](torch.tanh(first[v])) for v in self.views)

    def all_items(self) -> torch.Tensor:  # (I, dim) unit rows
        return F.normalize(in_chunks(self.items, self.n_items, self.recent.device), dim=-1)

    def relevance(self, history: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        """R(u, i) (B, …) of the users of (B, H) histories and (B, …) items."""
        y_u = F.normalize(self.users(history), dim=-1)  # (B, dim)
        rows, (idx,) = distinct_items(self.items, item)
        y_i = F.normalize(rows[idx], dim=-1)  # (B, …, dim)
        return (y_i * y_u.view(y_u.shape[0], *([1] * (item.dim() - 1)), -1)).sum(-1)

    # ------------------------------------------------------------------ scoring
    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:  # (B,), (B,) -> (B,)
        return self.relevance(self.recent[user], item)

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:  # (B,) -> (B, I)
        return F.normalize(self.users(self.recent[user]), dim=-1) @ self.all_items().T

    def item_embeddings(self) -> torch.Tensor:
        with torch.no_grad():
            return self.all_items()

    def score_cold_items(self, user: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """(B,), (C, 3, W) item_content bytes of unseen items -> (B, C) through the item views."""
        if self.content is None:
            raise ColdStartUnsupported("mv_dnn was trained without item text: its item view is an id table")
        vectors = None
        if isinstance(content, ContentAndVectors):
            content, vectors = content
        content = check_content("mv_dnn", content, "cold item content")
        dev = self.content.device
        inputs: dict[str, object] = {}
        for view in self.views:
            if view == "vectors":
                if vectors is None or vectors.shape[1] != self.content_vectors.shape[1]:
                    got = "none" if vectors is None else f"{vectors.shape[1]}-d"
                    raise ValueError(f"mv_dnn: cold items have {got} content vectors, the model was trained "
                                     f"on {self.content_vectors.shape[1]}-d ones")  # fmt: skip
                inputs[view] = vectors.to(self.content_vectors)
                continue
            positions, words = self.tokenizers[view](content_documents(content, VIEW_FIELDS[view]))
            inputs[view] = (positions.to(dev), words.to(dev))
        cold = F.normalize(self.view_sum(inputs), dim=-1)  # (C, dim)
        return F.normalize(self.users(self.recent[user]), dim=-1) @ cold.T

    def score_cold_users(self, history: torch.Tensor) -> torch.Tensor:
        """(B, I) fold-in rows -> (B, I): the user view over those items' text."""
        y_u = F.normalize(self.users(fold_in_items(history, self.history)), dim=-1)  # (B, dim)
        return y_u @ self.all_items().T


def build(config: MVDNNConfig, train: InteractionData, item_vectors=None) -> MVDNN:
    """`item_vectors`: a `ContentAndVectors` (`item_content`'s (n_items, 3, W) bytes and the
    (n_items, F) content vectors, or None), or the bytes alone, or float (n_items, F) vectors to
    start the id fallback's item table, or None."""
    content_vectors = None
    if isinstance(item_vectors, ContentAndVectors):
        item_vectors, content_vectors = item_vectors
        if content_vectors is not None and content_vectors.shape[0] != train.n_items:
            raise ValueError(f"mv_dnn: {content_vectors.shape[0]} content vectors for {train.n_items} items")
    content, vectors = split_item_vectors("mv_dnn", item_vectors, train.n_items)
    return MVDNN(train.n_users, train.n_items, config, content, recent_items(train, config.history), vectors,
                 content_vectors)  # fmt: skip


def inputs_from_state(state: dict[str, torch.Tensor]):
    """The item text (and content vectors) a saved model was trained with (`Recommender.load`)."""
    content = content_from_state(state)
    if "content_vectors" in state:
        return ContentAndVectors(content, state["content_vectors"])
    return content


FAMILY = Family(
    name="mv_dnn", config=MVDNNConfig, build=build, batches=batches, loss=relevance_loss,
    paper="Elkahky, Song & He 2015 (MV-DNN)", item_content=item_content, inputs_from_state=inputs_from_state,
)
