"""What the recurrent session families share: their config, a GRU cell, the item head, the
objectives. How their training data is laid out in steps and session-parallel batches:
`models.session_steps`."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.models.base import ModelConfig
from recforge.models.layers import init_embedding_from_vectors
from recforge.models.sequence.session_steps import sampling_probs
from recforge.training.losses import bpr, bpr_max, sampled_softmax, softmax_cross_entropy, top1, top1_max

Loss = Literal["cross_entropy", "sampled_softmax", "bpr", "top1", "bpr_max", "top1_max"]

# A masked-out candidate scores this: the pairwise losses then give it no gradient, the softmax
# losses no weight (exp(-1e4) is 0 in float32), and unlike -inf it never turns 0 * inf into NaN.
MASKED = -1e4


class RNNConfig(ModelConfig):
    """Hyper-parameters every recurrent session family shares.

    `by`: train on sessions or on user sequences (`auto`: sessions when the split has them).
    `dropout` applies to the input embeddings and to the states that are scored. `loss`:
    `cross_entropy` is the full softmax over the catalogue; the others score the target against
    sampled candidates — the other targets of the mini-batch plus `n_extra_negatives` items
    drawn ∝ popularity^`sample_alpha` (Hidasi & Karatzoglou 2018) — with `logq` correcting the
    sampled softmax for how often each candidate is drawn; `bpreg` weights BPR-max's score
    penalty. `max_len` bounds both the history a network reads when scoring and the runs it is
    trained on. `tie_embeddings` scores items with their input embeddings (see `ItemHead`).
    """

    dim: int = Field(64, gt=0)
    hidden: int = Field(64, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    max_len: int = Field(50, gt=0)
    by: Literal["auto", "session", "user"] = "auto"
    loss: Loss = "cross_entropy"
    n_extra_negatives: int = Field(0, ge=0)
    sample_alpha: float = Field(0.75, ge=0)
    logq: bool = True
    bpreg: float = Field(1.0, ge=0)
    tie_embeddings: bool = False
    freeze_item_vectors: bool = False


# ------------------------------------------------------------------------------------ modules
class GRUCell(nn.Module):
    """The GRU update (Cho et al. 2014) with the input side computed outside, once for all
    steps: `xg` holds W_x x + b_x for the reset, update and candidate gates, (B, 3H)."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hh = nn.Linear(hidden, 3 * hidden)
        self.hidden = hidden

    def forward(self, xg: torch.Tensor, h: torch.Tensor) -> torch.Tensor:  # (B, 3H), (B, H) -> (B, H)
        xrz, xn = xg.split([2 * self.hidden, self.hidden], dim=-1)
        hrz, hn = self.hh(h).split([2 * self.hidden, self.hidden], dim=-1)
        r, z = torch.sigmoid(xrz + hrz).chunk(2, dim=-1)
        n = torch.tanh(xn + r * hn)
        return n + z * (h - n)  # (1 - z) * n + z * h


