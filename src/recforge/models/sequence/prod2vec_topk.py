"""`prod2vec_topk`: recommend the K items most similar to the user's last item(s)
(Grbovic et al. 2015, "E-commerce in your inbox: product recommendations at scale", prod2vec-topK).

The item vectors are trained here, by the shared torch skip-gram (`encoders.word2vec`) over the
TRAIN split's sessions (or per-user histories), through the one fit loop with the loop's own
optimiser — so the family is self-contained in the registry and evaluated by the same protocols
as every other. A user's scores are

    score(u, i) = Σ_j decay^j · cos(v_{last_j(u)}, v_i)

over the user's last `last_items` training items (j = 0 the most recent), kept in a buffer at build
time so `score_all(user, history)` needs nothing else. Users without training items fall back to
popularity. With `index: ivf` or `index: hnsw`, only the `candidates` nearest items of the query
vector in a faiss index over the normalised item table (`encoders.ann`) are scored — for
catalogues too large to score every item; the rest rank last.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from recforge.encoders.ann import AnnConfig, AnnIndex
from recforge.encoders.prod2vec import item_examples
from recforge.encoders.sequences import SequenceConfig, build_corpus, last_items
from recforge.encoders.word2vec import SkipGram, Word2VecConfig, epoch_batches, noise_distribution, skipgram_loss
from recforge.models.base import Family, ModelConfig, RecommenderNetwork
from recforge.models.layers import init_embedding_from_vectors


class Prod2VecTopKConfig(ModelConfig):
    dim: int = Field(64, gt=0)
    window: int = Field(5, ge=1)
    negative: int = Field(5, ge=1)
    shared_negatives: int = Field(16, ge=1)
    negative_group: int = Field(1024, ge=1)
    sample: float = Field(1e-3, ge=0)
    ns_exponent: float = Field(0.75, ge=0)
    architecture: Literal["skipgram", "cbow"] = "skipgram"
    sequences: SequenceConfig = SequenceConfig()
    last_items: int = Field(1, ge=1, description="how many of the user's last items vote")
    recency_decay: float = Field(1.0, gt=0, le=1, description="weight of the j-th most recent: decay^j")
    index: Literal["exact", "ivf", "hnsw"] = "exact"
    candidates: int = Field(200, ge=1, description="ivf / hnsw: nearest items scored per user")
    sparse: bool = False
    freeze_item_vectors: bool = False

    def word2vec(self) -> Word2VecConfig:
        """The engine's view of these hyper-parameters (autograd update: the loop's optimiser)."""
        keys = ("dim", "window", "negative", "shared_negatives", "negative_group", "sample", "ns_exponent",
                "architecture")
        return Word2VecConfig(update="optimizer", **{k: getattr(self, k) for k in keys})


class Prod2VecTopK(RecommenderNetwork):
    def __init__(
        self, n_users: int, n_items: int, last: torch.Tensor, counts: np.ndarray, usable: np.ndarray,
        config: Prod2VecTopKConfig,
    ) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.config = config
        self.skipgram = SkipGram(n_items, n_items, config.dim, sparse=config.sparse, seed=None)
        self.register_buffer("last_items", last)  # (U, L) item_idx, most recent first, -1 pad
        self.register_buffer("recency", config.recency_decay ** torch.arange(last.shape[1], dtype=torch.float32))
        self.register_buffer("log_popularity", torch.log1p(torch.as_tensor(counts, dtype=torch.float32)))  # (I,)
        # items with neither a training sequence nor a pretrained vector keep their random init:
        # they neither vote nor rank
        self.register_buffer("usable", torch.as_tensor(usable, dtype=torch.bool))  # (I,)
        self.corpus = None  # set by build; not state: a loaded model only scores
        self._index: tuple[tuple[int, int, str], AnnIndex] | None = None

    def item_embeddings(self) -> torch.Tensor:
        return self.skipgram.input.weight

    def _query(self, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(normalised table (I, D), query vectors (B, D), has_history (B,))."""
        table = F.normalize(self.skipgram.input.weight, dim=1) * self.usable[:, None]  # (I, D)
        last = self.last_items[user]  # (B, L)
        valid = (last >= 0) & self.usable[last.clamp_min(0)]
        w = valid * self.recency  # (B, L)
        query = (table[last.clamp_min(0)] * w[..., None]).sum(1)  # (B, D): cosines are linear in it
        return table, query, valid.any(1)

    def _floor(self) -> float:
        return -float(self.recency.sum()) - 1.0  # below any sum of weighted cosines

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        table, query, known = self._query(user)
        scores = (query * table[item]).sum(-1)  # (B,)
        scores = torch.where(self.usable[item], scores, self._floor())
        return torch.where(known, scores, self.log_popularity[item])

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        table, query, known = self._query(user)
        if self.config.index != "exact":
            scores = self._ann_scores(table, query)
        else:
            scores = query @ table.T  # (B, I)
        scores = scores.masked_fill(~self.usable, self._floor())
        return torch.where(known[:, None], scores, self.log_popularity.expand(len(user), -1))

    def _ann_scores(self, table: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        weight = self.skipgram.input.weight
        key = (weight.data_ptr(), weight._version, self.config.index)  # rebuild when the vectors change
        if self._index is None or self._index[0] != key:
            index = AnnIndex(table, AnnConfig(kind=self.config.index), what="prod2vec_topk item vectors")
            self._index = (key, index)
        k = min(self.config.candidates, self.n_items)
        idx, _ = self._index[1].search(query, k)  # (B, k) candidates, -1 if none
        idx_t = torch.as_tensor(idx, device=table.device)
        ok = idx_t >= 0
        cand = idx_t.clamp_min(0)
        exact = (query[:, None, :] * table[cand]).sum(-1)  # (B, k) exact scores of the candidates
        scores = torch.full((len(query), self.n_items), self._floor(), device=table.device)
        return scores.scatter(1, cand, torch.where(ok, exact, self._floor()))


def build(config: Prod2VecTopKConfig, train, item_vectors=None) -> Prod2VecTopK:
    corpus = build_corpus(train, config.sequences)
    last = torch.as_tensor(last_items(train, config.last_items))
    usable = (corpus.counts > 0) | (item_vectors is not None)
    net = Prod2VecTopK(train.n_users, train.n_items, last, train.item_popularity, usable, config)
    if item_vectors is not None:
        init_embedding_from_vectors(net.skipgram.input, item_vectors, freeze=config.freeze_item_vectors)
    if len(corpus):
        net.corpus = corpus
        net.noise = noise_distribution(corpus.counts, config.ns_exponent)
        net.draw = item_examples(corpus, config.word2vec())
    return net


def batches(network: Prod2VecTopK, train, config: Prod2VecTopKConfig, batch_size, generator):
    if network.corpus is None:
        return iter(())
    examples = network.draw(generator)
    return iter(epoch_batches(examples, network.noise, batch_size, config.word2vec(), generator))


def loss(network: Prod2VecTopK, batch, config: Prod2VecTopKConfig) -> torch.Tensor:
    return skipgram_loss(network.skipgram, batch, config.negative)


FAMILY = Family(
    name="prod2vec_topk", config=Prod2VecTopKConfig, build=build, batches=batches, loss=loss,
    paper="Grbovic et al. 2015",
)
