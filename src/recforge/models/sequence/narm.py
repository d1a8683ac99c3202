"""`narm`: Neural Attentive Recommendation Machine for session-based recommendation (Li, Ren,
Chen, Ren, Lian & Ma 2017, "Neural Attentive Session-based Recommendation").

    h_1..h_t = GRU(Dropout(E[s_1..s_t]))                   (B, L, H)
    c_g = h_t                                               global encoder: the sequential behaviour
    α_tj = vᵀ σ(A₁ h_t + A₂ h_j),  c_l = Σ_{j≤t} α_tj h_j     local encoder: the main purpose
    r(i | s_1..s_t) = E[i]ᵀ B Dropout([c_g; c_l])             bilinear decoder, B: (D, 2H)

As in the paper the attention weights are not normalised. The paper trains on every prefix of a
session; here one pass over a window computes the same (prefix, next item) terms at every
position, with the local attention restricted to j ≤ t.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from recforge.models.base import ModelConfig
from recforge.models.sequence.sasrec import (
    Grouping,
    NextItemLoss,
    NextItemNetwork,
    masked_items,
    next_item_family,
)


class NARMConfig(ModelConfig):
    dim: int = Field(64, gt=0, description="item embedding size D")
    hidden: int = Field(100, gt=0, description="GRU size H")
    embedding_dropout: float = Field(0.25, ge=0, lt=1)
    context_dropout: float = Field(0.5, ge=0, lt=1)
    max_len: int = Field(50, gt=0)
    window_stride: int | None = Field(None, gt=0, description="None = max_len; see sasrec.sequence_windows")
    loss: NextItemLoss = "ce"
    by: Grouping = "auto"
    freeze_item_vectors: bool = False


class NARM(NextItemNetwork):
    def __init__(self, n_items: int, config: NARMConfig) -> None:
        super().__init__()
        d, h = config.dim, config.hidden
        self.item = nn.Embedding(n_items, d)
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.gru = nn.GRU(d, h, batch_first=True)
        self.a1 = nn.Linear(h, h, bias=False)
        self.a2 = nn.Linear(h, h, bias=False)
        self.v = nn.Linear(h, 1, bias=False)
        self.context_dropout = nn.Dropout(config.context_dropout)
        self.decoder = nn.Linear(2 * h, d, bias=False)  # B of the bilinear decoder
        nn.init.normal_(self.item.weight, std=d**-0.5)

    def states(self, items: torch.Tensor) -> torch.Tensor:  # (B, w) -> (B, w, H)
        out, _ = self.gru(self.embedding_dropout(self.item(masked_items(items))))
        return out

    def decode(self, global_: torch.Tensor, local: torch.Tensor) -> torch.Tensor:  # (..., H) x2 -> (..., D)
        return self.decoder(self.context_dropout(torch.cat([global_, local], dim=-1)))

    def encode(self, items: torch.Tensor) -> torch.Tensor:  # (B, w) -> (B, w, D)
        h = self.states(items)  # (B, w, H)
        w = items.shape[1]
        alpha = self.v(torch.sigmoid(self.a1(h)[:, :, None] + self.a2(h)[:, None])).squeeze(-1)  # (B, t, j)
        alpha = alpha * torch.ones(w, w, device=items.device).tril()  # j <= t
        return self.decode(h, alpha @ h)  # (B, w, D)

    def encode_last(self, items: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # attention from the last position only: (B, w, H) memory instead of (B, w, w, H)
        h = self.states(items)  # (B, w, H)
        last = h[torch.arange(len(items), device=items.device), (lengths - 1).clamp_min(0)]  # (B, H)
        alpha = self.v(torch.sigmoid(self.a1(last)[:, None] + self.a2(h))).squeeze(-1)  # (B, w)
        alpha = alpha * (items >= 0)
        return self.decode(last, (alpha[:, :, None] * h).sum(1))  # (B, D)


FAMILY = next_item_family("narm", NARMConfig, NARM, "Li et al. 2017 (NARM)")
