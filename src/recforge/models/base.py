"""What every model family provides, and the network interface the fit loop and evaluation use.

A family is a literal entry in `models.registry.FAMILIES`: a frozen config class plus three
functions — build the network, turn a split into batches, compute the loss of a batch. The one fit
loop (`training.loop.fit`) and the one estimator (`training.recommender.Recommender`) do the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from recforge.data.interactions import InteractionData

Batch = dict[str, torch.Tensor]


class ContentAndVectors(NamedTuple):
    """What `build` receives as `item_vectors` when a family reads item content
    (`Family.item_content`) AND vector tables (`ITEM_VECTORS` in pipelines/training): mv_dnn's
    text and category views beside a content-vector view. `vectors` is None when the source has
    none of the chosen tables."""

    content: object
    vectors: torch.Tensor | None


class ColdStartUnsupported(NotImplementedError):
    """Raised by a network that cannot score items (users) unseen in training: the cold-start
    slices then report "–" for it rather than a silent zero."""


class ModelConfig(BaseModel):
    """Base of every family's hyper-parameters: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class RecommenderNetwork(nn.Module):
    """A network that scores (user, item) pairs.

    `forward(user, item)` returns one score per pair; `score_all(user, history)` returns the scores
    of every item for each user in a batch, where `history` is the users' dense training rows
    (autoencoders and neighbourhood models score from it; factor models ignore it). The default
    `score_all` evaluates `forward` on the full cross product in item chunks; factor models
    override it with one matrix product.
    """

    n_users: int
    n_items: int

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:  # (B,), (B,) -> (B,)
        raise NotImplementedError

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """(B,), (B, n_items) -> (B, n_items)."""
        b = user.shape[0]
        items = torch.arange(self.n_items, device=user.device)
        chunk = max(1, 2**20 // max(b, 1))
        out = []
        for start in range(0, self.n_items, chunk):
            it = items[start : start + chunk]  # (C,)
            u = user.repeat_interleave(len(it))  # (B*C,)
            i = it.repeat(b)  # (B*C,)
            out.append(self(u, i).view(b, len(it)))
        return torch.cat(out, dim=1)

    def item_embeddings(self) -> torch.Tensor | None:
        """(n_items, D) item vectors for `similar_items`, or None when the family has none."""
        return None

    def retrieval_items(self) -> torch.Tensor | None:
        """(n_items, F) item side of scores that factor as one inner product, or None (the
        default) when they do not: then `score_all(user, h) == retrieval_users(user) @
        retrieval_items().T` (biases and constants carried by extra columns; no dense history
        needed), so a nearest-neighbour index over these rows retrieves each user's top items
        without scoring the catalogue (`Recommender.recommend(..., index=)`)."""
        return None

    def retrieval_users(self, user: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, F): the user side matching `retrieval_items`."""
        raise NotImplementedError(f"{type(self).__name__} has no factored scores")

    def score_cold_items(self, user: torch.Tensor, content: object) -> torch.Tensor:
        """(B,), content of C items unseen in training -> (B, C) scores on the same scale as
        `score_all`, so the two can be ranked together.

        `content` is what the family's item side builds for those items — the same kind of
        object `build` received as `item_vectors` (a vector tensor, a `Family.item_content`
        tensor ...), made by `training.inputs.item_side` for a map of the cold items. Content
        families override this; the default says the family cannot."""
        raise ColdStartUnsupported(f"{type(self).__name__} cannot score items unseen in training")

    def score_cold_users(self, history: torch.Tensor) -> torch.Tensor:
        """(B, n_items) fold-in histories of B users unseen in training (their first test
        interactions, over the training items) -> (B, n_items) scores. Families that score from a
        history (neighbourhoods, autoencoders, content towers over the user's items) override
        this; the default says the family cannot."""
        raise ColdStartUnsupported(f"{type(self).__name__} cannot score users unseen in training")


@dataclass(frozen=True)
class Family:
    """One model family: its name (the same string everywhere), config and three functions.

    - `build(config, train, item_vectors)` -> network (item_vectors: optional (n_items, D) float
      tensor of pretrained item vectors to initialise from);
    - `batches(network, train, config, batch_size, generator)` -> iterator over one epoch's batches
      (dicts of tensors on CPU; the loop moves them to the device);
    - `loss(network, batch, config)` -> scalar tensor. A loss that does not require grad means the
      family updated its parameters itself (closed-form steps such as ALS), and the loop skips
      backward.
    `trainable=False` marks families fitted in `build` (random, popularity, item_knn): the loop
    runs zero epochs for them. `pretrain(network, train, config, train_config)`, when given, runs
    after `build` and before the loop (greedy layer-wise pretraining); `load` skips it.
    `warm_start_from` names the families whose trained networks can initialise this one (NeuMF
    from GMF and MLP); `warm_start(config, train, item_vectors, networks)` then builds the network
    from `networks` (a dict keyed by those names) in place of `build`. Such a family's config has
    a boolean `pretrain`: with it false, `warm_start` falls back to `build`.
    `item_content(items, item_map)`, when given, turns the canonical items table into the tensor
    `build` receives as `item_vectors` (cnn3d: the characters of each item's id, text and
    category); the training pipeline then hands the family the `items` table.
    `fields(config, layout)`, when given, marks a field-aware family (`models.field_layers`): it
    builds the family's core over rows of feature slots, which `build` wraps for (user, item)
    pairs from the feature tables (passed as `item_vectors`) and `training.ctr` uses on
    impression rows; the training pipeline hands such a family the `features` pipeline's tables.
    `inputs_from_state(state_dict)`, when given, rebuilds what `build` received as `item_vectors`
    from a saved state_dict, so `Recommender.load` sizes the network as it was trained.
    `content_inputs` names the catalog datasets `item_content` reads, in order (default: the
    `items` table; a family may add the `media` root); it is called `item_content(*those,
    item_map)`.
    `vector_blocks=True` makes a family that reads several vector tables (`ITEM_VECTORS` in
    pipelines/training) receive them as a dict {table name: (n_items, D) tensor} rather than
    one concatenated tensor (Content2Vec keeps a module per table).
    """

    name: str
    config: type[ModelConfig]
    build: Callable[[ModelConfig, InteractionData, torch.Tensor | None], RecommenderNetwork]
    batches: Callable[
        [RecommenderNetwork, InteractionData, ModelConfig, int, torch.Generator], Iterator[Batch]
    ]
    loss: Callable[[RecommenderNetwork, Batch, ModelConfig], torch.Tensor]
    task: Literal["ranking", "rating"] = "ranking"
    trainable: bool = True
    paper: str = ""
    pretrain: Callable[..., None] | None = None
    warm_start_from: tuple[str, ...] = ()
    warm_start: Callable[..., RecommenderNetwork] | None = None
    item_content: Callable[..., torch.Tensor] | None = None
    next_item: bool = False
    fields: Callable[..., nn.Module] | None = None
    inputs_from_state: Callable[[dict[str, torch.Tensor]], object] | None = None
    content_inputs: tuple[str, ...] = ("items",)
    vector_blocks: bool = False


def no_batches(network, train, config, batch_size, generator) -> Iterator[Batch]:
    """For families fitted in `build` (counts, similarities): an epoch has no batches."""
    return iter(())


def no_loss(network, batch, config) -> torch.Tensor:
    """Never called for families without batches."""
    raise RuntimeError("this family has no trainable loss")
