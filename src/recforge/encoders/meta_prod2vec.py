"""meta-prod2vec: prod2vec with item metadata as side information in both input and context
(Vasile, Smirnova & Conneau 2016, "Meta-Prod2Vec: product embeddings using side-information for
recommendation").

Items and their metadata values (here category and brand) share one vocabulary. For a pair of
items (i, j) in the same window, with M(i) the metadata tokens of i, the loss sums

    L = L_{J|I} + λ · (L_{M|I} + L_{J|M} + L_{M|M} + L_{I|M})

- L_{J|I}: i predicts j (prod2vec);
- L_{M|I}: i predicts each metadata token of j;
- L_{J|M}: each metadata token of i predicts j;
- L_{M|M}: each metadata token of i predicts each of j's;
- L_{I|M}: each metadata token of i predicts i itself (once per occurrence of i).

Every term is negative-sampled skip-gram, so the model is the torch engine fed weighted
(input, target) pairs over the joint vocabulary (weight 1 for L_{J|I}, λ for the others); noise
is drawn from the joint unigram^0.75 distribution. Metadata pulls items that share a category or
brand together, which matters most for rare items with few co-occurrences.

Metadata tokens are the joint corpus's most frequent words, which batched SGD handles worse than
word2vec's sequential one: their examples are subsampled like frequent words, and `row_cap`
bounds the summed update a token's row receives in one batch (without both, training on the
default shop diverges within the first epoch).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from pydantic import Field

from recforge.data.errors import DataError
from recforge.data.schema import STRING
from recforge.encoders.sequences import Corpus, SequenceConfig, gather, keep_probabilities, subsample, window_pairs
from recforge.encoders.word2vec import (
    EmbeddingResult,
    Examples,
    Word2VecConfig,
    make_network,
    noise_distribution,
    throughput,
    train_word2vec,
)
from recforge.training.callbacks import Callback
from recforge.training.config import TrainConfig

logger = logging.getLogger(__name__)


class MetaProd2VecConfig(Word2VecConfig):
    """meta-prod2vec's hyper-parameters: word2vec's, the sentences, the metadata and λ."""

    sequences: SequenceConfig = SequenceConfig()
    metadata: tuple[str, ...] = Field(("category", "brand"), min_length=1, description="items table columns")
    meta_weight: float = Field(1.0, ge=0, description="λ: weight of the metadata terms")
    # a category or brand token is updated by a large share of every batch: cap its summed step
    row_cap: int | None = Field(8, ge=1, description="fused step: most summed updates of one row per batch")


def item_metadata(
    items: pd.DataFrame, item_ids: Sequence[str], columns: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """(codes (n_items, F) int64, -1 where missing; token names "column=value") for the items of
    the id map (`item_ids` in item_idx order). Code c stands for metadata token c."""
    missing = [c for c in columns if c not in items.columns]
    if missing:
        raise DataError(f"items table has no metadata column(s) {missing}", column=missing[0])
    table = items.drop_duplicates("item_id").set_index(items["item_id"].drop_duplicates().astype(STRING))
    ids = pd.Index(pd.array(list(item_ids), dtype=STRING))
    codes, names = [], []
    for column in columns:
        values = table[column].astype(STRING).reindex(ids)  # (n_items,) NA for unknown items
        code, uniques = pd.factorize(values)  # NA -> -1
        codes.append(np.where(code >= 0, code + len(names), -1))
        names += [f"{column}={u}" for u in uniques]
    return np.stack(codes, axis=1).astype(np.int64), names


def joint_counts(corpus: Corpus, meta: np.ndarray, n_meta: int | None = None) -> np.ndarray:
    """(n_items + n_meta,) occurrences over the joint vocabulary: a metadata token occurs wherever
    one of its items does."""
    n_meta = int(meta.max()) + 1 if n_meta is None else n_meta
    n_meta = max(n_meta, 0)
    known = meta.reshape(-1) >= 0
    per_token = np.repeat(corpus.counts, meta.shape[1])[known]  # each item's count, per field
    return np.concatenate([corpus.counts, np.bincount(meta.reshape(-1)[known], weights=per_token, minlength=n_meta)])


def meta_examples(
    corpus: Corpus, meta: np.ndarray, config: MetaProd2VecConfig
) -> Callable[[torch.Generator], Examples]:
    """`draw(generator) -> Examples`: the five terms' weighted pairs over the joint vocabulary,
    where metadata code c is token n_items + c."""
    n_items = corpus.n_items
    tokens = torch.from_numpy(corpus.tokens)
    sequence = torch.from_numpy(corpus.sequence)
    meta_tok = torch.from_numpy(np.where(meta >= 0, meta + n_items, -1))  # (n_items, F)
    keep = keep_probabilities(corpus.counts, config.sample)
    # Metadata tokens are the most frequent words of the joint corpus (a category occurs wherever
    # any of its items does): subsampled like frequent words, an example survives with the keep
    # probability of each metadata token in it. Unsubsampled they fill a batch with hundreds of
    # updates of the same row, and the summed step diverges.
    keep_token = torch.from_numpy(keep_probabilities(joint_counts(corpus, meta), config.sample).astype(np.float32))
    keep_token[:n_items] = 1.0  # items were subsampled as tokens already
    lam = config.meta_weight

    def draw(generator: torch.Generator) -> Examples:
        kept = subsample(corpus, keep, generator)  # (M,)
        t, s = gather(tokens, kept), gather(sequence, kept)
        c, x = window_pairs(s, config.window, generator)
        i, j = gather(t, c), gather(t, x)  # (P,) input item, context item
        mi, mj = gather(meta_tok, i), gather(meta_tok, j)  # (P, F)
        f = mi.shape[1]
        inputs = [i, i[:, None].expand(-1, f), mi, mi[:, :, None].expand(-1, -1, f), gather(meta_tok, t)]
        targets = [j, mj, j[:, None].expand(-1, f), mj[:, None, :].expand(-1, f, -1), t[:, None].expand(-1, f)]
        weights = [1.0, lam, lam, lam, lam]
        inp = torch.cat([v.reshape(-1) for v in inputs])
        tgt = torch.cat([v.reshape(-1) for v in targets])
        w = torch.cat([torch.full((v.numel(),), wt, dtype=torch.float32) for v, wt in zip(inputs, weights)])
        ok = (inp >= 0) & (tgt >= 0) & (w > 0)  # items without a metadata value have no such term
        inp, tgt, w = inp[ok], tgt[ok], w[ok]
        survive = torch.rand(len(inp), generator=generator) < gather(keep_token, inp) * gather(keep_token, tgt)
        return {"target": tgt[survive], "input": inp[survive], "weight": w[survive]}

    return draw


def fit_meta_prod2vec(
    corpus: Corpus,
    meta: np.ndarray,
    n_meta: int,
    config: MetaProd2VecConfig,
    train_config: TrainConfig,
    callbacks: Sequence[Callback] = (),
) -> EmbeddingResult:
    """Item vectors (the item rows of the joint input table) for every item of `corpus`.

    `meta` (n_items, F) holds each item's metadata codes in [0, n_meta), -1 where missing.
    """
    if not len(corpus):
        raise ValueError("the corpus is empty: no training sequence is long enough")
    if meta.shape[0] != corpus.n_items:
        raise ValueError(f"metadata has {meta.shape[0]} rows for {corpus.n_items} items")
    if config.architecture != "skipgram":
        raise ValueError("meta-prod2vec is defined on skip-gram pairs; set architecture: skipgram")
    n_vocab = corpus.n_items + n_meta
    counts = joint_counts(corpus, meta, n_meta)
    network = make_network(n_vocab, n_vocab, config, train_config)
    noise = noise_distribution(counts, config.ns_exponent)
    cpu = time.process_time()
    history = train_word2vec(network, meta_examples(corpus, meta, config), noise, config, train_config, callbacks)
    index = np.flatnonzero(corpus.counts > 0)
    vectors = network.input.weight.detach()[torch.from_numpy(index)].float().cpu().numpy()
    stats = throughput(len(corpus), history, time.process_time() - cpu)
    report = {
        "engine": "torch", "sequences": corpus.n_sequences, "tokens": len(corpus), "items": len(index),
        "metadata_tokens": n_meta, "metadata": list(config.metadata), "meta_weight": config.meta_weight, **stats,
    }
    logger.info("meta-prod2vec: %d items, %d metadata tokens, %.0f words/s", len(index), n_meta, stats["words_per_s"])
    return EmbeddingResult(index=index, vectors=vectors, report=report)
