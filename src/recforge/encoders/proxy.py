"""What the image, text and audio encoders share: the proxy task, its driver and the vector table.

Content2Vec (Nedelec, Smirnova & Vasile 2016, "Content2Vec: specializing joint representations of
product images and text for the task of product recommendation") first initialises every content
module on a proxy task and only then specialises the joint vector for recommendation. Here the
proxy task is classifying an item's category from its content; the module's penultimate layer is
the item vector. Training runs through THE fit loop (`recforge.training.loop.fit`).

A held-out share of the labelled items (stratified, seeded) never trains the network, so the
reported proxy accuracy is an honest out-of-sample figure; every item still gets a vector.
A modality supplies only `load` (items -> network input) and `build` (-> network); the driver
`pretrain_encoder` does labels, hold-out, seeding, fitting, vectorising and the report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from recforge.data.errors import DataError
from recforge.data.schema import STRING
from recforge.encoders.media_io import MediaSource
from recforge.encoders.vectors import vector_table
from recforge.models.base import Batch
from recforge.training.callbacks import Callback
from recforge.training.config import TrainConfig
from recforge.training.device import resolve_device
from recforge.training.loop import History, fit
from recforge.training.samplers import shuffled_batches

logger = logging.getLogger(__name__)

PROXY_TRAIN = TrainConfig(epochs=30, batch_size=64, lr=3e-3, weight_decay=1e-4, lr_schedule="cosine")


class ContentEncoderConfig(BaseModel):
    """Settings every content encoder shares: the proxy label, the held-out share, training."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label_column: str = Field("category", description="items column holding the proxy-task label")
    label_level: Literal["full", "top"] = Field(
        "full", description="'top' keeps the first part of an 'a/b' category path"
    )
    holdout: float = Field(0.2, ge=0.0, lt=1.0, description="share of labelled items held out")
    neighbours: int = Field(10, ge=1, description="k of the k-NN label purity in the report")
    train: TrainConfig = PROXY_TRAIN

    @field_validator("train", mode="before")
    @classmethod
    def _over_proxy_defaults(cls, value: Any) -> Any:
        # `train: {epochs: 5}` in YAML changes the epochs of the proxy defaults, not of TrainConfig's
        if isinstance(value, Mapping):
            return {**PROXY_TRAIN.model_dump(), **value}
        return value


