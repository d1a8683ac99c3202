"""`sdae`: stacked denoising auto-encoder over user rows (Vincent, Larochelle, Lajoie, Bengio &
Manzagol 2010, "Stacked Denoising Autoencoders: Learning Useful Representations in a Deep Network
with a Local Denoising Criterion"), used for collaborative filtering as in the AutoRec line
(Sedhain, Menon, Sanner & Xie 2015, "AutoRec: Autoencoders Meet Collaborative Filtering") in its
user-based form: a user's row over the items in, the row reconstructed out, so a user is scored from
their history alone.

    h_0 = dropout(y_u, q)
    h_l = f(E_l h_{l-1} + c_l)              l = 1..L, hidden sizes e.g. (256, 64)
    g_L = h_L ; g_{l-1} = f(D_l g_l + d_l)  mirrored decoder, the last one (D_1) linear
    ŷ_u = σ(g_0)

With `pretrain_epochs` > 0, `build` first trains the stack greedily (Vincent et al.): layer l
is a one-layer denoising auto-encoder (E_l, D_l) reconstructing the clean codes h_{l-1} of the
already-trained layers below from their corrupted copy; every stage runs through THE fit loop
(`training.loop.fit`) with only that layer's parameters trainable. The estimator's fit is then the
end-to-end fine-tuning. E_1 is an `nn.Embedding` (I, h_1): the item vectors, which pretrained
vectors can initialise.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.models.base import Batch, Family, ModelConfig, RecommenderNetwork
from recforge.models.cf.cdae import ACTIVATIONS, Activation, reconstruction_loss, user_rows_in_batches
from recforge.models.layers import init_embedding_from_vectors
from recforge.training.config import TrainConfig
from recforge.training.loop import fit
from recforge.training.losses import bce, mse

logger = logging.getLogger(__name__)


class SDAEConfig(ModelConfig):
    hidden: tuple[PositiveInt, ...] = Field((256, 64), min_length=1)
    corruption: float = Field(0.2, ge=0, lt=1)
    activation: Activation = "sigmoid"
    loss: Literal["bce", "squared"] = "bce"
    negative_ratio: float = Field(0.0, ge=0)
    pretrain_epochs: int = Field(0, ge=0)  # per layer; 0 = random init, fine-tuning only
    pretrain_lr: float = Field(1e-3, gt=0)
    pretrain_batch_size: int = Field(256, gt=0)
    freeze_item_vectors: bool = False


class SDAE(RecommenderNetwork):
    def __init__(
        self, n_users: int, n_items: int, hidden: tuple[int, ...], corruption: float, activation: Activation
    ) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.corruption = corruption
        self.activation = activation
        self.act = ACTIVATIONS[activation]
        sizes = (n_items, *hidden)
        self.item = nn.Embedding(n_items, hidden[0])  # E_1, item i's input weights in row i
        self.item_bias = nn.Parameter(torch.zeros(hidden[0]))  # c_1
        bound = 1.0 / n_items**0.5  # nn.Linear's init for a (I -> h_1) layer
        nn.init.uniform_(self.item.weight, -bound, bound)
        pairs = list(zip(sizes[:-1], sizes[1:]))  # (h_{l-1}, h_l) for l = 1..L
        self.encoders = nn.ModuleList(nn.Linear(a, b) for a, b in pairs[1:])  # E_2..E_L
        # D_L .. D_1, in the order the forward pass applies them
        self.decoders = nn.ModuleList(nn.Linear(b, a) for a, b in reversed(pairs))

    @property
    def depth(self) -> int:
        return len(self.decoders)

    def encode(self, x: torch.Tensor, layers: int | None = None) -> torch.Tensor:
        """(B, I) -> (B, h_l): the clean codes of the first `layers` encoder layers (all by default)."""
        layers = self.depth if layers is None else layers
        if layers == 0:
            return x
        h = self.act(x @ self.item.weight + self.item_bias)  # (B, h_1)
        for enc in self.encoders[: layers - 1]:
            h = self.act(enc(h))  # (B, h_l)
        return h

    def logits(self, rows: torch.Tensor, corrupt: bool) -> torch.Tensor:
        """(B, I) -> (B, I) pre-sigmoid reconstruction."""
        h = self.encode(F.dropout(rows, self.corruption, training=corrupt))  # (B, h_L)
        for dec in self.decoders[:-1]:
            h = self.act(dec(h))  # (B, h_{l-1})
        return self.decoders[-1](h)  # (B, I)

    def layer_loss(
        self, rows: torch.Tensor, layer: int, kind: str, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Denoising loss of the one-layer auto-encoder (E_layer, D_layer), layer 1-based, on the
        codes of the layers below (computed without gradient: they are already trained)."""
        with torch.no_grad():
            x = self.encode(rows, layer - 1)  # (B, h_{layer-1})
        x_tilde = F.dropout(x, self.corruption, training=True)
        if layer == 1:
            h = self.act(x_tilde @ self.item.weight + self.item_bias)  # (B, h_1)
        else:
            h = self.act(self.encoders[layer - 2](x_tilde))  # (B, h_layer)
        z = self.decoders[self.depth - layer](h)  # (B, h_{layer-1}), pre-activation
        if layer == 1:
            return reconstruction_loss(z, rows, kind, mask)
        # codes in (0, 1) are soft targets of a log loss (Vincent et al.'s cross-entropy); others squared
        return bce(z, x) if self.activation == "sigmoid" else mse(self.act(z), x)

    def layer_parameters(self, layer: int) -> list[nn.Parameter]:
        """The parameters of the one-layer auto-encoder `layer` (1-based)."""
        if layer == 1:
            enc = [self.item.weight, self.item_bias]
        else:
            enc = list(self.encoders[layer - 2].parameters())
        return enc + list(self.decoders[self.depth - layer].parameters())

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("sdae scores from a user's history: use score_all")

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.logits(history, corrupt=False)  # (B, I)

    def score_cold_users(self, history: torch.Tensor) -> torch.Tensor:
        return self.logits(history, corrupt=False)  # no user parameters: a history is all it reads

    def item_embeddings(self) -> torch.Tensor:
        return self.item.weight  # (I, h_1)


