"""`sasrec`: Self-Attentive Sequential Recommendation (Kang & McAuley 2018, "Self-Attentive
Sequential Recommendation").

    x_t = E[s_t] · √D + P[t]                          item + learned position embedding, t = 0..L-1
    x   = x + Dropout(Attn(LN(x)))                    causal multi-head self-attention, per block
    x   = x + Dropout(FFN(LN(x)))                     FFN: Linear -> ReLU -> Linear
    r(i | s_1..s_t) = LN(x_t) · E[i]                  the item table is shared for scoring

That is `norm: pre` (the paper's code normalises before each sub-layer). `norm: post` is the
BERT-style encoder RecBole's SASRec uses: x_t = LN(E[s_t] + P[t]) with tables drawn from
N(0, 0.02²), then x = LN(x + Dropout(Attn(x))), x = LN(x + Dropout(FFN(x))) and r = x_t · E[i];
`activation: gelu` with it matches RecBole's FFN.

Causal attention predicts every next item of a window in one pass, so training sees each
(prefix, next item) pair once per epoch at the cost of one forward per window rather than one
per prefix. The loss is the paper's binary cross-entropy with one sampled negative per position
(`loss: bce`), or full softmax cross-entropy (`loss: ce`), which ranks markedly better
(Klenitskiy & Vasilev 2023, "Turning Dross Into Gold Loss: is BERT4Rec really better than
SASRec?").

The window batching (`window_batches`), the per-position network base (`NextItemNetwork`) and its
loss (`next_item_loss`) defined here are shared by `tcn`, `narm` and `cnn3d`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.data.sequences import PAD, Sequences, build_sequences
from recforge.models.base import Batch, Family, ModelConfig
from recforge.models.layers import init_embedding_from_vectors
from recforge.models.sequence.sequence import SequenceNetwork
from recforge.training.losses import bce, softmax_cross_entropy
from recforge.training.samplers import uniform_negatives

Grouping = Literal["session", "user", "auto"]
NextItemLoss = Literal["ce", "bce"]
BUCKET = 32  # batches whose windows are sorted by length together


# ---------------------------------------------------------------- windows of next-item steps
def sequence_windows(
    seqs: Sequences, max_len: int, stride: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut every sequence, from its end, into windows of at most `max_len` next-item steps.

    Returns (inputs (W, max_len), targets (W, max_len), sequence index (W,)), left-aligned with
    `PAD` on the right: `targets[w, c]` is the item that follows `inputs[w, c]`, and a causal
    network predicts it from `inputs[w, :c + 1]`. Every item but a sequence's first is a target
    exactly once. By default (`stride` = `max_len`) windows do not overlap: the most recent one is
    full, the oldest holds the remainder. With a smaller `stride`, windows end every `stride` steps
    and each target is scored only in its last `stride` columns (the oldest window scores all of
    them): every target then sees at least `max_len - stride + 1` items, or its whole prefix, at
    about `max_len / stride` times the cost; the other columns are context (target PAD).
    """
    step = min(stride or max_len, max_len)
    n = seqs.lengths  # (S,)
    # windows per sequence: the oldest one starts at the sequence's first target
    n_win = np.where(n >= 2, np.maximum(0, -(-(n - 1 - max_len) // step)) + 1, 0)  # (S,)
    first_win = np.cumsum(n_win) - n_win  # (S,)
    win_seq = np.repeat(np.arange(len(seqs)), n_win)  # (W,)
    back = first_win[win_seq] + n_win[win_seq] - 1 - np.arange(len(win_seq))  # (W,) 0 = most recent; stored oldest first
    last_t = n[win_seq] - 1 - back * step  # (W,) positions in the sequence of a window's first and
    first_t = np.maximum(1, n[win_seq] - max_len - back * step)  # last target
    width = last_t - first_t + 1  # (W,)
    w_of = np.repeat(np.arange(len(win_seq)), width)  # (sum width,)
    col = np.arange(len(w_of)) - np.repeat(np.cumsum(width) - width, width)
    inputs = np.full((len(win_seq), max_len), PAD, dtype=np.int64)
    inputs[w_of, col] = seqs.items[seqs.offsets[win_seq[w_of]] + first_t[w_of] - 1 + col]

    seq_of = np.repeat(np.arange(len(seqs)), n)  # (N,)
    pos = np.arange(len(seqs.items)) - seqs.offsets[seq_of]  # (N,) position within its sequence
    tgt = np.flatnonzero(pos >= 1)  # (T,) flat indices of the targets
    s, p = seq_of[tgt], pos[tgt]
    win = first_win[s] + n_win[s] - 1 - np.minimum((n[s] - 1 - p) // step, n_win[s] - 1)  # (T,)
    targets = np.full((len(win_seq), max_len), PAD, dtype=np.int64)
    targets[win, p - first_t[win]] = seqs.items[tgt]
    return inputs, targets, win_seq


def window_batches(
    train: InteractionData,
    max_len: int,
    batch_size: int,
    generator: torch.Generator,
    by: Grouping = "auto",
    negatives: bool = False,
    stride: int | None = None,
) -> Iterator[Batch]:
    """Shuffled batches of whole windows (see `sequence_windows`), each holding about
    `batch_size` next-item targets, as a prefix-per-example family would:
    {"items": (B, w) left-aligned inputs, "targets": (B, w) with PAD where there is none,
    "user": (B,)} and, with `negatives`, "negative": (B, w) one item per position drawn
    uniformly from those the user never met in train. w is the batch's longest window, and
    windows of similar lengths are batched together, so short sessions are not padded to
    `max_len`. `auto` groups by session when the split has sessions; `stride` makes windows
    overlap (see `sequence_windows`)."""
    if by == "auto":
        by = "session" if train.session is not None else "user"
    seqs = build_sequences(train, by=by, min_length=2)
    inputs, targets, seq = sequence_windows(seqs, max_len, stride)
    users = seqs.users[seq]  # (W,)
    counts = (targets >= 0).sum(1)  # (W,) targets per window
    widths = (inputs >= 0).sum(1)  # (W,) left-aligned, so the columns it needs
    perm = torch.randperm(len(counts), generator=generator).numpy()
    # bucketing: inside each run of BUCKET batches' worth of shuffled windows, sort by width, so
    # a batch of short sessions is not padded to the width of one long one
    chunk = (np.cumsum(counts[perm]) - counts[perm]) // (BUCKET * batch_size)
    perm = perm[np.lexsort((widths[perm], chunk))]
    batch_of = (np.cumsum(counts[perm]) - counts[perm]) // batch_size
    groups = np.split(perm, np.flatnonzero(np.diff(batch_of)) + 1)
    csr = train.csr if negatives else None
    for g in torch.randperm(len(groups), generator=generator).tolist():
        idx = groups[g]
        width = int(widths[idx].max())
        batch = {
            "items": torch.from_numpy(inputs[idx, :width]),
            "targets": torch.from_numpy(targets[idx, :width]),
            "user": torch.from_numpy(users[idx]),
        }
        if csr is not None:
            batch["negative"] = uniform_negatives(batch["user"], csr, width, generator)  # (B, w)
        yield batch


def left_align(items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-aligned prefixes (B, L) -> (left-aligned (B, w), lengths (B,)), w = longest prefix.

    Causal networks read left-aligned rows: padding then lies after the real items, where no
    real position can see it, and each row starts at position 0 as the training windows do.
    """
    lengths = (items >= 0).sum(1)  # (B,)
    width = max(int(lengths.max()), 1) if len(items) else 1
    shift = items.shape[1] - lengths  # (B,) leading pads
    cols = (torch.arange(width, device=items.device)[None, :] + shift[:, None]).clamp_max(items.shape[1] - 1)
    aligned = items.gather(1, cols)  # (B, w)
    aligned = aligned.masked_fill(torch.arange(width, device=items.device)[None, :] >= lengths[:, None], PAD)
    return aligned, lengths


class NextItemNetwork(SequenceNetwork):
    """A causal sequence network: `encode` maps a left-aligned window (B, w) to one vector per
    position (B, w, D), position t seeing items 0..t only; scores are those vectors against the
    item table `self.item` (plus `self.item_bias` when not None)."""

    item: nn.Embedding

    def __init__(self) -> None:
        super().__init__()
        self.register_parameter("item_bias", None)  # subclasses may set a (I,) parameter

    def encode(self, items: torch.Tensor) -> torch.Tensor:  # (B, w) -> (B, w, D)
        raise NotImplementedError

    def encode_last(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, w) left-aligned, (B,) -> (B, D): the vector after each row's last item."""
        h = self.encode(items)  # (B, w, D)
        return h[torch.arange(len(items), device=items.device), (lengths - 1).clamp_min(0)]

    def logits(self, h: torch.Tensor) -> torch.Tensor:  # (..., D) -> (..., I)
        out = h @ self.item.weight.T
        return out if self.item_bias is None else out + self.item_bias

    def pair_logits(self, h: torch.Tensor, item: torch.Tensor) -> torch.Tensor:  # (..., D), (...) -> (...)
        out = (h * self.item(item)).sum(-1)
        return out if self.item_bias is None else out + self.item_bias[item]

    def score_sequence(self, items: torch.Tensor) -> torch.Tensor:  # (B, L) right-aligned -> (B, I)
        aligned, lengths = left_align(items[:, -self.max_len :])
        return self.logits(self.encode_last(aligned, lengths))

    def item_embeddings(self) -> torch.Tensor:
        return self.item.weight

    def retrieval_items(self) -> torch.Tensor:
        w = self.item.weight
        bias = torch.zeros_like(w[:, :1]) if self.item_bias is None else self.item_bias[:, None]
        return torch.cat([w, bias], dim=1)  # (I, D + 1)

    def retrieval_users(self, user: torch.Tensor) -> torch.Tensor:
        aligned, lengths = left_align(self.user_sequence[user][:, -self.max_len :])
        h = self.encode_last(aligned, lengths)  # (B, D): the last position's output
        return torch.cat([h, torch.ones_like(h[:, :1])], dim=1)  # (B, D + 1)


def masked_items(items: torch.Tensor) -> torch.Tensor:
    """PAD (-1) -> 0 so that an embedding lookup works; outputs at PAD positions are never read."""
    return items.clamp_min(0)


def next_item_loss(network: NextItemNetwork, batch: Batch, loss: NextItemLoss = "ce") -> torch.Tensor:
    """Mean next-item loss over every real position of a window batch: full softmax
    cross-entropy (`ce`), or binary cross-entropy of the target against the batch's "negative"
    item at the same position (`bce`, Kang & McAuley 2018)."""
    h = network.encode(batch["items"])  # (B, w, D)
    valid = batch["targets"] >= 0  # (B, w)
    hv, target = h[valid], batch["targets"][valid]  # (T, D), (T,)
    if loss == "ce":
        return softmax_cross_entropy(network.logits(hv), target)
    pos = network.pair_logits(hv, target)  # (T,)
    neg = network.pair_logits(hv, batch["negative"][valid])  # (T,)
    return bce(torch.cat([pos, neg]), torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]))


# ---------------------------------------------------------------- the SASRec network
class SASRecConfig(ModelConfig):
    dim: int = Field(64, gt=0)
    heads: int = Field(2, gt=0)
    blocks: int = Field(2, gt=0)
    ffn_dim: int | None = Field(None, gt=0, description="inner size of the FFN; None = dim, as in the paper")
    dropout: float = Field(0.2, ge=0, lt=1)
    max_len: int = Field(50, gt=0)
    window_stride: int | None = Field(None, gt=0, description="None = max_len; see sequence_windows")
    loss: NextItemLoss = "ce"
    by: Grouping = "user"
    norm: Literal["pre", "post"] = Field("pre", description="LayerNorm before each sub-layer, or after the residual (BERT, RecBole)")
    activation: Literal["relu", "gelu"] = "relu"
    freeze_item_vectors: bool = False

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> SASRecConfig:
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be a multiple of heads={self.heads}")
        return self


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D) -> (B, L, D)
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, L, d/h) each
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )  # (B, h, L, d/h)
        return self.proj(y.transpose(1, 2).reshape(b, length, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, norm: str = "pre", activation: str = "relu") -> None:
        super().__init__()
        self.pre = norm == "pre"
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        act = nn.ReLU() if activation == "relu" else nn.GELU()
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), act, nn.Dropout(dropout), nn.Linear(ffn_dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D)
        if self.pre:
            x = x + self.drop(self.attn(self.ln1(x)))
            return x + self.drop(self.ffn(self.ln2(x)))
        x = self.ln1(x + self.drop(self.attn(x)))
        return self.ln2(x + self.drop(self.ffn(x)))


