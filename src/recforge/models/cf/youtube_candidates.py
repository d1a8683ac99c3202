"""`youtube_candidates`: YouTube's candidate-generation network (Covington, Adams & Sargin 2016,
"Deep Neural Networks for YouTube Recommendations", §3).

Extreme multiclass classification of the next watch: a user tower maps the average of the
embedded items of the user's watch history (the most recent `max_history` items strictly before
the training example's time) and the example age (end of training minus the example's time,
normalised to [0, 1]; 0 at serving) through a ReLU tower to u (D,); the logit of item j is
u · v_j + b_j with separate output embeddings V (n_items, D). Trained with a sampled softmax with
the logQ correction (Yi et al. 2019, "Sampling-bias-corrected neural modeling for large corpus
item recommendations"): `negatives: in_batch` uses the batch's other targets (drawn ∝ training
frequency), `sampled` draws `n_negatives` items per batch ∝ frequency^alpha. Serving is u · V over
all items, so `user_vectors` and `item_embeddings` allow nearest-neighbour retrieval.

Not implemented: the paper's search-token and demographic inputs (§3.3): the family interface
hands a CF family neither the items' text alongside vector tables nor the users table.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from recforge.models.base import Family, ModelConfig, RecommenderNetwork
from recforge.models.layers import init_embedding_from_vectors, lookup
from recforge.training.losses import sampled_softmax
from recforge.training.samplers import popularity_log_probs, shuffled_batches

# A masked candidate's logit: finite, so a row whose candidates are all masked stays finite.
MASKED = -1e4
PAD = -1


class YouTubeCandidatesConfig(ModelConfig):
    dim: int = Field(64, gt=0)  # D of u and V
    embedding_dim: int = Field(64, gt=0)  # the watch-history embeddings
    layers: tuple[int, ...] = (128, 64)  # ReLU tower widths before the linear map to D
    max_history: int = Field(50, gt=0)
    negatives: Literal["in_batch", "sampled"] = "in_batch"
    n_negatives: int = Field(256, gt=0)  # sampled negatives per batch
    alpha: float = Field(0.75, ge=0)  # sampled negatives ∝ frequency^alpha
    logq: bool = True
    example_age: bool = True
    item_bias: bool = True
    freeze_item_vectors: bool = False


def sorted_sequences(train) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The training rows ordered by (user, timestamp, row): (order (N,), sorted items (N,),
    sorted timestamps (N,), the start of each row's user run (N,))."""
    order = np.lexsort((np.arange(len(train)), train.timestamp, train.user_idx))  # (N,)
    users = train.user_idx[order]
    first = np.r_[True, users[1:] != users[:-1]]  # (N,)
    start = np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))  # (N,)
    return order, train.item_idx[order], train.timestamp[order], start


def history_windows(
    positions: torch.Tensor, items: torch.Tensor, times: torch.Tensor, start: torch.Tensor, length: int
) -> torch.Tensor:
    """(B,) positions in the sorted sequences -> (B, L) the user's most recent items strictly
    before each position's time (PAD elsewhere): the target and later items never leak in."""
    idx = positions[:, None] - length + torch.arange(length)  # (B, L)
    ok = idx >= start[positions][:, None]
    safe = idx.clamp_min(0)
    ok &= times[safe] < times[positions][:, None]  # ties with the target's time are not "before"
    return torch.where(ok, items[safe], torch.full_like(safe, PAD))  # (B, L)


def last_items(train, length: int) -> torch.Tensor:
    """(n_users, L) each user's `length` most recent training items (PAD where fewer)."""
    order, items, _, start = sorted_sequences(train)
    n = len(items)
    users = train.user_idx[order]
    end = np.zeros(train.n_users, dtype=np.int64)
    np.maximum.at(end, users, np.arange(1, n + 1))  # one past each user's last row
    first = np.full(train.n_users, np.iinfo(np.int64).max)
    np.minimum.at(first, users, start)
    idx = end[:, None] - length + np.arange(length)  # (U, L)
    ok = (idx >= first[:, None]) & (end[:, None] > 0)
    out = np.where(ok, items[np.clip(idx, 0, max(n - 1, 0))] if n else PAD, PAD)
    return torch.as_tensor(out, dtype=torch.int64)