@contextlib.contextmanager
def _only_trainable(network: nn.Module, params: list[nn.Parameter]) -> Iterator[None]:
    """Freeze every parameter but `params` (those already frozen stay frozen), then restore."""
    before = {p: p.requires_grad for p in network.parameters()}
    keep = {id(p) for p in params}
    try:
        for p in network.parameters():
            p.requires_grad_(before[p] and id(p) in keep)
        yield
    finally:
        for p, flag in before.items():
            p.requires_grad_(flag)


def pretrain(
    network: SDAE, train: InteractionData, config: SDAEConfig, train_config: TrainConfig | None = None
) -> None:
    """Greedy layer-wise denoising pretraining, each stage one call of THE fit loop.

    Each stage runs `pretrain_epochs` at `pretrain_lr` with `train_config`'s optimiser, device and
    seed (without its early stopping), or with TrainConfig's defaults when none is given.
    """
    update = {
        "epochs": config.pretrain_epochs, "lr": config.pretrain_lr,
        "batch_size": config.pretrain_batch_size, "lr_schedule": "constant",
        "early_stopping_metric": None,
    }
    if not config.pretrain_epochs or not len(train):
        return
    if train_config is None:
        # drawn from the global RNG, which the estimator seeds before `build`, so runs repeat
        update["seed"] = int(torch.randint(0, 2**31 - 1, (1,)))
        train_config = TrainConfig()
    stage = train_config.model_copy(update=update)

    def batches(epoch: int, generator: torch.Generator) -> Iterator[Batch]:
        return user_rows_in_batches(train, stage.batch_size, generator, config.negative_ratio)

    for layer in range(1, network.depth + 1):
        logger.info("sdae: pretraining layer %d/%d", layer, network.depth)

        def loss_fn(net: SDAE, batch: Batch, layer: int = layer) -> torch.Tensor:
            return net.layer_loss(batch["rows"], layer, config.loss, batch.get("mask"))

        with _only_trainable(network, network.layer_parameters(layer)):
            fit(network, batches, loss_fn, stage)


def build(config: SDAEConfig, train: InteractionData, item_vectors: torch.Tensor | None = None) -> SDAE:
    net = SDAE(train.n_users, train.n_items, config.hidden, config.corruption, config.activation)
    if item_vectors is not None:
        init_embedding_from_vectors(net.item, item_vectors, freeze=config.freeze_item_vectors)
    return net


def batches(network, train, config: SDAEConfig, batch_size, generator) -> Iterator[Batch]:
    return user_rows_in_batches(train, batch_size, generator, config.negative_ratio)


def loss(network: SDAE, batch: Batch, config: SDAEConfig) -> torch.Tensor:
    logits = network.logits(batch["rows"], corrupt=network.training)  # (B, I)
    return reconstruction_loss(logits, batch["rows"], config.loss, batch.get("mask"))


FAMILY = Family(
    name="sdae", config=SDAEConfig, build=build, batches=batches, loss=loss, pretrain=pretrain,
    paper="Vincent et al. 2010; Sedhain et al. 2015 (AutoRec)",
)
