"""`tcn`: a Temporal Convolutional Network for next-item prediction (Bai, Kolter & Koltun 2018,
"An Empirical Evaluation of Generic Convolutional and Recurrent Networks for Sequence Modeling").

    x = Dropout(E[s_1..s_L])                               (B, D, L)
    block_k(x) = ReLU(x + Drop(ReLU(C_k2(Drop(ReLU(C_k1(x)))))))
    C: dilated causal 1-D convolution, dilation 2^k, optional weight normalisation
    r(i | s_1..s_t) = h_t · E[i] + b_i                      the item table is shared for scoring

Causal padding (k - 1)·d zeros on the left only, so the output at t never sees t + 1.. and the
receptive field is 1 + 2 (k - 1)(2^levels - 1) items. Like `sasrec`, every position of a window
is predicted in one pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from recforge.models.base import ModelConfig
from recforge.models.sequence.sasrec import (
    Grouping,
    NextItemLoss,
    NextItemNetwork,
    masked_items,
    next_item_family,
)


class TCNConfig(ModelConfig):
    dim: int = Field(64, gt=0)
    levels: int = Field(3, gt=0, description="residual blocks; block k has dilation 2^k")
    kernel_size: int = Field(3, ge=2)
    dropout: float = Field(0.2, ge=0, lt=1)
    weight_norm: bool = True
    max_len: int = Field(50, gt=0)
    window_stride: int | None = Field(None, gt=0, description="None = max_len; see sasrec.sequence_windows")
    loss: NextItemLoss = "ce"
    by: Grouping = "user"
    freeze_item_vectors: bool = False


class CausalConv(nn.Module):
    def __init__(self, dim: int, kernel_size: int, dilation: int, normalise: bool) -> None:
        super().__init__()
        self.left = (kernel_size - 1) * dilation
        conv = nn.Conv1d(dim, dim, kernel_size, dilation=dilation)
        self.conv = weight_norm(conv) if normalise else conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D, L) -> (B, D, L)
        return self.conv(F.pad(x, (self.left, 0)))


class TemporalBlock(nn.Module):
    def __init__(self, dim: int, kernel_size: int, dilation: int, dropout: float, normalise: bool) -> None:
        super().__init__()
        self.conv1 = CausalConv(dim, kernel_size, dilation, normalise)
        self.conv2 = CausalConv(dim, kernel_size, dilation, normalise)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D, L)
        y = self.drop(F.relu(self.conv1(x)))
        y = self.drop(F.relu(self.conv2(y)))
        return F.relu(x + y)  # channels stay D, so the residual needs no 1x1 convolution


class TCN(NextItemNetwork):
    def __init__(self, n_items: int, config: TCNConfig) -> None:
        super().__init__()
        d = config.dim
        self.item = nn.Embedding(n_items, d)
        self.item_bias = nn.Parameter(torch.zeros(n_items))
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.Sequential(
            *(
                TemporalBlock(d, config.kernel_size, 2**k, config.dropout, config.weight_norm)
                for k in range(config.levels)
            )
        )
        nn.init.normal_(self.item.weight, std=d**-0.5)

    def encode(self, items: torch.Tensor) -> torch.Tensor:  # (B, w) -> (B, w, D)
        x = self.drop(self.item(masked_items(items)))  # (B, w, D)
        return self.blocks(x.transpose(1, 2)).transpose(1, 2)  # (B, w, D)


FAMILY = next_item_family("tcn", TCNConfig, TCN, "Bai, Kolter & Koltun 2018 (TCN)")