class YouTubeCandidates(RecommenderNetwork):
    def __init__(self, n_users: int, n_items: int, config: YouTubeCandidatesConfig) -> None:
        super().__init__()
        self.n_users, self.n_items = n_users, n_items
        self.use_age = config.example_age
        self.watch = nn.Embedding(n_items, config.embedding_dim)
        self.item = nn.Embedding(n_items, config.dim)  # V, the softmax weights
        self.item_bias = nn.Parameter(torch.zeros(n_items), requires_grad=config.item_bias)
        nn.init.normal_(self.watch.weight, std=0.1)
        nn.init.normal_(self.item.weight, std=0.1)
        tower: list[nn.Module] = []
        width = config.embedding_dim + int(config.example_age)
        for w in config.layers:
            tower += [nn.Linear(width, w), nn.ReLU()]
            width = w
        # a linear last layer: a ReLU there would zero whole directions of u for some users
        tower.append(nn.Linear(width, config.dim))
        self.tower = nn.Sequential(*tower)
        # each user's most recent training items, the serving history (saved with the state)
        self.register_buffer("history", torch.full((n_users, config.max_history), PAD, dtype=torch.int64))

    def encode(self, items: torch.Tensor, age: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) history items (PAD = -1), (B,) example age -> (B, D) user vectors."""
        ok = (items >= 0).unsqueeze(-1).float()  # (B, L, 1)
        e = lookup(self.watch, items.clamp_min(0)) * ok  # (B, L, E)
        mean = e.sum(1) / ok.sum(1).clamp_min(1.0)  # (B, E)
        if self.use_age:
            a = torch.zeros(len(items), device=items.device) if age is None else age
            mean = torch.cat([mean, a.to(mean.dtype).unsqueeze(-1)], dim=-1)  # (B, E + 1)
        return self.tower(mean)  # (B, D)

    def user_vectors(self, user: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) -> (B, D): u from each user's last `max_history` training items at example age 0,
        for nearest-neighbour retrieval among `item_embeddings()` (scores add `item_bias`).
        `history` (dense rows) is ignored: the ordered history is kept in the network."""
        return self.encode(self.history[user])

    def logits(self, u: torch.Tensor) -> torch.Tensor:
        return u @ self.item.weight.T + self.item_bias  # (B, I)

    def forward(self, user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        u = self.user_vectors(user)  # (B, D)
        return (u * self.item(item)).sum(-1) + self.item_bias[item]  # (B,)

    def score_all(self, user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return self.logits(self.user_vectors(user))  # (B, I)

    def cold_user_vectors(self, history: torch.Tensor) -> torch.Tensor:
        """(B, n_items) fold-in histories -> (B, D): the mean over every item of the history
        (a dense row carries no order to pick the most recent)."""
        w = (history > 0).float()  # (B, I)
        mean = w @ self.watch.weight / w.sum(1, keepdim=True).clamp_min(1.0)  # (B, E)
        if self.use_age:
            mean = torch.cat([mean, torch.zeros_like(mean[:, :1])], dim=-1)
        return self.tower(mean)

    def score_cold_users(self, history: torch.Tensor) -> torch.Tensor:
        return self.logits(self.cold_user_vectors(history))  # (B, I)

    def item_embeddings(self) -> torch.Tensor:
        return self.item.weight

    def retrieval_items(self) -> torch.Tensor:
        return torch.cat([self.item.weight, self.item_bias[:, None]], dim=1)  # (I, D + 1)

    def retrieval_users(self, user: torch.Tensor) -> torch.Tensor:
        u = self.user_vectors(user)
        return torch.cat([u, torch.ones_like(u[:, :1])], dim=1)  # (B, D + 1)


def build(config: YouTubeCandidatesConfig, train, item_vectors=None) -> YouTubeCandidates:
    net = YouTubeCandidates(train.n_users, train.n_items, config)
    net.history.copy_(last_items(train, config.max_history))
    if item_vectors is not None:
        init_embedding_from_vectors(net.watch, item_vectors, freeze=config.freeze_item_vectors)
        init_embedding_from_vectors(net.item, item_vectors, freeze=config.freeze_item_vectors)
    return net


def batches(network, train, config, batch_size, generator):
    """Shuffled training examples: each row's target, its history strictly before its time and
    its example age; for `negatives: sampled`, `n_negatives` items per batch ∝ frequency^alpha."""
    order, items, times, start = sorted_sequences(train)
    items_t, times_t = torch.as_tensor(items), torch.as_tensor(times)
    start_t = torch.as_tensor(start)
    end, span = times.max(initial=0), max(int(np.ptp(times)) if len(times) else 0, 1)
    age = torch.as_tensor((end - times) / span, dtype=torch.float32)  # (N,) in [0, 1]
    pop = np.maximum(train.item_popularity, 0.0)
    target_log_q = popularity_log_probs(pop, 1.0)  # (I,) in-batch candidates ∝ frequency
    if config.negatives == "sampled":
        neg_log_q = popularity_log_probs(pop, config.alpha)
        neg_probs = neg_log_q.exp()
    for pos in shuffled_batches(len(order), batch_size, generator):  # (B,)
        batch = {
            "history": history_windows(pos, items_t, times_t, start_t, config.max_history),
            "item": items_t[pos], "age": age[pos], "log_q": target_log_q[items_t[pos]],
        }
        if config.negatives == "sampled":
            neg = torch.multinomial(neg_probs, config.n_negatives, replacement=True, generator=generator)
            # log of the expected count among the N draws
            batch["negative"], batch["negative_log_q"] = neg, neg_log_q[neg] + np.log(config.n_negatives)
            batch["positive_log_q"] = neg_log_q[items_t[pos]] + np.log(config.n_negatives)
        yield batch


def in_batch_softmax(u: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, item: torch.Tensor,
                     log_q: torch.Tensor | None) -> torch.Tensor:
    """Softmax of each example's target against the batch's targets (Yi et al. 2019, eq. 3):
    logit s_ij = u_i · v_j + b_j − log q_j, label j = i; another row with the same target item is
    masked, since it is the positive, not a negative. (B, D), (B, D), (B,), (B,), (B,) -> scalar."""
    s = (u @ v.T + bias).float()  # (B, B)
    if log_q is not None:
        s = s - log_q.float()
    same = (item[:, None] == item[None, :]) & ~torch.eye(len(item), dtype=torch.bool, device=item.device)
    s = s.masked_fill(same, MASKED)
    return (torch.logsumexp(s, dim=1) - s.diagonal()).mean()


def loss(network: YouTubeCandidates, batch, config: YouTubeCandidatesConfig) -> torch.Tensor:
    u = network.encode(batch["history"], batch["age"])  # (B, D)
    item = batch["item"]
    v, b = lookup(network.item, item), network.item_bias[item]  # (B, D), (B,)
    if config.negatives == "in_batch":
        return in_batch_softmax(u, v, b, item, batch["log_q"] if config.logq else None)
    neg = batch["negative"]  # (N,)
    s_neg = u @ lookup(network.item, neg).T + network.item_bias[neg]  # (B, N)
    s_neg = s_neg.masked_fill(neg[None, :] == item[:, None], MASKED)
    pos = (u * v).sum(-1) + b  # (B,)
    if not config.logq:
        return sampled_softmax(pos, s_neg)
    # the positive is corrected like the candidates it competes with (Jean et al. 2015)
    return sampled_softmax(pos, s_neg, batch["positive_log_q"], batch["negative_log_q"])


FAMILY = Family(
    name="youtube_candidates", config=YouTubeCandidatesConfig, build=build, batches=batches, loss=loss,
    paper="Covington, Adams & Sargin 2016",
)
