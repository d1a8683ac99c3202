"""Image encoder: a small residual CNN pretrained on a proxy task from the item photos.

The network is a ResNet (He, Zhang, Ren & Sun 2016, "Deep residual learning for image
recognition") scaled down to product thumbnails: a 3x3 stem, one BasicBlock per stage (batch norm,
identity or 1x1 projection shortcut), global average pooling. The pooled features (the penultimate
layer) are the item vector, as with the AlexNet/VGG features of VBPR (He & McAuley 2016) and
Content2Vec (Nedelec et al. 2016).

Proxy objectives: category classification, and/or the self-supervised NT-Xent contrastive loss of
SimCLR (Chen, Kornblith, Norouzi & Hinton 2020, "A simple framework for contrastive learning of
visual representations") over two augmented views (random crop, flip, colour jitter, all in
torch). With the contrastive objective alone, the category head is trained on detached features:
an online linear probe whose accuracy is what the report shows.

Transfer learning: `pretrained_path` loads a state_dict of this architecture (e.g. trained on a
larger shop) with `weights_only=True`; `freeze_blocks` keeps the stem and the first blocks fixed
(batch-norm statistics included) while the rest is fine-tuned: the usual transfer-learning recipe.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from recforge.encoders.media_io import MediaSource, OnBadMedia, decode_image, load_media
from recforge.encoders.proxy import (
    ContentEncoderConfig,
    ContentNetwork,
    EncoderResult,
    Loaded,
    pretrain_encoder,
)
from recforge.models.base import Batch
from recforge.training.callbacks import Callback

logger = logging.getLogger(__name__)


class ImageEncoderConfig(ContentEncoderConfig):
    """Hyper-parameters of the image encoder; the vector has `widths[-1]` dimensions."""

    image_size: int = Field(32, ge=8, description="images are resized to image_size x image_size")
    widths: tuple[int, ...] = Field((16, 32, 64), min_length=1, description="channels per stage")
    objective: Literal["category", "contrastive", "both"] = "category"
    augment: bool = True
    crop_padding: int = Field(3, ge=0, description="random-crop shift in pixels (reflect padding)")
    jitter: float = Field(0.15, ge=0.0, lt=1.0, description="brightness/contrast/saturation range")
    temperature: float = Field(0.2, gt=0.0, description="NT-Xent temperature")
    contrastive_weight: float = Field(1.0, ge=0.0)
    projection_dim: int = Field(64, ge=1)
    pretrained_path: Path | None = Field(None, description="state_dict file of this architecture")
    freeze_blocks: int = Field(0, ge=0, description="freeze the stem and the first k blocks")
    on_bad_media: OnBadMedia = "raise"

    @model_validator(mode="after")
    def _check(self) -> ImageEncoderConfig:
        if self.freeze_blocks > len(self.widths):
            raise ValueError(
                f"freeze_blocks={self.freeze_blocks} but the network has {len(self.widths)} blocks"
            )
        if self.freeze_blocks and self.pretrained_path is None:
            raise ValueError("freeze_blocks only makes sense with pretrained_path (frozen random weights)")
        if self.objective != "category" and not self.augment:
            raise ValueError("the contrastive objective needs augment=True (two views of each image)")
        return self


# ----------------------------------------------------------------------------- network
class BasicBlock(nn.Module):
    """Two 3x3 conv + batch norm layers with a shortcut (He et al. 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))  # (B, C_out, H', W')
        h = self.bn2(self.conv2(h))  # (B, C_out, H', W')
        return F.relu(h + self.shortcut(x))


