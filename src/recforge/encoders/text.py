"""Text encoder: word vectors plus Kim's sentence CNN, pretrained on a proxy task.

Following Content2Vec's text module (Nedelec et al. 2016): word vectors are first learned on the
item texts with skip-gram word2vec (Mikolov et al. 2013, "Distributed representations of words
and phrases and their compositionality"; gensim), then initialise the embedding table of Kim's CNN
(Kim 2014, "Convolutional neural networks for sentence classification"): parallel 1-D
convolutions of widths 3/4/5 over the word sequence, max-over-time pooling, dropout, softmax.
The pooled features (the penultimate layer) are the item vector.

With `tokens: trigrams` a word is instead the bag of its letter trigrams ("#cat#" -> #ca, cat,
at#), hashed into `n_buckets` (word hashing of DSSM, Huang et al. 2013, "Learning deep structured
semantic models for web search using clickthrough data", and of the convolutional C-DSSM, Shen
et al. 2014): an unseen or misspelled word still shares most features with the word it resembles.
The trigram table is learned end-to-end on the proxy task, as in C-DSSM.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from recforge.data.errors import DataError
from recforge.encoders.media_io import OnBadMedia
from recforge.encoders.proxy import (
    ContentEncoderConfig,
    ContentNetwork,
    EncoderResult,
    Loaded,
    pretrain_encoder,
)
from recforge.training.callbacks import Callback

logger = logging.getLogger(__name__)

PAD, UNK = 0, 1
TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


class TextEncoderConfig(ContentEncoderConfig):
    """Hyper-parameters of the text encoder; the vector has n_filters * len(filter_widths) dims."""

    fields: tuple[str, ...] = Field(("title", "text"), min_length=1, description="items columns, joined")
    tokens: Literal["words", "trigrams"] = "words"
    max_len: int = Field(64, ge=1, description="words kept per item (the rest is cut)")
    embedding_dim: int = Field(64, ge=1)
    min_count: int = Field(1, ge=1, description="rarer words map to the unknown word (words mode)")
    word2vec: bool = Field(True, description="initialise the word table with skip-gram vectors")
    word2vec_epochs: int = Field(10, ge=1)
    window: int = Field(5, ge=1)
    static_embeddings: bool = Field(False, description="Kim's 'static' variant: do not fine-tune words")
    n_buckets: int = Field(2**14, ge=16, description="hash buckets of letter trigrams (trigrams mode)")
    max_trigrams: int = Field(20, ge=1, description="trigrams kept per word (longer words are cut)")
    filter_widths: tuple[int, ...] = Field((3, 4, 5), min_length=1)
    n_filters: int = Field(32, ge=1)
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    on_bad_media: OnBadMedia = Field("raise", description="for an item with no text at all")

    @model_validator(mode="after")
    def _check(self) -> TextEncoderConfig:
        if self.static_embeddings and not (self.word2vec and self.tokens == "words"):
            raise ValueError(
                "static_embeddings keeps the word2vec vectors fixed: it needs tokens=words and word2vec=true"
            )
        return self


# ----------------------------------------------------------------------------- tokens
def tokenize(text: str) -> list[str]:
    """Lower-cased words (letters, digits, inner hyphens/apostrophes)."""
    return TOKEN.findall(text.lower())


def letter_trigrams(word: str) -> list[str]:
    """The letter trigrams of `word` with boundary marks: "cat" -> ["#ca", "cat", "at#"]."""
    marked = f"#{word}#"
    return [marked[i : i + 3] for i in range(len(marked) - 2)]


def trigram_ids(word: str, n_buckets: int, max_trigrams: int | None = None) -> list[int]:
    """Hashed trigram ids of `word` in 1..n_buckets-1 (0 is padding). crc32 rather than `hash`,
    which Python salts per process, so ids are the same in every run."""
    grams = letter_trigrams(word)[:max_trigrams]
    return [1 + zlib.crc32(g.encode("utf-8")) % (n_buckets - 1) for g in grams]


def _stable_hash(s: str) -> int:
    return zlib.crc32(s.encode("utf-8"))


def item_documents(items: pd.DataFrame, fields: Sequence[str]) -> list[list[str]]:
    """One token list per item: the `fields` columns joined (missing values are empty)."""
    missing = [f for f in fields if f not in items.columns]
    if missing:
        found = list(items.columns)
        raise DataError(f"missing text column(s) {missing}; found {found}", source="items", column=missing[0])
    joined = items[list(fields)].astype("string").fillna("").agg(" ".join, axis=1)
    return [tokenize(t) for t in joined.tolist()]


class TextVocabulary:
    """Maps token lists to the network's input tensor: word ids (N, L) in words mode, hashed
    trigram ids (N, L, G) in trigrams mode. Built from the texts it is given (no labels involved)."""

    def __init__(self, docs: Sequence[Sequence[str]], config: TextEncoderConfig) -> None:
        self.config = config
        counts = Counter(w for doc in docs for w in doc)
        kept = sorted((w for w, c in counts.items() if c >= config.min_count), key=lambda w: (-counts[w], w))
        self.words = ["<pad>", "<unk>", *kept]
        self.index = {w: i for i, w in enumerate(self.words)}

    @property
    def n_embeddings(self) -> int:
        """Rows of the embedding table."""
        return self.config.n_buckets if self.config.tokens == "trigrams" else len(self.words)

    def encode(self, docs: Sequence[Sequence[str]]) -> torch.Tensor:
        """Token lists -> int64 (N, L) word ids or (N, L, G) trigram ids; 0 pads."""
        positions, table = self.encode_words(docs)
        return table[positions]

    def encode_words(self, docs: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token lists -> (positions (N, L), table (U + 1,) word ids or (U + 1, G) trigram ids)
        over the U distinct words of `docs`: `encode` is table[positions]. The last table row is
        padding, so a network can embed each distinct word once and gather (models/text_towers)."""
        cfg = self.config
        length = max(cfg.max_len, max(cfg.filter_widths))  # every filter fits at least once
        uniq: dict[str, int] = {}
        pos = np.full((len(docs), length), -1, dtype=np.int64)  # index into uniq, -1 = padding
        for i, doc in enumerate(docs):
            for j, w in enumerate(doc[:length]):
                pos[i, j] = uniq.setdefault(w, len(uniq))
        words = list(uniq)
        if cfg.tokens == "words":
            table = np.array([self.index.get(w, UNK) for w in words] + [PAD], dtype=np.int64)  # (U + 1,)
        else:
            table = np.zeros((len(words) + 1, cfg.max_trigrams), dtype=np.int64)  # (U + 1, G)
            for k, w in enumerate(words):
                ids = trigram_ids(w, cfg.n_buckets, cfg.max_trigrams)
                table[k, : len(ids)] = ids
        # the extra last row is the padding entry that -1 selects
        return torch.from_numpy(pos % len(table)), torch.from_numpy(table)