class SASRec(NextItemNetwork):
    def __init__(self, n_items: int, config: SASRecConfig) -> None:
        super().__init__()
        d = config.dim
        self.item = nn.Embedding(n_items, d)
        self.position = nn.Embedding(config.max_len, d)
        self.drop = nn.Dropout(config.dropout)
        ffn = config.ffn_dim or d
        self.pre = config.norm == "pre"
        self.blocks = nn.ModuleList(
            Block(d, config.heads, ffn, config.dropout, config.norm, config.activation) for _ in range(config.blocks)
        )
        self.ln = nn.LayerNorm(d)  # pre: after the last block; post: on the input embeddings
        self.scale = math.sqrt(d) if self.pre else 1.0
        std = d**-0.5 if self.pre else 0.02
        nn.init.normal_(self.item.weight, std=std)
        nn.init.normal_(self.position.weight, std=std)
        if not self.pre:  # BERT's initialisation of the encoder's linear layers
            for module in self.blocks.modules():
                if isinstance(module, nn.Linear):
                    nn.init.normal_(module.weight, std=0.02)
                    nn.init.zeros_(module.bias)

    def encode(self, items: torch.Tensor) -> torch.Tensor:  # (B, w) -> (B, w, D)
        w = items.shape[1]
        x = self.item(masked_items(items)) * self.scale + self.position.weight[:w]  # (B, w, D)
        x = self.drop(x) if self.pre else self.drop(self.ln(x))
        for block in self.blocks:
            x = block(x)
        return self.ln(x) if self.pre else x