class ResNetEncoder(ContentNetwork):
    """Small ResNet over (B, 3, S, S) images in [0, 1]; `embed` is the pooled (B, widths[-1])."""

    def __init__(self, widths: Sequence[int], n_classes: int, projection_dim: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks, c_in = [], widths[0]
        for i, c_out in enumerate(widths):
            blocks.append(BasicBlock(c_in, c_out, stride=1 if i == 0 else 2))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, n_classes)
        # SimCLR's projection head: the contrastive loss acts on it, the vector is taken before it
        self.projector = nn.Sequential(nn.Linear(c_in, c_in), nn.ReLU(), nn.Linear(c_in, projection_dim))
        # input normalisation travels with the weights, so a pretrained file brings its own
        self.register_buffer("pixel_mean", torch.full((3,), 0.5))
        self.register_buffer("pixel_std", torch.full((3,), 0.25))
        self.frozen = 0

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) uint8 pixels or floats in [0, 1] -> (B, D)."""
        if not x.is_floating_point():
            x = x.float() / 255.0
        x = (x - self.pixel_mean[:, None, None]) / self.pixel_std[:, None, None]
        h = self.blocks(self.stem(x))  # (B, D, S', S')
        return h.mean(dim=(2, 3))  # global average pooling -> (B, D)

    def freeze(self, n_blocks: int) -> None:
        """Stop training the stem and the first `n_blocks` residual blocks (0: train everything)."""
        self.frozen = n_blocks
        for p in self.parameters():
            p.requires_grad_(True)
        for module in self._frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)
        self.train(self.training)

    def _frozen_modules(self) -> list[nn.Module]:
        return [self.stem, *list(self.blocks)[: self.frozen]] if self.frozen else []

    def train(self, mode: bool = True) -> ResNetEncoder:
        """As `nn.Module.train`, but frozen blocks stay in eval mode so their batch-norm running
        statistics are not updated by the new data either."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self