def run_parallel(
    cell: GRUCell, xg: torch.Tensor, start: torch.Tensor, h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Session-parallel steps: (C, B, 3H) gate inputs, (C, B) restart flags and the (B, H) state
    carried in -> ((C, B, H) states, final (B, H)). A slot's state is zeroed where it restarts."""
    out = []
    # unbind, not xg[t]: each indexing step would back-propagate through a zero-filled (C, B, 3H)
    for x_t, start_t in zip(xg.unbind(0), start.unbind(0)):
        h = cell(x_t, h.masked_fill(start_t[:, None], 0.0))
        out.append(h)
    return torch.stack(out), h


def run_prefix(cell: GRUCell, xg: torch.Tensor, items: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Final state after reading right-aligned prefixes: (B, L, 3H) gate inputs, (B, L) items
    (PAD where empty), (B, H) initial state -> (B, H). The state stays put over padding."""
    for x_t, item_t in zip(xg.unbind(1), items.unbind(1)):
        h = torch.where((item_t >= 0)[:, None], cell(x_t, h), h)
    return h


class ItemHead(nn.Module):
    """Next-item scores from a state: s_i = h · w_i + b_i over a table of output item vectors.

    With `table`, the scores use that (input) embedding, reached from the state through a
    linear projection: the constrained embedding of Hidasi & Karatzoglou 2018, and RecBole's head.
    """

    def __init__(self, n_items: int, dim: int, table: nn.Embedding | None = None) -> None:
        super().__init__()
        if table is None:
            self.item = nn.Embedding(n_items, dim)
            nn.init.normal_(self.item.weight, std=dim**-0.5)
            self.proj: nn.Module = nn.Identity()
        else:
            self.item = table
            self.proj = nn.Linear(dim, table.embedding_dim)
        self.bias = nn.Parameter(torch.zeros(n_items))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (..., H) -> (..., I)
        z = self.proj(h)
        flat = torch.addmm(self.bias, z.reshape(-1, z.shape[-1]), self.item.weight.T)  # (N, I)
        return flat.view(*z.shape[:-1], -1)

    def pairs(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:  # (..., H), (...) -> (...)
        return (self.proj(h) * self.item(items)).sum(-1) + self.bias[items]

    def candidates(self, h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(G, E, H), (G, K) -> (G, E, K): every state of a group against the group's candidates."""
        return torch.bmm(self.proj(h), self.item(items).transpose(1, 2)) + self.bias[items][:, None, :]


def embedding(n: int, dim: int, std: float = 0.1) -> nn.Embedding:
    emb = nn.Embedding(n, dim)
    nn.init.normal_(emb.weight, std=std)
    return emb


# ------------------------------------------------------------------------------------ objective
def next_item_loss(
    head: ItemHead,
    h: torch.Tensor,
    target: torch.Tensor,
    rows: torch.Tensor,
    config: RNNConfig,
    negatives: torch.Tensor | None,
    target_probs: torch.Tensor | None = None,
    neg_probs: torch.Tensor | None = None,
) -> torch.Tensor:
    """The next-item objective of `config.loss` over groups of states.

    h (G, W, D) and target (G, W) (PAD where there is nothing to predict); `rows` (E,) the flat
    indices of the real targets. Sampled losses score each state against its group's targets
    (in-batch negatives; GRU4Rec groups by time step) plus `negatives` (G, N); a candidate equal
    to the target is masked. `target_probs`/`neg_probs` (n_items,) are the distributions the
    in-batch and extra candidates come from, for the logQ correction of the sampled softmax.
    """
    d = h.shape[-1]
    if rows.numel() == 0:
        return h.sum() * 0.0
    flat_target = target.reshape(-1)[rows]  # (E,)
    if config.loss == "cross_entropy":
        return softmax_cross_entropy(head(h.reshape(-1, d)[rows]), flat_target)
    valid = target >= 0  # (G, W)
    safe = target.clamp_min(0)
    cand, cand_ok = safe, valid
    if negatives is not None:
        cand = torch.cat([safe, negatives], dim=1)  # (G, K)
        cand_ok = torch.cat([valid, torch.ones_like(negatives, dtype=torch.bool)], dim=1)
    scores = head.candidates(h, cand).float()  # (G, W, K)
    masked = (cand[:, None, :] == safe[:, :, None]) | ~cand_ok[:, None, :]
    k = cand.shape[1]
    neg = scores.masked_fill(masked, MASKED).reshape(-1, k)[rows]  # (E, K)
    pos = head.pairs(h, safe).float().reshape(-1)[rows]  # (E,)
    if config.loss == "sampled_softmax":
        if not config.logq or target_probs is None:
            return sampled_softmax(pos, neg)
        # log of each candidate's expected count in the group: W draws ∝ target popularity
        # (the in-batch targets) plus N draws from the negative sampler
        n_extra = 0 if negatives is None else negatives.shape[1]
        width = valid.sum(1, keepdim=True).float()  # (G, 1)
        extra = neg_probs if neg_probs is not None else target_probs

        def log_q(items: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            return torch.log(w * target_probs[items] + n_extra * extra[items] + 1e-12)

        q_neg = log_q(cand, width)[:, None, :].expand(-1, target.shape[1], -1).reshape(-1, k)[rows]
        q_pos = log_q(safe, width).reshape(-1)[rows]
        return sampled_softmax(pos, neg, q_pos, q_neg)
    if config.loss == "bpr":
        return bpr(pos, neg)
    if config.loss == "top1":
        return top1(pos, neg)
    if config.loss == "bpr_max":
        return bpr_max(pos, neg, reg=config.bpreg)
    return top1_max(pos, neg)


def target_distribution(train: InteractionData) -> torch.Tensor:
    """(n_items,) how often each item is a training target, normalised."""
    pop = torch.as_tensor(train.item_popularity, dtype=torch.float32)
    return pop / pop.sum().clamp_min(1.0)


def left_align(items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-aligned prefixes (B, L) -> (left-aligned items (B, L), lengths (B,)).

    Causal networks read the left-aligned form; what follows a prefix's end is never read."""
    length = (items >= 0).sum(1)  # (B,)
    pad = items.shape[1] - length
    width = items.shape[1]
    idx = (torch.arange(width, device=items.device)[None, :] + pad[:, None]).clamp(max=width - 1)  # (B, L)
    return items.gather(1, idx), length




def prepare_recurrent(
    net: nn.Module, train: InteractionData, config: RNNConfig, item_vectors: torch.Tensor | None,
    table: nn.Embedding | None = None,
) -> None:
    """What every recurrent family's `build` does once its network exists: keep the users' last
    `max_len` items for scoring, the target and negative-sampling distributions, and start the
    item table (`table`, default `net.item`) from pretrained vectors when given."""
    net.init_user_sequences(train, config.max_len)
    net.register_buffer("target_probs", target_distribution(train), persistent=False)
    net.register_buffer("neg_probs", sampling_probs(train, config.sample_alpha), persistent=False)
    if item_vectors is not None:
        init_embedding_from_vectors(net.item if table is None else table, item_vectors, freeze=config.freeze_item_vectors)
