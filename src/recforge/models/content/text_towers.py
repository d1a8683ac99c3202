"""What the text families share (text_cnn, cdssm, mv_dnn): item text as content, its tokens, word
vectors, the users' recent items, sampled negatives and DSSM's cosine softmax.

Content is the raw text, not token ids: `item_content(items, item_map)` writes each item's title,
text and category as UTF-8 bytes, (n_items, 3, width) uint8, and the network tokenises them in
`build` as its config says (words or letter trigrams, how many words). That way the one tensor the
pipeline hands over (for training items, and again for cold items in evaluation) does not depend
on the family's parameters, and a saved model keeps its training text as a buffer: on load the
same vocabulary is rebuilt from it. Tokens come from `encoders.text` (the pretraining text
encoder's tokenizer, vocabulary and letter-trigram hashing), so a word is read the same way there
and here.

A word table holds each distinct word of a call once (its vocabulary id, or its hashed trigram
ids); a document is a row of positions into it, the table's last row being padding. Networks
embed the distinct words of a batch once and gather (`embed_words`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from recforge.data.errors import DataError
from recforge.data.interactions import InteractionData
from recforge.data.sequences import PAD
from recforge.encoders.text import TextEncoderConfig, TextVocabulary, tokenize
from recforge.models.base import Batch
from recforge.models.layers import init_embedding_from_vectors
from recforge.training.losses import sampled_softmax
from recforge.training.samplers import Positives, shuffled_chunks, uniform_negatives

logger = logging.getLogger(__name__)

FIELDS = ("title", "text", "category")
WIDTH = 512  # bytes kept per field: about 70 words of text
Tokens = Literal["words", "trigrams"]
# Negatives are drawn for this many rows at once (as in bpr.batches).
_DRAW_ROWS = 1 << 16


# ----------------------------------------------------------------------------- content
def _utf8(values: pd.Series, width: int) -> np.ndarray:
    """(n, width) uint8 UTF-8 bytes of strings, cut to `width` (possibly inside a character, which
    decoding drops) and 0-padded."""
    raw = values.str.encode("utf-8").tolist()
    return np.array(raw, dtype=f"S{width}").view(np.uint8).reshape(len(raw), width)


def item_content(items: pd.DataFrame, item_map: pd.DataFrame, width: int = WIDTH) -> torch.Tensor:
    """(n_items, 3, width) uint8: the UTF-8 bytes of each item's title, text and category, rows in
    `item_map`'s item_idx order. A missing column or an item of the map without a row in `items`
    is a `DataError`; an item whose title and text are both empty is kept (its text tower reads
    padding only) and counted in a warning."""
    missing = [c for c in ("item_id", *FIELDS) if c not in items.columns]
    if missing:
        raise DataError(f"missing column(s) {missing} for the text families; found {list(items.columns)}",
                        source="items", column=missing[0])  # fmt: skip
    ids = item_map.sort_values("item_idx")["item_id"].astype("string").to_numpy()
    table = items.drop_duplicates("item_id").astype({"item_id": "string"}).set_index("item_id")
    absent = pd.Index(ids).difference(table.index)
    if len(absent):
        raise DataError(f"{len(absent)} item(s) of the item map have no row, so no text",
                        source="items", column="item_id", rows=absent.tolist())  # fmt: skip
    table = table.reindex(ids)
    fields = [table[f].astype("string").fillna("").reset_index(drop=True) for f in FIELDS]
    empty = ((fields[0].str.strip() == "") & (fields[1].str.strip() == "")).to_numpy()
    if empty.any():
        logger.warning("%d of %d items have no title or text (first: %s); their text towers read "
                       "padding only", empty.sum(), len(ids), list(ids[empty][:5]))  # fmt: skip
    return torch.from_numpy(np.stack([_utf8(f, width) for f in fields], axis=1))


def check_content(family: str, content: object, what: str = "item content") -> torch.Tensor:
    """`content` if it is `item_content`'s (n, 3, width) integer bytes, else a ValueError."""
    if not isinstance(content, torch.Tensor) or content.is_floating_point() or content.dim() != 3 \
            or content.shape[1] != len(FIELDS):  # fmt: skip
        shape = tuple(content.shape) if isinstance(content, torch.Tensor) else type(content).__name__
        dtype = f" {content.dtype}" if isinstance(content, torch.Tensor) else ""
        raise ValueError(f"{family}: {what} must be the (n, {len(FIELDS)}, width) uint8 bytes of "
                         f"{', '.join(FIELDS)} from text_towers.item_content; got {shape}{dtype}")  # fmt: skip
    return content


def content_documents(content: torch.Tensor, fields: Sequence[str]) -> list[list[str]]:
    """Token lists of (n, 3, width) content: the `fields` of each item joined, then tokenised by
    `encoders.text.tokenize`."""
    rows = content.detach().cpu().to(torch.uint8).numpy()
    cols = [FIELDS.index(f) for f in fields]
    docs = []
    for item in rows:
        text = " ".join(item[c].tobytes().rstrip(b"\0").decode("utf-8", errors="ignore") for c in cols)
        docs.append(tokenize(text))
    return docs