def load_pretrained(network: ResNetEncoder, path: Path) -> None:
    """Load a state_dict of this architecture from `path` (weights_only=True).

    The classifier and projection heads are taken only when their shapes match: a model trained on
    another label set keeps its backbone and gets a fresh head. Raises FileNotFoundError when the
    file is absent and ValueError when the backbone does not fit the configured `widths`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained_path {str(path)!r} does not exist; give a state_dict file saved with "
            "torch.save(network.state_dict(), path), or set pretrained_path: null"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    own = network.state_dict()
    optional = ("head.", "projector.")
    mismatched = {k for k, v in state.items() if k in own and own[k].shape != v.shape}
    state = {k: v for k, v in state.items() if not (k in mismatched and k.startswith(optional))}
    wrong = {k: (tuple(state[k].shape), tuple(own[k].shape)) for k in mismatched if k in state}
    missing = [k for k in own if k not in state and not k.startswith(optional)]
    if wrong or missing:
        raise ValueError(
            f"{path} does not fit an image encoder with these widths: {len(missing)} missing "
            f"tensor(s) {missing[:3]}, shape mismatches (file, model) {dict(list(wrong.items())[:3])}"
        )
    unexpected = [k for k in state if k not in own]
    network.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    logger.info("loaded pretrained image weights from %s (%d tensors ignored)", path, len(unexpected))


# ----------------------------------------------------------------------------- augmentation
def draw_augmentation(n: int, generator: torch.Generator, config: ImageEncoderConfig, view: str) -> Batch:
    """Random crop offsets, flips and jitter factors for `n` images (drawn on the CPU generator,
    applied on the device by `augment`)."""
    p, j = config.crop_padding, config.jitter
    return {
        f"crop_{view}": torch.randint(0, 2 * p + 1, (n, 2), generator=generator),  # (n, 2)
        f"flip_{view}": torch.rand(n, generator=generator) < 0.5,  # (n,)
        f"jitter_{view}": 1.0 + j * (2.0 * torch.rand(n, 3, generator=generator) - 1.0),  # (n, 3)
    }


def augment(
    x: torch.Tensor, crop: torch.Tensor, flip: torch.Tensor, jitter: torch.Tensor, pad: int
) -> torch.Tensor:
    """Random crop (reflect-padded shift), horizontal flip and brightness/contrast/saturation
    jitter of a batch (B, 3, S, S) in [0, 1], one draw per image, vectorised."""
    b, _, s, _ = x.shape
    if pad:
        xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")  # (B, 3, S+2p, S+2p)
        ar = torch.arange(s, device=x.device)
        rows = crop[:, 0, None] + ar  # (B, S)
        cols = crop[:, 1, None] + ar  # (B, S)
        bi = torch.arange(b, device=x.device)[:, None, None]
        x = xp[bi, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, 3, S, S)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    bright, contrast, sat = (jitter[:, k, None, None, None].to(x.dtype) for k in range(3))  # (B, 1, 1, 1)
    x = x * bright
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    x = (x - mean) * contrast + mean
    gray = x.mean(dim=1, keepdim=True)  # (B, 1, S, S)
    x = (x - gray) * sat + gray
    return x.clamp(0.0, 1.0)


def nt_xent(za: torch.Tensor, zb: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (Chen et al. 2020): each view must pick its partner among the 2B - 1 others."""
    z = F.normalize(torch.cat([za, zb]).float(), dim=1)  # (2B, P)
    sim = z @ z.T / temperature  # (2B, 2B)
    n = za.shape[0]
    sim.fill_diagonal_(-float("inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # (2B,)
    return F.cross_entropy(sim, target)


def _image_loss(config: ImageEncoderConfig):
    pad = config.crop_padding

    def loss_fn(network: nn.Module, batch: Batch) -> torch.Tensor:
        x = batch["x"].float() / 255.0  # (B, 3, S, S)
        label = batch["label"]
        xa = augment(x, batch["crop_a"], batch["flip_a"], batch["jitter_a"], pad) if config.augment else x
        ha = network.embed(xa)  # (B, D)
        if config.objective == "contrastive":
            ha_for_head = ha.detach()  # online linear probe: labels do not shape the features
        else:
            ha_for_head = ha
        logits = network.head(ha_for_head).float()  # (B, n_classes)
        # unlabelled rows (-1) only serve the contrastive term; sum/count avoids NaN on none
        ce = F.cross_entropy(logits, label, ignore_index=-1, reduction="sum")
        ce = ce / (label >= 0).sum().clamp_min(1)
        if config.objective == "category":
            return ce
        xb = augment(x, batch["crop_b"], batch["flip_b"], batch["jitter_b"], pad)
        hb = network.embed(xb)  # (B, D)
        contrastive = nt_xent(network.projector(ha), network.projector(hb), config.temperature)
        return ce + config.contrastive_weight * contrastive

    return loss_fn


# ----------------------------------------------------------------------------- entry points
def _loader(config: ImageEncoderConfig):
    def load(items: pd.DataFrame, media: Mapping[str, MediaSource]) -> Loaded:
        def decode(data: bytes) -> np.ndarray:
            return decode_image(data, config.image_size)

        images, kept, skipped = load_media(items, media, "image_path", decode, config.on_bad_media)
        s = config.image_size
        x = torch.from_numpy(np.stack(images)) if images else torch.empty(0, s, s, 3, dtype=torch.uint8)
        return Loaded(x.permute(0, 3, 1, 2).contiguous(), kept, skipped)  # (N, 3, S, S) uint8

    return load


def _builder(config: ImageEncoderConfig):
    def build(n_classes: int, x: torch.Tensor, train_rows: np.ndarray) -> ResNetEncoder:
        network = ResNetEncoder(config.widths, n_classes, config.projection_dim)
        pixels = x[train_rows].float() / 255.0  # (N, 3, S, S)
        with torch.no_grad():
            network.pixel_mean.copy_(pixels.mean(dim=(0, 2, 3)))
            network.pixel_std.copy_(pixels.std(dim=(0, 2, 3)).clamp_min(1e-3))
        if config.pretrained_path is not None:
            load_pretrained(network, config.pretrained_path)
        network.freeze(config.freeze_blocks)
        return network

    return build


def fit_image_encoder(
    items: pd.DataFrame,
    media: Mapping[str, MediaSource],
    config: ImageEncoderConfig,
    *,
    heldout_ids: Sequence[str] | None = None,
    callbacks: Sequence[Callback] = (),
) -> EncoderResult:
    """Pretrain the image encoder on the proxy task and vectorise every item with a usable image.

    `heldout_ids` replaces the random stratified hold-out with the given items.
    """

    def extras(n: int, generator: torch.Generator) -> Batch:
        if not config.augment:
            return {}
        out = draw_augmentation(n, generator, config, "a")
        if config.objective != "category":
            out.update(draw_augmentation(n, generator, config, "b"))
        return out

    result = pretrain_encoder(
        "image",
        items,
        media,
        config,
        load=_loader(config),
        build=_builder(config),
        loss_fn=_image_loss(config),
        extras=extras,
        train_unlabelled=config.objective != "category",
        heldout_ids=heldout_ids,
        callbacks=callbacks,
    )
    result.report["objective"] = config.objective
    result.report["pretrained"] = str(config.pretrained_path) if config.pretrained_path else None
    result.report["frozen_blocks"] = config.freeze_blocks
    return result


def train_image_encoder(
    items: pd.DataFrame, media: Mapping[str, MediaSource], config: ImageEncoderConfig
) -> tuple[pd.DataFrame, dict]:
    """Pipeline entry point: (vector table `item_id, v0..v{D-1}`, report dict)."""
    result = fit_image_encoder(items, media, config)
    return result.vectors, result.report
