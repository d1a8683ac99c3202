"""prod2vec / item2vec: word2vec over item sequences (Grbovic, Radosavljevic, Djuric, Bhamidipati,
Savla, Bhagwan & Sharp 2015, "E-commerce in your inbox: product recommendations at scale";
Barkan & Koenigstein 2016, "Item2vec: neural item embedding for collaborative filtering").

Items are words and sessions (or per-user histories in time order) are sentences: skip-gram with
negative sampling, frequent-item subsampling, unigram^0.75 noise and dynamic windows, or CBOW.
Two engines train it:
- `torch`: our engine (`encoders.word2vec`) through THE fit loop — batched, GPU-ready, seeded;
- `gensim`: gensim's Word2Vec, the field's optimised C implementation of the same algorithm.
`bench/bench_word2vec.py` measures both side by side; see `bench/results/word2vec.md` for why the
default is what it is.
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


class Prod2VecConfig(Word2VecConfig):
    """prod2vec's hyper-parameters: the engine, the sentences and word2vec's own."""

    engine: Literal["gensim", "torch"] = "torch"
    sequences: SequenceConfig = SequenceConfig()


def item_examples(corpus: Corpus, config: Word2VecConfig) -> Callable[[torch.Generator], Examples]:
    """`draw(generator) -> Examples` for plain prod2vec: subsample, then window pairs or bags."""
    tokens = torch.from_numpy(corpus.tokens)
    sequence = torch.from_numpy(corpus.sequence)
    keep = keep_probabilities(corpus.counts, config.sample)

    def draw(generator: torch.Generator) -> Examples:
        kept = subsample(corpus, keep, generator)  # (M,)
        t, s = gather(tokens, kept), gather(sequence, kept)
        if config.architecture == "cbow":
            center, bag, mask = window_bags(s, config.window, generator)
            return {"target": gather(t, center), "bag": gather(t, bag), "bag_mask": mask}
        center, context = window_pairs(s, config.window, generator)
        return {"target": gather(t, context), "input": gather(t, center)}

    return draw


def fit_prod2vec(
    corpus: Corpus,
    config: Prod2VecConfig,
    train_config: TrainConfig,
    callbacks: Sequence[Callback] = (),
) -> EmbeddingResult:
    """Item vectors for every item of `corpus`; the report holds the corpus size and throughput."""
    if not len(corpus):
        raise ValueError("the corpus is empty: no training sequence is long enough")
    if config.engine == "gensim":
        index, vectors, stats = _fit_gensim(corpus, config, train_config, callbacks)
    else:
        network = make_network(corpus.n_items, corpus.n_items, config, train_config)
        draw = item_examples(corpus, config)
        noise = noise_distribution(corpus.counts, config.ns_exponent)
        cpu = time.process_time()
        history = train_word2vec(network, draw, noise, config, train_config, callbacks)
        index = np.flatnonzero(corpus.counts > 0)
        vectors = network.input.weight.detach()[torch.from_numpy(index)].float().cpu().numpy()
        stats = throughput(len(corpus), history, time.process_time() - cpu)
    report = {
        "engine": config.engine,
        "sequences": corpus.n_sequences,
        "tokens": len(corpus),
        "items": len(index),
        **stats,
    }
    logger.info("prod2vec (%s): %d items, %.0f words/s", config.engine, len(index), stats["words_per_s"])
    return EmbeddingResult(index=index, vectors=vectors, report=report)


def gensim_sentences(corpus: Corpus) -> list[list[str]]:
    """The corpus as gensim's sentences (lists of item_idx strings)."""
    words = corpus.tokens.astype(str)
    cuts = np.flatnonzero(np.diff(corpus.sequence)) + 1
    return [s.tolist() for s in np.split(words, cuts)]


def _fit_gensim(
    corpus: Corpus, config: Prod2VecConfig, train_config: TrainConfig, callbacks: Sequence[Callback]
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    class _Epochs(CallbackAny2Vec):
        """Our per-epoch callbacks, fed gensim's epoch boundaries."""

        def __init__(self) -> None:
            self.epoch, self.t0, self.seconds = 0, 0.0, []

        def on_epoch_begin(self, model) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, model) -> None:
            seconds = time.perf_counter() - self.t0
            self.seconds.append(seconds)
            logs = {
                "epoch": self.epoch, "epochs": train_config.epochs, "loss": float("nan"),
                "samples": len(corpus), "seconds": seconds,
                "samples_per_s": len(corpus) / seconds if seconds > 0 else 0.0,
                "lr": float(model.min_alpha_yet_reached), "metrics": {}, "best_epoch": self.epoch,
                "best_metric": None,
            }
            for cb in callbacks:
                cb.on_epoch_end(self.epoch, logs)
            self.epoch += 1

    sentences = gensim_sentences(corpus)
    epochs = _Epochs()
    model = Word2Vec(
        vector_size=config.dim, window=config.window, negative=config.negative, sample=config.sample,
        ns_exponent=config.ns_exponent, sg=int(config.architecture == "skipgram"), hs=0, min_count=1,
        alpha=train_config.lr, min_alpha=train_config.lr * 1e-3, seed=train_config.seed,
        workers=config.workers, epochs=train_config.epochs,
    )
    model.build_vocab(sentences)
    cpu = time.process_time()
    model.train(sentences, total_examples=len(sentences), epochs=train_config.epochs, callbacks=[epochs])
    cpu = time.process_time() - cpu
    keys = np.asarray(model.wv.index_to_key, dtype=np.int64)
    order = np.argsort(keys)
    seconds = float(sum(epochs.seconds))
    words = len(corpus) * train_config.epochs
    stats = {
        "epochs": train_config.epochs,
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "words_per_s": round(words / seconds, 1) if seconds > 0 else 0.0,
        "words_per_cpu_s": round(words / cpu, 1) if cpu > 0 else 0.0,
        "examples_per_s": float("nan"),
        "final_loss": float("nan"),
    }
    return keys[order], np.asarray(model.wv.vectors[order], dtype=np.float32), stats