def next_item_family(name: str, config_cls: type[ModelConfig], network_cls: type[NextItemNetwork], paper: str) -> Family:
    """The registry entry of a window-trained causal next-item network (sasrec, narm, tcn):
    `network_cls(n_items, config)`, trained on windows of `max_len` items with `next_item_loss`.
    The config has `max_len`, `by`, `loss`, `window_stride` and `freeze_item_vectors`."""

    def build(config, train: InteractionData, item_vectors: torch.Tensor | None = None) -> NextItemNetwork:
        net = network_cls(train.n_items, config)
        net.init_user_sequences(train, config.max_len)
        if item_vectors is not None:
            init_embedding_from_vectors(net.item, item_vectors, freeze=config.freeze_item_vectors)
        return net

    def batches(network, train, config, batch_size, generator) -> Iterator[Batch]:
        return window_batches(
            train, config.max_len, batch_size, generator, config.by, config.loss == "bce", config.window_stride
        )

    def loss(network: NextItemNetwork, batch: Batch, config) -> torch.Tensor:
        return next_item_loss(network, batch, config.loss)

    return Family(name=name, config=config_cls, build=build, batches=batches, loss=loss, paper=paper, next_item=True)


FAMILY = next_item_family("sasrec", SASRecConfig, SASRec, "Kang & McAuley 2018 (SASRec)")