class ContentNetwork(nn.Module):
    """A content module: `embed(x)` is the item vector (B, D), `head` classifies it."""

    head: nn.Linear

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) -> (B, n_classes) proxy-task logits."""
        return self.head(self.embed(x))


# ----------------------------------------------------------------------------- labels and hold-out
def proxy_labels(items: pd.DataFrame, config: ContentEncoderConfig) -> tuple[np.ndarray, list[str]]:
    """(N,) int64 class index per item (-1 where the label is missing) and the class names."""
    col = config.label_column
    if col not in items.columns:
        raise DataError(
            f"the proxy task needs column {col!r}; found {list(items.columns)}", source="items", column=col
        )
    raw = items[col].astype(STRING)
    if config.label_level == "top":
        raw = raw.str.split("/").str[0]
    codes, classes = pd.factorize(raw, sort=True, use_na_sentinel=True)
    if len(classes) < 2:
        raise DataError(
            f"the proxy task needs at least two distinct labels, found {len(classes)}",
            source="items",
            column=col,
        )
    return codes.astype(np.int64), [str(c) for c in classes]


def holdout_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """(N,) bool: a stratified, seeded `fraction` of every class (rounded down, so a class of one
    item always trains); unlabelled items (-1) are never held out."""
    n = len(labels)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.permutation(n), labels))  # by class, random inside a class
    sorted_labels = labels[order]
    rank = np.arange(n) - np.searchsorted(sorted_labels, sorted_labels, side="left")  # place in class
    counts = np.bincount(labels[labels >= 0], minlength=max(int(labels.max()) + 1, 1))
    n_test = np.floor(fraction * counts).astype(np.int64)
    held = np.zeros(n, dtype=bool)
    labelled = sorted_labels >= 0
    held[order[labelled]] = rank[labelled] < n_test[sorted_labels[labelled]]
    return held


def heldout_for(
    item_ids: Sequence[str],
    labels: np.ndarray,
    heldout_ids: Sequence[str] | None,
    config: ContentEncoderConfig,
) -> np.ndarray:
    """(N,) bool hold-out mask: the given `heldout_ids` (labelled ones), else a stratified random
    `config.holdout` share seeded by the training seed."""
    if heldout_ids is None:
        return holdout_mask(labels, config.holdout, config.train.seed)
    wanted = np.asarray(list(heldout_ids), dtype=object)
    return np.isin(np.asarray(item_ids, dtype=object), wanted) & (labels >= 0)


# ----------------------------------------------------------------------------- fitting and vectors
def classification_loss(network: nn.Module, batch: Batch) -> torch.Tensor:
    """Softmax cross-entropy of the proxy-task logits."""
    return F.cross_entropy(network(batch["x"]).float(), batch["label"])


ExtrasFn = Callable[[int, torch.Generator], Batch]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


def fit_proxy(
    network: ContentNetwork,
    x: torch.Tensor,
    labels: torch.Tensor,
    train_idx: torch.Tensor,
    config: TrainConfig,
    *,
    loss_fn: LossFn = classification_loss,
    extras: ExtrasFn | None = None,
    heldout_idx: torch.Tensor | None = None,
    callbacks: Sequence[Callback] = (),
) -> History:
    """Fit `network` on the proxy task over the rows `train_idx` of (x, labels) with `fit`.

    `extras(batch_size, generator)` adds per-batch random draws (e.g. augmentation parameters) to
    each batch, drawn from the loop's generator so a seed replays them. With `heldout_idx` the
    held-out accuracy is validated every epoch (metric `heldout_accuracy`, usable for early stopping).
    """

    def batches(epoch: int, generator: torch.Generator):
        for idx in shuffled_batches(len(train_idx), config.batch_size, generator):
            rows = train_idx[idx]
            batch = {"x": x[rows], "label": labels[rows]}
            if extras is not None:
                batch.update(extras(len(rows), generator))
            yield batch

    validate = None
    if heldout_idx is not None and len(heldout_idx):

        def validate(net: nn.Module) -> dict[str, float]:
            return {"heldout_accuracy": accuracy(net, x[heldout_idx], labels[heldout_idx], config)}

    return fit(network, batches, loss_fn, config, validate=validate, callbacks=callbacks)


@torch.no_grad()
def _batched(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, config: TrainConfig
) -> torch.Tensor:
    device = resolve_device(config.device)
    chunks = x.split(config.batch_size * 4)
    out = [fn(chunk.to(device, non_blocking=True)).float().cpu() for chunk in chunks]
    return torch.cat(out) if out else torch.empty(0)


def accuracy(network: nn.Module, x: torch.Tensor, labels: torch.Tensor, config: TrainConfig) -> float:
    """Share of rows whose arg-max logit is the label (NaN for no rows)."""
    if len(labels) == 0:
        return float("nan")
    was_training = network.training
    network.eval()
    pred = _batched(network, x, config).argmax(dim=1)  # (N,)
    network.train(was_training)
    return float((pred == labels.cpu()).float().mean())


def embed_all(network: ContentNetwork, x: torch.Tensor, config: TrainConfig) -> np.ndarray:
    """(N, D) float32 item vectors: the penultimate layer, in eval mode, batched on the device."""
    network.to(resolve_device(config.device))
    was_training = network.training
    network.eval()
    vectors = _batched(network.embed, x, config).numpy().astype(np.float32)
    network.train(was_training)
    return vectors.reshape(len(x), -1)


def vectors_frame(item_ids: Sequence[str] | np.ndarray, vectors: np.ndarray) -> pd.DataFrame:
    """The parquet-ready vector table: `item_id` + `v0..v{D-1}` (float32), one row per item."""
    return vector_table(np.asarray(item_ids, dtype=object), vectors, "item_id")


def neighbour_purity(vectors: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Mean share of each item's k nearest neighbours (cosine, self excluded) with its label.

    Only labelled items (label >= 0) count, as queries and as neighbours.
    """
    keep = labels >= 0
    v = F.normalize(torch.as_tensor(np.array(vectors[keep], dtype=np.float32)), dim=1)
    y = torch.as_tensor(labels[keep])
    n = len(y)
    k = min(k, n - 1)
    if k < 1:
        return float("nan")
    hits = 0.0
    for lo in range(0, n, 1024):  # chunks keep the similarity block at 1024 x N
        rows = torch.arange(lo, min(lo + 1024, n))
        sim = v[rows] @ v.T  # (C, N)
        sim[rows - lo, rows] = -float("inf")
        nearest = sim.topk(k, dim=1).indices  # (C, k)
        hits += float((y[nearest] == y[rows, None]).float().sum())
    return hits / (n * k)


# ----------------------------------------------------------------------------- the driver
@dataclass
class Loaded:
    """A modality's network input for the items with usable content."""

    x: torch.Tensor  # (N, ...) one row per kept item
    kept: np.ndarray  # (N,) row positions in the items table
    skipped: list[dict[str, str]]  # {item_id, path, reason} of the items left out


LoadFn = Callable[[pd.DataFrame, Mapping[str, MediaSource]], Loaded]
# (n_classes, x, train_rows) -> a ready network (normalisation fitted, pretrained weights loaded)
BuildFn = Callable[[int, torch.Tensor, np.ndarray], ContentNetwork]
EncodeFn = Callable[..., tuple[pd.DataFrame, list[dict[str, str]]]]


@dataclass
class EncoderResult:
    """A pretrained content module and what it produced.

    `vectors`: item_id + v0..v{D-1} for every item with usable content; `report`: JSON-ready;
    `encode(items, media=None)` vectorises new (e.g. cold-start) items with the trained module and
    returns (vector table, skipped records). `preprocessing` is what turns raw content into the
    network's input beyond the network's own buffers (the text vocabulary), else None.
    """

    network: ContentNetwork
    vectors: pd.DataFrame
    report: dict[str, Any]
    history: History
    encode: EncodeFn
    preprocessing: Any = field(default=None)