def word2vec_vectors(
    docs: Sequence[Sequence[str]], vocab: TextVocabulary, config: TextEncoderConfig
) -> np.ndarray:
    """(V, D) skip-gram vectors for the vocabulary (rows of words gensim did not see are zero)."""
    from gensim.models import Word2Vec

    model = Word2Vec(
        sentences=[list(d) for d in docs if d],
        vector_size=config.embedding_dim,
        window=config.window,
        min_count=config.min_count,
        sg=1,
        negative=5,
        epochs=config.word2vec_epochs,
        seed=config.train.seed,
        workers=1,  # gensim is deterministic only single-threaded
        hashfxn=_stable_hash,
        sample=0,
    )
    out = np.zeros((len(vocab.words), config.embedding_dim), dtype=np.float32)
    for i, w in enumerate(vocab.words):
        if w in model.wv.key_to_index:
            out[i] = model.wv[w]
    return out


# ----------------------------------------------------------------------------- network
class KimCNN(ContentNetwork):
    """Kim (2014): embeddings -> parallel convolutions -> max-over-time -> dropout -> softmax.

    Input (B, L) word ids, or (B, L, G) hashed trigram ids whose embeddings are summed into one
    vector per word (the DSSM word-hashing layer).
    """

    def __init__(
        self,
        n_embeddings: int,
        dim: int,
        filter_widths: Sequence[int],
        n_filters: int,
        dropout: float,
        n_classes: int,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_embeddings, dim, padding_idx=PAD)
        self.convs = nn.ModuleList(nn.Conv1d(dim, n_filters, w) for w in filter_widths)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(n_filters * len(filter_widths), n_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L) or (B, L, G) ids -> (B, n_filters * n_widths)."""
        e = self.embedding(x)  # (B, L, D) or (B, L, G, D)
        if e.dim() == 4:
            e = e.sum(dim=2)  # bag of trigrams -> (B, L, D)
        return self.convolve(e)

    def convolve(self, e: torch.Tensor) -> torch.Tensor:
        """(B, L, D) embedded words -> (B, n_filters * n_widths): convolutions, max over time."""
        e = e.transpose(1, 2)  # (B, D, L)
        pooled = [F.relu(conv(e)).amax(dim=2) for conv in self.convs]  # n_widths x (B, F)
        return torch.cat(pooled, dim=1)  # (B, F * n_widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) ids -> (B, n_classes); dropout sits on the penultimate layer, as in Kim."""
        return self.head(self.dropout(self.embed(x)))


