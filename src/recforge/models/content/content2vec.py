"""`content2vec`: modular item embeddings from pretrained content modules, specialised for
recommendation (Nedelec, Smirnova & Vasile 2016, "Content2Vec: Specializing Joint
Representations of Product Images and Text for the Task of Product Recommendation").

Each module k reads one pretrained vector table t_k(i) — `image`, `text`, `prod2vec`,
`meta_prod2vec` (`ITEM_VECTORS` in pipelines/training; `Family.vector_blocks`: one block per
table, empty tables dropped with a warning) — through a trainable projection to a common size:

    m_k(i) = P_k t_k(i)                    (d,)           m(i) = [m_1(i); …; m_K(i)]   (K·d,)
    v(i)   = W m(i)                        Content2Vec-linear: concatenation + a fully connected layer
    v(i)   = W m(i) + R₂ ReLU(R₁ m(i))     Content2Vec-embed-res: the embedded pairwise residual unit
    s(a, b) = v(a) · v(b)  [+ wᵀ ReLU(U (m(a) ⊙ m(b)) + c)]   Content2Vec-res: the pairwise residual unit

The residual units add to the linear model what it cannot represent: `res` a correction of the
pair score from the two items' module outputs multiplied elementwise (cross-modal interactions;
the pair score is then no inner product of item vectors), `embed-res` the same idea inside each
item's embedding, so the similarity stays an inner product and v(i) is a vector table any index
or family can use. The modules are fine-tuned on co-occurrence pairs of the TRAIN split — items
within `window` positions of each other in a session (or a user's history, `sequences.by`) — with
`negatives` sampled items per pair ∝ frequency^0.75, under the logistic loss

    L = −log σ(s(a, b)) − Σ_n log σ(−s(a, n)).

A new item has no behaviour vectors, so while training each module input is replaced by its
table's mean with probability `module_dropout` (a cold item's prod2vec stand-in), which teaches
the content modules to carry the embedding alone: on the synthetic shop it lifts the AUC of cold
items from ~0.6 to ~0.76 and leaves held-out warm pairs as they were (tests/models/test_content2vec.py).

As a registry family it recommends like item_knn: score(u, i) = mean over the user's training
items j of s(i, j). New items are scored from their content vectors (`score_cold_items`: the same
tables built for the cold items; prod2vec/meta_prod2vec cover only items seen in training
sequences, so a cold item gets those tables' mean vector — `align_item_vectors` — and is known
through its image and text modules); new users from their fold-in history (`score_cold_users`).
Without any table it learns an item embedding per item on the same pairs (prod2vec trained by
this loss) and cannot score cold items. `export_item_vectors` writes v(i) as a vector table
(`content2vec.vectors`, data/04_feature/content2vec/); for `res` that is v(i), the part of the
score that is an inner product.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.encoders.sequences import SequenceConfig, build_corpus, window_pairs
from recforge.encoders.vectors import vector_table
from recforge.models.base import Batch, ColdStartUnsupported, Family, ModelConfig, RecommenderNetwork
from recforge.training.samplers import shuffled_batches

if TYPE_CHECKING:
    from recforge.training.recommender import Recommender

logger = logging.getLogger(__name__)

MODULES = ("image", "text", "prod2vec", "meta_prod2vec")
_PAIR_ELEMS = 1 << 24  # (rows, items, K·d) floats per chunk of the `res` similarity matrix


class Content2VecConfig(ModelConfig):
    vectors: tuple[Literal["image", "text", "prod2vec", "meta_prod2vec"], ...] = Field(MODULES, min_length=1)
    module_dim: int = Field(32, gt=0, description="d: the common size every module is projected to")
    dim: int = Field(32, gt=0, description="the item embedding v(i)")
    combiner: Literal["linear", "res", "embed_res"] = "embed_res"
    residual_hidden: int = Field(32, gt=0, description="hidden units of the residual unit")
    window: int = Field(3, ge=1, description="co-occurrence window within a sequence")
    negatives: int = Field(5, ge=1, description="sampled items per positive pair")
    ns_exponent: float = Field(0.75, ge=0)
    sequences: SequenceConfig = SequenceConfig()
    l2: float = Field(0.0, ge=0, description="on the batch's item embeddings")
    module_dropout: float = Field(
        0.25, ge=0, lt=1, description="training: share of module inputs replaced by their table's mean"
    )


class Content2Vec(RecommenderNetwork):
    def __init__(
        self, n_users: int, n_items: int, tables: dict[str, torch.Tensor], history, config: Content2VecConfig
    ) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.combiner = config.combiner
        self.module_dropout = config.module_dropout
        self.names = list(tables)
        for name, table in tables.items():
            self.register_buffer(f"table_{name}", table.float())  # t_k (I, D_k)
        self.projections = nn.ModuleDict({n: nn.Linear(t.shape[1], config.module_dim) for n, t in tables.items()})
        # without content: one learned module per item, m(i) = e_i
        self.item = nn.Embedding(n_items, config.module_dim) if not tables else None
        width = config.module_dim * max(len(tables), 1)  # K·d
        self.combine = nn.Linear(width, config.dim)  # W
        self.residual: nn.Sequential | None = None
        if config.combiner == "embed_res":
            self.residual = nn.Sequential(nn.Linear(width, config.residual_hidden), nn.ReLU(),
                                          nn.Linear(config.residual_hidden, config.dim))
        elif config.combiner == "res":
            self.residual = nn.Sequential(nn.Linear(width, config.residual_hidden), nn.ReLU(),
                                          nn.Linear(config.residual_hidden, 1))
        if self.residual is not None:
            nn.init.zeros_(self.residual[-1].weight)  # the residual starts at zero: the linear model
            nn.init.zeros_(self.residual[-1].bias)
        # the users' training rows, normalised to mean over the history (a cache of `train`, not
        # state: `load` rebuilds it from the saved matrix)
        counts = np.asarray(history.sum(axis=1)).ravel()
        self.history = history.multiply(1.0 / np.maximum(counts, 1)[:, None]).tocsr().astype(np.float32)
        self.corpus: tuple[weakref.ref, object] | None = None
        self._cache: tuple[tuple, torch.Tensor] | None = None

    # ------------------------------------------------------------------ representations
    def modules_of(self, tables: dict[str, torch.Tensor]) -> torch.Tensor:
        """{name: (B, D_k)} content vectors -> (B, K·d) m, the module outputs side by side."""
        return torch.cat([self.projections[n](tables[n]) for n in self.names], dim=-1)

    def modules_at(self, item: torch.Tensor) -> torch.Tensor:
        """(…,) item indices -> (…, K·d) m(i)."""
        if self.item is not None:
            return self.item(item)
        tables = {n: getattr(self, f"table_{n}") for n in self.names}
        rows = {n: t[item] for n, t in tables.items()}  # (…, D_k)
        if self.training and self.module_dropout > 0:
            # a new item lacks its behaviour modules (their tables' mean stands in): so does a
            # random share of the training inputs, so the other modules learn to carry it
            for n, t in tables.items():
                drop = torch.rand(item.shape, device=item.device) < self.module_dropout  # (…,)
                rows[n] = torch.where(drop[..., None], t.mean(0), rows[n])
        return self.modules_of(rows)

    def embed(self, m: torch.Tensor) -> torch.Tensor:
        """(…, K·d) m -> (…, dim) v."""
        v = self.combine(m)
        if self.combiner == "embed_res":
            v = v + self.residual(m)
        return v

    def pair_score(self, ma: torch.Tensor, mb: torch.Tensor) -> torch.Tensor:
        """Module outputs of a (…, K·d) and b (…, K·d), broadcast -> (…,) s(a, b)."""
        score = (self.embed(ma) * self.embed(mb)).sum(-1)
        if self.combiner == "res":
            score = score + self.residual(ma * mb).squeeze(-1)
        return score

    def similarity_to(self, m: torch.Tensor) -> torch.Tensor:
        """(C, K·d) module outputs of C items -> (C, I) s(c, j) against every training item."""
        mi = self.catalogue_modules()  # (I, K·d)
        if self.combiner != "res":
            return self.embed(m) @ self.embed(mi).T
        rows = max(1, _PAIR_ELEMS // max(1, len(mi) * mi.shape[1]))
        return torch.cat([self.pair_score(m[lo : lo + rows, None], mi[None]) for lo in range(0, len(m), rows)])

    def catalogue_modules(self) -> torch.Tensor:
        return self.modules_at(torch.arange(self.n_items, device=self.combine.weight.device))  # (I, K·d)

    def _cached(self) -> torch.Tensor:
        """(I, dim) v of the catalogue, or the (I, I) pair scores for `res`; cached in eval mode
        until a weight changes (the key holds every tensor's version counter)."""
        key = tuple((id(t), t._version, t.device) for t in (*self.parameters(), *self.buffers()))
        if self.training or self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                mi = self.catalogue_modules()
                value = self.similarity_to(mi) if self.combiner == "res" else self.embed(mi)
            if self.training:
                return value
            self._cache = (key, value)
        return self._cache[1]

    # ------------------------------------------------------------------ scoring
    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("content2vec scores from a user's history: use score_all")

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """Mean over the user's history items j of s(i, j), for every item i: (B, I)."""
        h = history / history.sum(1, keepdim=True).clamp_min(1)  # (B, I)
        cached = self._cached()
        if self.combiner == "res":
            return h @ cached  # (B, I) @ (I, I), s symmetric
        return (h @ cached) @ cached.T  # mean of v(j), then · v(i)

    def score_cold_users(self, history: torch.Tensor) -> torch.Tensor:
        return self.score_all(torch.zeros(len(history), dtype=torch.long, device=history.device), history)

    def score_cold_items(self, user: torch.Tensor, content: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """(B,), {name: (C, D_k)} content vectors of new items (the same tables, made by
        `training.inputs.item_side` for a map of those items) -> (B, C) mean s(c, j) over the
        user's training items j."""
        if self.item is not None:
            raise ColdStartUnsupported("content2vec was trained without content tables: new items have no modules")
        if isinstance(content, torch.Tensor) and len(self.names) == 1:
            content = {self.names[0]: content}
        if not isinstance(content, dict) or set(content) != set(self.names):
            got = sorted(content) if isinstance(content, dict) else type(content).__name__
            raise ValueError(f"content2vec: cold items need the content tables {self.names} it was trained on, got {got}")
        for n in self.names:
            want = getattr(self, f"table_{n}").shape[1]
            if content[n].dim() != 2 or content[n].shape[1] != want:
                raise ValueError(f"content2vec: the {n!r} vectors of cold items have shape {tuple(content[n].shape)}, "
                                 f"the model was trained on {want}-d ones")
        dev = self.combine.weight.device
        m = self.modules_of({n: content[n].to(dev, torch.float32) for n in self.names})  # (C, K·d)
        sims = self.similarity_to(m)  # (C, I)
        rows = torch.as_tensor(self.history[user.cpu().numpy()].toarray(), device=dev)  # (B, I) normalised
        return rows @ sims.T  # (B, C)

    def item_embeddings(self) -> torch.Tensor:
        return self.embed(self.catalogue_modules())


def build(config: Content2VecConfig, train: InteractionData, item_vectors=None) -> Content2Vec:
    """`item_vectors`: {table name: (n_items, D)} (`vector_blocks`), one (n_items, D) tensor
    (one module), or None (no content: a learned item embedding)."""
    if item_vectors is None:
        tables = {}
    elif isinstance(item_vectors, torch.Tensor):
        tables = {"vectors": item_vectors}
    else:
        tables = dict(item_vectors)
    for name, t in tables.items():
        if t.dim() != 2 or t.shape[0] != train.n_items:
            raise ValueError(f"content2vec: the {name!r} table has shape {tuple(t.shape)}, expected ({train.n_items}, D)")
    return Content2Vec(train.n_users, train.n_items, tables, train.csr, config)


def tables_from_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The content tables a saved model was trained with (`Recommender.load`), in their order."""
    tables = {k.removeprefix("table_"): v for k, v in state.items() if k.startswith("table_")}
    return tables or None


def batches(
    network: Content2Vec, train: InteractionData, config: Content2VecConfig, batch_size: int,
    generator: torch.Generator,
) -> Iterator[Batch]:
    """Shuffled (item, context, negatives) triples: co-occurring items within the window of a
    TRAIN sequence, and `negatives` items drawn ∝ frequency^0.75."""
    cached = network.corpus
    if cached is None or cached[0]() is not train:
        network.corpus = (weakref.ref(train), build_corpus(train, config.sequences))
    corpus = network.corpus[1]
    tokens = torch.from_numpy(corpus.tokens)
    centre, context = window_pairs(torch.from_numpy(corpus.sequence), config.window, generator)  # positions
    a, b = tokens[centre], tokens[context]
    keep = a != b  # an item is not its own co-occurrence
    a, b = a[keep], b[keep]
    noise = torch.from_numpy(corpus.counts).pow(config.ns_exponent).float()
    for idx in shuffled_batches(len(a), batch_size, generator):
        negative = torch.multinomial(noise, len(idx) * config.negatives, replacement=True, generator=generator)
        yield {"item": a[idx], "context": b[idx], "negative": negative.view(len(idx), config.negatives)}


def loss(network: Content2Vec, batch: Batch, config: Content2VecConfig) -> torch.Tensor:
    """−log σ(s(a, b)) − Σ_n log σ(−s(a, n)), averaged over the batch's pairs."""
    ma = network.modules_at(batch["item"])  # (B, K·d)
    mb = network.modules_at(batch["context"])  # (B, K·d)
    mn = network.modules_at(batch["negative"])  # (B, N, K·d)
    pos = network.pair_score(ma, mb)  # (B,)
    neg = network.pair_score(ma[:, None], mn)  # (B, N)
    out = -(F.logsigmoid(pos.float()) + F.logsigmoid(-neg.float()).sum(1)).mean()
    if config.l2:
        out = out + config.l2 * (network.embed(ma).square().sum(-1).mean() + network.embed(mb).square().sum(-1).mean())
    return out


def export_item_vectors(model: Recommender, item_map: pd.DataFrame) -> pd.DataFrame:
    """The trained item embeddings v(i) as a vector table (`item_id` + v0..v{D-1}), rows in
    item_idx order: `content2vec.vectors`, from which any family can start."""
    network = model._require_fitted()
    with torch.no_grad():
        vectors = network.item_embeddings().float().cpu().numpy()  # (I, dim)
    order = item_map.sort_values("item_idx")
    if len(order) != len(vectors):
        raise ValueError(f"content2vec: the item map has {len(order)} items, the model {len(vectors)}")
    return vector_table(order["item_id"].astype(str).to_numpy(), vectors)


FAMILY = Family(
    name="content2vec", config=Content2VecConfig, build=build, batches=batches, loss=loss,
    paper="Nedelec, Smirnova & Vasile 2016 (Content2Vec)", vector_blocks=True, inputs_from_state=tables_from_state,
)