class Timer:
    """Wall-clock seconds of named phases, for the report."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._t0 = time.perf_counter()

    def lap(self, name: str) -> None:
        """Record the time since the previous lap under `name`."""
        now = time.perf_counter()
        self.seconds[name] = round(now - self._t0, 4)
        self._t0 = now


def pretrain_encoder(
    encoder: str,
    items: pd.DataFrame,
    media: Mapping[str, MediaSource] | None,
    config: ContentEncoderConfig,
    *,
    load: LoadFn,
    build: BuildFn,
    loss_fn: LossFn = classification_loss,
    extras: ExtrasFn | None = None,
    train_unlabelled: bool = False,
    heldout_ids: Sequence[str] | None = None,
    callbacks: Sequence[Callback] = (),
    preprocessing: Any = None,
) -> EncoderResult:
    """Load the items' content, pretrain a network on the proxy task, vectorise every kept item.

    `train_unlabelled` also trains on items without a label (self-supervised objectives);
    `heldout_ids` replaces the random stratified hold-out with the given items.
    """
    timer = Timer()
    data = load(items, media or {})
    if len(data.kept) < 2:
        raise ValueError(
            f"the {encoder} encoder needs at least two items with usable content, got {len(data.kept)}"
        )
    rows = items.iloc[data.kept]
    ids = rows["item_id"].astype(str).to_numpy(dtype=object)
    labels, classes = proxy_labels(rows, config)
    held = heldout_for(list(ids), labels, heldout_ids, config)
    timer.lap("load_s")

    torch.manual_seed(config.train.seed)  # the network's initial weights follow the seed too
    trains = ~held if train_unlabelled else (labels >= 0) & ~held
    train_rows = np.flatnonzero(trains)
    network = build(len(classes), data.x, train_rows)
    timer.lap("build_s")
    y = torch.as_tensor(labels)
    history = fit_proxy(
        network,
        data.x,
        y,
        torch.as_tensor(train_rows),
        config.train,
        loss_fn=loss_fn,
        extras=extras,
        heldout_idx=torch.as_tensor(np.flatnonzero(held)),
        callbacks=callbacks,
    )
    timer.lap("train_s")
    vectors = embed_all(network, data.x, config.train)
    timer.lap("encode_s")

    def encode(
        new_items: pd.DataFrame, new_media: Mapping[str, MediaSource] | None = None
    ) -> tuple[pd.DataFrame, list[dict[str, str]]]:
        new = load(new_items, new_media or {})
        new_ids = new_items["item_id"].astype(str).to_numpy(dtype=object)[new.kept]
        return vectors_frame(new_ids, embed_all(network, new.x, config.train)), new.skipped

    report = _report(
        encoder, network, data, y, classes, held, trains, history, vectors, config, len(items), timer
    )
    return EncoderResult(network, vectors_frame(ids, vectors), report, history, encode, preprocessing)


def _report(
    encoder: str,
    network: ContentNetwork,
    data: Loaded,
    y: torch.Tensor,
    classes: list[str],
    held: np.ndarray,
    trains: np.ndarray,
    history: History,
    vectors: np.ndarray,
    config: ContentEncoderConfig,
    n_items: int,
    timer: Timer,
) -> dict[str, Any]:
    labels = y.numpy()
    train = torch.as_tensor(np.flatnonzero(trains & (labels >= 0)))
    test = torch.as_tensor(np.flatnonzero(held))
    timings = dict(timer.seconds)
    timings["total_s"] = round(sum(timer.seconds.values()), 4)
    timings["train_samples_per_s"] = round(sum(history.samples) / max(sum(history.seconds), 1e-9), 1)
    timings["items_per_s"] = round(len(vectors) / max(timings["total_s"], 1e-9), 1)
    labelled = labels[labels >= 0]
    return {
        "encoder": encoder,
        "n_items": n_items,
        "n_vectors": len(vectors),
        "dim": int(vectors.shape[1]),
        "device": str(resolve_device(config.train.device)),
        "proxy": {
            "label": config.label_column if config.label_level == "full" else f"{config.label_column} (top)",
            "n_classes": len(classes),
            "chance_accuracy": float(np.bincount(labelled).max() / len(labelled)),
            "n_train": int(trains.sum()),
            "n_heldout": len(test),
            "train_accuracy": accuracy(network, data.x[train], y[train], config.train),
            "heldout_accuracy": accuracy(network, data.x[test], y[test], config.train) if len(test) else None,
            "epochs": history.epochs,
            "final_loss": history.loss[-1] if history.loss else None,
        },
        f"neighbour_purity@{config.neighbours}": neighbour_purity(vectors, labels, config.neighbours),
        "n_skipped": len(data.skipped),
        "skipped": data.skipped,
        "timings": timings,
    }
