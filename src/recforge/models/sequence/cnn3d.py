"""`cnn3d`: 3-D convolutional networks for session-based recommendation with content features
(Tuan & Phuong 2017, "3D Convolutional Networks for Session-based Recommendation with Content
Features").

Every item is written as characters of a fixed alphabet — its id, its text (title and
description) and its category, each cut or padded to `width` characters — so one item is a frame
(fields, width) and a sequence of items is a cube (time, fields, width), with the alphabet as
channels. 3-D convolutions slide over that cube:

    frame = ReLU(Conv3d_(1, 1, k)(onehot(chars)))  ->  max-pool along characters
    cube  = ReLU(Conv3d_(kt, 3, 3)(frames over time))  ->  max-pool along characters
    h_t   = Dropout(ReLU(W · flatten(cube_t)))         (D,)  position-wise
    r(i | s_1..s_t) = h_t · E[i] + b_i                 softmax over all items

The one-hot alphabet enters through a `char_dim` embedding, which is the first convolution's
weight restricted to one-hot inputs, without materialising |V|-channel cubes. The time
convolution is causal (padded on the left only), so the output at t reads items t-kt+1..t and
every position of a window is predicted in one pass.

Content comes in as an integer tensor of character codes, made by `item_content(items,
item_map)` from the items table and passed as `item_vectors` (the training pipeline does so
with the `items` table, through `Family.item_content`); without it the id field holds the
item index's digits and the other fields are empty. The codes are a buffer, so `save`/`load`
keep them. A float `item_vectors` initialises the output item table instead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.models.base import Batch, Family, ModelConfig
from recforge.models.layers import init_embedding_from_vectors
from recforge.models.sequence.sasrec import (
    Grouping,
    NextItemLoss,
    NextItemNetwork,
    left_align,
    masked_items,
    next_item_loss,
    window_batches,
)

# The paper's vocabulary: lower-case letters, digits and common punctuation. Code 0 is "no
# character" (padding), codes 1.. the alphabet, the last code any other character.
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 -,;.!?:'\"/\\|_@#$%&*+=<>()[]"
FIELDS = ("id", "text", "category")
N_CODES = len(ALPHABET) + 2
_UNKNOWN = len(ALPHABET) + 1
_BYTE_CODES = np.full(256, _UNKNOWN, dtype=np.uint8)
_BYTE_CODES[0] = 0
for _k, _c in enumerate(ALPHABET):
    _BYTE_CODES[ord(_c)] = _k + 1
    _BYTE_CODES[ord(_c.upper())] = _k + 1


def encode_characters(values: pd.Series | np.ndarray, width: int) -> np.ndarray:
    """(n, width) uint8 character codes of strings, cut or right-padded with 0 to `width`."""
    s = pd.Series(np.asarray(values, dtype=object)).astype("string").fillna("")
    raw = np.array(s.str.encode("ascii", errors="replace").tolist(), dtype=f"S{width}")  # cut to width
    return _BYTE_CODES[raw.view(np.uint8).reshape(len(raw), width)]


def item_content(items: pd.DataFrame, item_map: pd.DataFrame, width: int = 64) -> torch.Tensor:
    """(n_items, 3, width) uint8 codes of each item's id, text ("title text") and category, rows
    in item_idx order; items missing from `items`, or a missing column, give empty fields."""
    ids = item_map.sort_values("item_idx")["item_id"].astype("string")
    table = items.drop_duplicates("item_id").astype({"item_id": "string"}).set_index("item_id")
    table = table.reindex(ids.to_numpy())

    def column(name: str) -> pd.Series:
        if name not in table.columns:
            return pd.Series([""] * len(table), dtype="string")
        return table[name].astype("string").fillna("").reset_index(drop=True)

    text = (column("title") + " " + column("text")).str.strip()
    fields = [ids.reset_index(drop=True), text, column("category")]
    return torch.from_numpy(np.stack([encode_characters(f, width) for f in fields], axis=1))


def index_content(n_items: int, width: int) -> torch.Tensor:
    """(n_items, 3, width) codes when there is no items table: the index's digits as the id."""
    digits = len(str(max(n_items - 1, 0)))
    ids = pd.Series(np.arange(n_items)).astype(str).str.zfill(digits)
    codes = np.zeros((n_items, len(FIELDS), width), dtype=np.uint8)
    codes[:, 0] = encode_characters(ids, width)
    return torch.from_numpy(codes)