# ----------------------------------------------------------------------------- entry points
def _documents(items: pd.DataFrame, config: TextEncoderConfig) -> tuple[list[list[str]], np.ndarray, list]:
    """Token lists of the items with any text, their row positions, and skipped records."""
    docs = item_documents(items, config.fields)
    kept = np.array([i for i, d in enumerate(docs) if d], dtype=np.int64)
    ids = items["item_id"].astype(str).to_numpy(dtype=object)
    empty = np.setdiff1d(np.arange(len(docs)), kept)
    reason = f"no text in {list(config.fields)}"
    skipped = [{"item_id": ids[i], "path": "", "reason": reason} for i in empty]
    if skipped and config.on_bad_media == "raise":
        raise DataError(
            f"{len(skipped)} item(s) have no text in {list(config.fields)}",
            source="items",
            column=config.fields[0],
            rows=[s["item_id"] for s in skipped],
            hint="Fill the text or set on_bad_media: skip to leave such items without a vector",
        )
    return [docs[i] for i in kept], kept, skipped


def fit_text_encoder(
    items: pd.DataFrame,
    config: TextEncoderConfig,
    *,
    heldout_ids: Sequence[str] | None = None,
    callbacks: Sequence[Callback] = (),
) -> EncoderResult:
    """Learn word vectors, pretrain Kim's CNN on the proxy task, vectorise every item with text.

    The vocabulary and word2vec see every item's text (no labels involved); the CNN never sees the
    held-out items' labels. `heldout_ids` replaces the random stratified hold-out.
    """
    docs, _, _ = _documents(items, config)
    vocab = TextVocabulary(docs, config)

    def load(some_items: pd.DataFrame, media: object = None) -> Loaded:
        some_docs, kept, skipped = _documents(some_items, config)
        return Loaded(vocab.encode(some_docs), kept, skipped)

    def build(n_classes: int, x: torch.Tensor, train_rows: np.ndarray) -> KimCNN:
        c = config
        network = KimCNN(
            vocab.n_embeddings, c.embedding_dim, c.filter_widths, c.n_filters, c.dropout, n_classes
        )
        if config.tokens == "words" and config.word2vec:
            vectors = torch.from_numpy(word2vec_vectors(docs, vocab, config))
            seen = vectors.abs().sum(dim=1) > 0  # (V,)
            # skip-gram vectors are ~10x smaller than N(0, 1); rescaled, the CNN learns at its usual pace
            vectors = vectors / vectors[seen].std().clamp_min(1e-12)
            with torch.no_grad():
                network.embedding.weight[seen] = vectors[seen]
            network.embedding.weight.requires_grad_(not config.static_embeddings)
        return network

    result = pretrain_encoder(
        "text",
        items,
        None,
        config,
        load=load,
        build=build,
        heldout_ids=heldout_ids,
        callbacks=callbacks,
        preprocessing=vocab,
    )
    result.report["tokens"] = config.tokens
    result.report["vocabulary"] = len(vocab.words) - 2
    return result


def train_text_encoder(items: pd.DataFrame, config: TextEncoderConfig) -> tuple[pd.DataFrame, dict]:
    """Pipeline entry point: (vector table `item_id, v0..v{D-1}`, report dict)."""
    result = fit_text_encoder(items, config)
    return result.vectors, result.report
