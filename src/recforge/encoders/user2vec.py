"""user2vec: users as the global context of their item sequences, paragraph-vector style
(Le & Mikolov 2014, "Distributed representations of sentences and documents"; applied to
shoppers in Grbovic et al. 2015, "E-commerce in your inbox", whose user2vec learns user and
product vectors jointly).

A user is a "document" whose words are the items of its sequences. Two models:
- PV-DBOW (`mode: dbow`): the user vector predicts every item of its sequences (skip-gram from a
  user token); with `train_items` the item skip-gram pairs train alongside (gensim's
  `dbow_words`), so users and items share one space;
- PV-DM (`mode: dm`): the user vector joins each window's context bag, and the mean of the bag
  predicts the window's centre item (CBOW with the user as an extra, always-present word).

One joint input table holds items then users; the output table holds items. The encoder returns
item vectors (input rows of items, or output rows for PV-DBOW without item training, where the
item input rows never move) and user vectors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch

from recforge.encoders.sequences import (
    Corpus,
    SequenceConfig,
    gather,
    keep_probabilities,
    subsample,
    window_bags,
    window_pairs,
)
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


class User2VecConfig(Word2VecConfig):
    """user2vec's hyper-parameters: word2vec's, the sentences and the paragraph-vector model."""

    # a user's whole history is its document; single-item users still get a vector
    sequences: SequenceConfig = SequenceConfig(by="user", min_length=1)
    mode: Literal["dbow", "dm"] = "dbow"
    train_items: bool = True


def user_examples(corpus: Corpus, config: User2VecConfig) -> Callable[[torch.Generator], Examples]:
    """`draw(generator) -> Examples` over the joint input vocabulary (user u is n_items + u)."""
    tokens = torch.from_numpy(corpus.tokens)
    sequence = torch.from_numpy(corpus.sequence)
    user_token = torch.from_numpy(corpus.owner + corpus.n_items)  # (S,)
    keep = keep_probabilities(corpus.counts, config.sample)

    def draw(generator: torch.Generator) -> Examples:
        kept = subsample(corpus, keep, generator)  # (M,)
        t, s = gather(tokens, kept), gather(sequence, kept)
        user = gather(user_token, s)  # (M,) each kept token's user
        if config.mode == "dm":
            center, bag, mask = window_bags(s, config.window, generator, keep_empty=True)
            bag_tokens = torch.cat([gather(t, bag), gather(user, center)[:, None]], dim=1)  # (E, 2W + 1)
            mask = torch.cat([mask, torch.ones(len(center), 1, dtype=torch.bool)], dim=1)
            return {"target": gather(t, center), "bag": bag_tokens, "bag_mask": mask}
        inputs, targets = [user], [t]  # the user predicts each of its items
        if config.train_items:
            c, x = window_pairs(s, config.window, generator)
            inputs.append(gather(t, c))
            targets.append(gather(t, x))
        return {"target": torch.cat(targets), "input": torch.cat(inputs)}

    return draw


def fit_user2vec(
    corpus: Corpus,
    config: User2VecConfig,
    train_config: TrainConfig,
    callbacks: Sequence[Callback] = (),
) -> EmbeddingResult:
    """Item vectors for every item of `corpus`, and (`.users`) user vectors for every user in it."""
    if not len(corpus):
        raise ValueError("the corpus is empty: no training sequence is long enough")
    n_items, n_users = corpus.n_items, corpus.n_users
    network = make_network(n_items + n_users, n_items, config, train_config)
    noise = noise_distribution(corpus.counts, config.ns_exponent)
    cpu = time.process_time()
    history = train_word2vec(network, user_examples(corpus, config), noise, config, train_config, callbacks)
    items = np.flatnonzero(corpus.counts > 0)
    users = np.unique(corpus.owner)
    item_table = network.output if config.mode == "dbow" and not config.train_items else network.input
    item_vectors = item_table.weight.detach()[torch.from_numpy(items)].float().cpu().numpy()
    user_vectors = network.input.weight.detach()[torch.from_numpy(users + n_items)].float().cpu().numpy()
    stats = throughput(len(corpus), history, time.process_time() - cpu)
    report = {
        "engine": "torch", "mode": config.mode, "train_items": config.train_items,
        "sequences": corpus.n_sequences, "tokens": len(corpus), "items": len(items), "users": len(users), **stats,
    }
    logger.info("user2vec (%s): %d users, %d items, %.0f words/s", config.mode, len(users), len(items),
                stats["words_per_s"])
    return EmbeddingResult(
        index=items, vectors=item_vectors, report=report,
        users=EmbeddingResult(index=users, vectors=user_vectors),
    )