class CNN3DConfig(ModelConfig):
    width: int = Field(32, ge=4, description="characters kept per field")
    char_dim: int = Field(8, gt=0, description="channels the one-hot alphabet is projected to")
    char_kernel: int = Field(5, gt=0, description="characters seen by the frame convolution")
    time_kernel: int = Field(3, gt=0, description="items seen by the cube convolution")
    channels: tuple[int, int] = (8, 16)
    dim: int = Field(64, gt=0)
    dropout: float = Field(0.2, ge=0, lt=1)
    max_len: int = Field(20, gt=0)
    loss: NextItemLoss = "ce"
    by: Grouping = "auto"
    freeze_item_vectors: bool = False


class CNN3D(NextItemNetwork):
    def __init__(self, n_items: int, config: CNN3DConfig, content: torch.Tensor) -> None:
        super().__init__()
        c1, c2 = config.channels
        n_fields, width = content.shape[1], config.width
        self.register_buffer("content", content)  # (I, F, W) uint8
        self.time_kernel = config.time_kernel
        self.char = nn.Embedding(N_CODES, config.char_dim, padding_idx=0)
        k = config.char_kernel
        self.frame_conv = nn.Conv3d(config.char_dim, c1, (1, 1, k), padding=(0, 0, k // 2))
        self.cube_conv = nn.Conv3d(c1, c2, (config.time_kernel, 3, 3), padding=(0, 1, 1))
        self.pool = nn.MaxPool3d((1, 1, 2))
        self.fc = nn.Linear(c2 * n_fields * (width // 2 // 2), config.dim)
        self.drop = nn.Dropout(config.dropout)
        self.item = nn.Embedding(n_items, config.dim)
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        nn.init.normal_(self.item.weight, std=config.dim**-0.5)

    def frames(self, items: torch.Tensor) -> torch.Tensor:  # (U,) -> (U, C1, F, W/2)
        x = self.char(self.content[items].long())  # (U, F, W, E)
        x = x.permute(0, 3, 1, 2).unsqueeze(2)  # (U, E, 1, F, W)
        return self.pool(F.relu(self.frame_conv(x))).squeeze(2)  # (U, C1, F, W/2)

    def encode(self, items: torch.Tensor) -> torch.Tensor:  # (B, w) -> (B, w, D)
        # the frame convolution spans one item, so it runs once per distinct item of the batch
        uniq, inverse = torch.unique(masked_items(items), return_inverse=True)
        x = self.frames(uniq)[inverse]  # (B, w, C1, F, W/2)
        x = F.pad(x.transpose(1, 2), (0, 0, 0, 0, self.time_kernel - 1, 0))  # (B, C1, kt-1+w, F, W/2)
        x = self.pool(F.relu(self.cube_conv(x)))  # (B, C2, w, F, W/4)
        x = x.transpose(1, 2).flatten(2)  # (B, w, C2*F*W/4)
        return self.drop(F.relu(self.fc(x)))  # (B, w, D)

    def score_sequence(self, items: torch.Tensor) -> torch.Tensor:  # (B, L) right-aligned -> (B, I)
        # the last output reads only the last time_kernel items
        aligned, lengths = left_align(items[:, -self.time_kernel :])
        return self.logits(self.encode_last(aligned, lengths))


def build(config: CNN3DConfig, train: InteractionData, item_vectors: torch.Tensor | None = None) -> CNN3D:
    """`item_vectors`: integer (n_items, 3, W) character codes from `item_content` (cut or padded
    to `config.width`), or float pretrained vectors for the output item table, or None."""
    content = index_content(train.n_items, config.width)
    is_codes = item_vectors is not None and not torch.is_floating_point(item_vectors)
    if is_codes:
        if tuple(item_vectors.shape[:2]) != (train.n_items, len(FIELDS)):
            raise ValueError(
                f"item content has shape {tuple(item_vectors.shape)}; expected ({train.n_items}, "
                f"{len(FIELDS)}, width) from cnn3d.item_content"
            )
        w = min(config.width, item_vectors.shape[2])
        content[:, :, :w] = item_vectors[:, :, :w].to(torch.uint8)
        content[:, :, w:] = 0
    net = CNN3D(train.n_items, config, content)
    net.init_user_sequences(train, config.max_len)
    if item_vectors is not None and not is_codes:
        init_embedding_from_vectors(net.item, item_vectors, freeze=config.freeze_item_vectors)
    return net


def batches(network, train, config: CNN3DConfig, batch_size, generator):
    return window_batches(train, config.max_len, batch_size, generator, config.by, negatives=config.loss == "bce")


def loss(network: CNN3D, batch: Batch, config: CNN3DConfig) -> torch.Tensor:
    return next_item_loss(network, batch, config.loss)


FAMILY = Family(
    name="cnn3d", config=CNN3DConfig, build=build, batches=batches, loss=loss,
    paper="Tuan & Phuong 2017 (3D-CNN)", item_content=item_content, next_item=True,
)