def split_item_vectors(
    family: str, item_vectors: torch.Tensor | None, n_items: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(text content, float vectors) from what `build` received: `item_content`'s bytes, or float
    (n_items, F) vectors (which start the no-text fallback's item table), or None."""
    if item_vectors is None:
        return None, None
    if item_vectors.shape[0] != n_items:
        raise ValueError(f"{family}: item content has {item_vectors.shape[0]} rows for {n_items} items")
    if torch.is_floating_point(item_vectors):
        if item_vectors.dim() != 2:
            raise ValueError(f"{family}: float item_vectors must be (n_items, F); got {tuple(item_vectors.shape)}")
        return None, item_vectors
    return check_content(family, item_vectors), None


def id_table(n_items: int, dim: int, vectors: torch.Tensor | None) -> nn.Embedding:
    """The item table of the no-text fallback (a plain two-tower model over ids), started from
    `vectors` when given."""
    table = nn.Embedding(n_items, dim)
    nn.init.normal_(table.weight, std=0.1)
    if vectors is not None:
        init_embedding_from_vectors(table, vectors)
    return table


# ----------------------------------------------------------------------------- tokens
class Tokenizer:
    """Token lists -> (positions (N, L), word table) through `encoders.text.TextVocabulary`: in
    words mode the vocabulary of the documents it is built on (unseen words are `<unk>`), in
    trigrams mode every word hashed into `buckets` by its letter trigrams ("#good#" -> #go, goo,
    ood, od#), unseen words included."""

    def __init__(
        self, docs: Sequence[Sequence[str]], tokens: Tokens, max_len: int, buckets: int,
        max_trigrams: int, min_len: int = 1,
    ) -> None:  # fmt: skip
        config = TextEncoderConfig(tokens=tokens, max_len=max_len, n_buckets=buckets, max_trigrams=max_trigrams,
                                   filter_widths=(min_len,), word2vec=False)  # fmt: skip
        self.vocabulary = TextVocabulary(docs, config)

    @property
    def n_embeddings(self) -> int:
        return self.vocabulary.n_embeddings

    def __call__(self, docs: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vocabulary.encode_words(docs)


def word_mask(positions: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """Which positions hold a word (the table's last row is padding)."""
    return positions != words.shape[0] - 1


def embed_words(embedding: nn.Embedding, positions: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """(…, L) positions into a word table (W + 1,) or (W + 1, G) -> (…, L, D): each distinct word of
    the batch is embedded once; a trigram-hashed word is the sum of its trigrams' vectors (DSSM's
    word hashing layer: the count vector of its letter trigrams times the table); padding is 0."""
    uniq, inverse = torch.unique(positions, return_inverse=True)
    e = embedding(words[uniq])  # (U, D) or (U, G, D)
    if e.dim() == 3:
        e = e.sum(dim=1)  # (U, D)
    return e[inverse]  # (…, L, D)


class WordBag(nn.Module):
    """The first layer of a DSSM view over text: the mean of the document's word vectors, i.e. the
    table times its normalised bag of words (of letter trigrams in trigram mode), plus a bias."""

    def __init__(self, n_embeddings: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_embeddings, dim, padding_idx=0)
        self.bias = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.embedding.weight, std=dim**-0.5)
        with torch.no_grad():
            self.embedding.weight[0].zero_()

    def forward(self, positions: torch.Tensor, words: torch.Tensor) -> torch.Tensor:  # (N, L) -> (N, D)
        e = embed_words(self.embedding, positions, words)  # (N, L, D)
        mask = word_mask(positions, words).unsqueeze(-1)  # (N, L, 1)
        return (e * mask).sum(1) / mask.sum(1).clamp_min(1) + self.bias


# ----------------------------------------------------------------------------- users' items
def recent_items(train: InteractionData, n: int) -> torch.Tensor:
    """(n_users, n) each user's last `n` distinct training items, oldest first and right-aligned,
    PAD (-1) on the left; a repeated item counts at its latest interaction."""
    out = torch.full((train.n_users, n), PAD, dtype=torch.long)
    if n == 0 or len(train) == 0:
        return out
    order = np.lexsort((np.arange(len(train)), train.timestamp, train.user_idx))  # user, time, row
    user, item = train.user_idx[order], train.item_idx[order]
    key = user * np.int64(train.n_items) + item
    _, first_from_end = np.unique(key[::-1], return_index=True)
    keep = np.sort(len(key) - 1 - first_from_end)  # the latest row of each (user, item), in order
    user, item = user[keep], item[keep]
    counts = np.bincount(user, minlength=train.n_users)
    from_end = np.cumsum(counts)[user] - np.arange(len(user))  # 1 = the user's most recent item
    sel = from_end <= n
    out[torch.as_tensor(user[sel]), torch.as_tensor(n - from_end[sel])] = torch.as_tensor(item[sel])
    return out


def fold_in_items(history: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n_items) dense fold-in rows -> (B, n) item indices, PAD where a row has fewer items. The
    rows carry no time order, so the `n` heaviest are kept, heaviest first (the towers pool over
    a history, so its order does not matter)."""
    k = min(n, history.shape[1])
    values, idx = history.float().topk(k, dim=1, sorted=True)  # (B, k)
    idx = idx.masked_fill(values <= 0, PAD)
    return F.pad(idx, (n - k, 0), value=PAD)  # (B, n)


def leave_out(history: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
    """(B, H) history with the target `item` (B,) masked to PAD: a training query must not contain
    the item it is asked to find."""
    return history.masked_fill(history == item.unsqueeze(1), PAD)


def distinct_items(
    tower: Callable[[torch.Tensor], torch.Tensor], *index: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`tower` (n,) items -> (n, D) run once over the distinct items of all `index` tensors:
    (rows (U + 1, D), each tensor as indices into rows), the last row a zero for PAD entries.
    Gather with `rows[idx]`, or pool a history with `pool_rows`."""
    flat = torch.cat([t.reshape(-1) for t in index])  # (ΣN,)
    uniq, inverse = torch.unique(flat.clamp_min(0), return_inverse=True)
    rows = tower(uniq)  # (U, D)
    rows = torch.cat([rows, rows.new_zeros(1, rows.shape[1])])  # (U + 1, D)
    inverse = inverse.masked_fill(flat < 0, len(uniq))
    return rows, [i.view(t.shape) for i, t in zip(inverse.split([t.numel() for t in index]), index)]


def pool_rows(rows: torch.Tensor, idx: torch.Tensor, mode: Literal["mean", "max"] = "mean") -> torch.Tensor:
    """(R, D) rows whose last is padding, (B, H) indices -> (B, D) mean (or max) over each row's
    non-padding entries, 0 for none: one fused `embedding_bag`, without a (B, H, D) copy."""
    return F.embedding_bag(idx, rows, mode=mode, padding_idx=rows.shape[0] - 1)


def in_chunks(tower: Callable[[torch.Tensor], torch.Tensor], n: int, device: torch.device,
              chunk: int = 4096) -> torch.Tensor:  # fmt: skip
    """(n, D) `tower` outputs of items 0..n-1, `chunk` at a time (bounded activations)."""
    items = torch.arange(n, device=device)
    return torch.cat([tower(c) for c in items.split(chunk)]) if n else tower(items)


# ----------------------------------------------------------------------------- training
def negative_batches(
    train: InteractionData, batch_size: int, generator: torch.Generator, negatives: int
) -> Iterator[Batch]:
    """Shuffled {"user" (B,), "item" (B,), "negative" (B, N)}: every training row with `negatives`
    uniform items the user has not interacted with, drawn a chunk of batches at a time."""
    user = torch.as_tensor(train.user_idx, dtype=torch.int64)  # (N,)
    item = torch.as_tensor(train.item_idx, dtype=torch.int64)  # (N,)
    positives = Positives(train.csr)
    for idx in shuffled_chunks(len(user), batch_size, generator, _DRAW_ROWS):  # (R,)
        u, i = user.index_select(0, idx), item.index_select(0, idx)  # (R,) each
        j = uniform_negatives(u, positives, negatives, generator)  # (R, N)
        for b in range(0, len(idx), batch_size):
            yield {"user": u[b : b + batch_size], "item": i[b : b + batch_size], "negative": j[b : b + batch_size]}


def cosine_softmax(relevance_pos: torch.Tensor, relevance_neg: torch.Tensor, gamma: float) -> torch.Tensor:
    """-log P(D+ | Q) averaged over the batch, with the posterior of the clicked document among it
    and the sampled ones smoothed by γ (DSSM, Huang et al. 2013, eq. 4; C-DSSM; MV-DNN):

        P(D+ | Q) = exp(γ R(Q, D+)) / Σ_{D' ∈ {D+} ∪ D-} exp(γ R(Q, D'))

    `relevance_pos` (B,) and `relevance_neg` (B, N) are cosine relevances R."""
    return sampled_softmax(gamma * relevance_pos, gamma * relevance_neg)


# --- the three hooks the text families share -----------------------------------------------


def content_from_state(state: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The item text a saved text family was trained with (`Recommender.load`); None: the id
    fallback (trained without text)."""
    return state.get("content")


def batches(network, train: InteractionData, config, batch_size: int, generator: torch.Generator) -> Iterator[Batch]:
    """An epoch of (user, clicked item, `config.negatives` sampled items) rows."""
    return negative_batches(train, batch_size, generator, config.negatives)


def relevance_loss(network, batch: Batch, config) -> torch.Tensor:
    """-log P(D+ | Q) over the clicked item and the sampled ones (`cosine_softmax`), the query
    made of the user's recent items without the clicked one (cdssm, mv_dnn): `network.relevance
    (history (B, H), items (B, 1 + N)) -> (B, 1 + N)` cosines."""
    u, i, j = batch["user"], batch["item"], batch["negative"]  # (B,), (B,), (B, N)
    history = leave_out(network.recent[u], i)  # (B, H)
    r = network.relevance(history, torch.cat([i.unsqueeze(1), j], dim=1))  # (B, 1 + N)
    return cosine_softmax(r[:, 0], r[:, 1:], config.gamma)
