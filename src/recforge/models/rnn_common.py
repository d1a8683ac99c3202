"""What the recurrent session families share: step layouts, a GRU cell, the item head, the objectives.

Training data is laid out as *steps*: step j feeds item `item[j]` and predicts `target[j]`. Steps
come in *runs* (a session, or a piece of at most `max_len` steps of a longer sequence) at whose
first step the recurrent state restarts, and runs come in *units*, the blocks placed side by side
in the slots of a session-parallel mini-batch (Hidasi et al. 2016): a run for GRU4Rec, all of a
user's sessions for HRNN. Everything here is numpy or torch over whole arrays; the only Python
loops are over time steps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from recforge.data.interactions import InteractionData
from recforge.data.schema import EVENTS
from recforge.data.sequences import PAD, Sequences, build_sequences
from recforge.models.base import ModelConfig
from recforge.models.layers import init_embedding_from_vectors
from recforge.training.losses import bpr, bpr_max, sampled_softmax, softmax_cross_entropy, top1, top1_max
from recforge.training.samplers import popularity_log_probs

Loss = Literal["cross_entropy", "sampled_softmax", "bpr", "top1", "bpr_max", "top1_max"]

# A masked-out candidate scores this: the pairwise losses then give it no gradient, the softmax
# losses no weight (exp(-1e4) is 0 in float32), and unlike -inf it never turns 0 * inf into NaN.
MASKED = -1e4
UNKNOWN_EVENT = len(EVENTS)  # the event code of a step whose event type is not known


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


# ------------------------------------------------------------------------------------ sequences
def training_sequences(
    train: InteractionData, by: Literal["auto", "session", "user"], session_gap_s: int | None = None
) -> Sequences:
    """`train` as ordered sequences, ordered by user and then by start time.

    `auto` uses sessions when the split has them, else users. With `by="session"` and no session
    column, sessions are cut where a user is inactive for more than `session_gap_s` seconds.
    """
    if by == "auto":
        by = "session" if train.session is not None else "user"
    if by == "session" and train.session is None:
        if session_gap_s is None:
            by = "user"
        else:
            train = dataclasses.replace(train, session=gap_sessions(train, session_gap_s))
    seqs = build_sequences(train, by=by)
    if by == "user" or len(seqs) == 0:
        return seqs
    order = np.lexsort((seqs.timestamps[seqs.offsets[:-1]], seqs.users))  # user, then start time
    return reorder(seqs, order)


def gap_sessions(data: InteractionData, gap_s: int) -> np.ndarray:
    """(N,) session index: a user's session ends after `gap_s` seconds without an event."""
    order = np.lexsort((np.arange(len(data)), data.timestamp, data.user_idx))
    u, t = data.user_idx[order], data.timestamp[order]
    new = np.r_[True, (u[1:] != u[:-1]) | (np.diff(t) > gap_s)] if len(u) else np.zeros(0, bool)
    session = np.empty(len(data), dtype=np.int64)
    session[order] = np.cumsum(new) - 1
    return session


def reorder(seqs: Sequences, order: np.ndarray) -> Sequences:
    """The same sequences in the order `order` (a permutation of their indices)."""
    lengths = seqs.lengths[order]
    rows = ranges(seqs.offsets[:-1][order], lengths)
    return Sequences(
        offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64),
        items=seqs.items[rows],
        users=seqs.users[order],
        timestamps=seqs.timestamps[rows],
        events=None if seqs.events is None else seqs.events[rows],
        n_items=seqs.n_items,
    )


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated aranges: starts[k], …, starts[k] + lengths[k] - 1 for every k."""
    total = int(lengths.sum())
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + np.arange(total) - offsets


def event_codes(seqs: Sequences) -> np.ndarray:
    """(N,) int64 event codes of `seqs`; a missing type (or data without events) is unknown."""
    if seqs.events is None:
        return np.full(len(seqs.items), UNKNOWN_EVENT, dtype=np.int64)
    codes = seqs.events.astype(np.int64)
    return np.where(codes < 0, UNKNOWN_EVENT, codes)


def gap_buckets(timestamps: np.ndarray, first: np.ndarray, session_gap_s: int) -> np.ndarray:
    """Log2-bucketed seconds since the previous event: 0 at a sequence's first event or after more
    than `session_gap_s` seconds (a new session), else 1 + floor(log2(1 + gap))."""
    gap = np.diff(timestamps, prepend=timestamps[:1]).clip(min=0)
    bucket = 1 + np.floor(np.log2(1.0 + gap)).astype(np.int64)
    return np.where(first | (gap > session_gap_s), 0, bucket)


def n_gap_buckets(session_gap_s: int) -> int:
    """Buckets `gap_buckets` can return, plus one for an unknown gap (the last index)."""
    return 2 + int(math.floor(math.log2(1.0 + session_gap_s))) + 1


def user_tails(seqs: Sequences, values: np.ndarray, n_users: int, max_len: int, fill: int) -> torch.Tensor:
    """(n_users, max_len) the last `max_len` `values` (N,) of each user's sequence in `seqs`
    (by user), right-aligned like `SequenceNetwork.user_sequence`; `fill` elsewhere."""
    out = np.full((n_users, max_len), fill, dtype=np.int64)
    if len(seqs):
        lengths = seqs.lengths
        seq_of = np.repeat(np.arange(len(seqs)), lengths)
        from_end = seqs.offsets[1:][seq_of] - np.arange(len(seqs.items))  # 1 for the last
        keep = from_end <= max_len
        out[seqs.users[seq_of[keep]], max_len - from_end[keep]] = values[keep]
    return torch.from_numpy(out)


# ------------------------------------------------------------------------------------ steps
@dataclasses.dataclass(frozen=True)
class Steps:
    """Training steps, flat. `start` marks the first step of each run and `unit` (U+1,) the
    offsets of the units; every unit begins with a run."""

    item: np.ndarray  # (S,) input item
    target: np.ndarray  # (S,) next item, PAD on an input-only step
    start: np.ndarray  # (S,) bool
    unit: np.ndarray  # (U+1,)
    user: np.ndarray  # (S,) user of the step
    event: np.ndarray  # (S,) input event code
    gap: np.ndarray  # (S,) input gap bucket
    next_event: np.ndarray  # (S,) event code of the target (UNKNOWN_EVENT when there is none)

    def __len__(self) -> int:
        return len(self.item)

    @property
    def unit_start(self) -> np.ndarray:
        """(S,) bool: the first step of each unit."""
        out = np.zeros(len(self.item), dtype=bool)
        out[self.unit[:-1]] = True
        return out


def sequence_steps(
    seqs: Sequences,
    max_len: int,
    *,
    last_as_input: bool = False,
    units: Literal["run", "user"] = "run",
    session_gap_s: int = 1800,
) -> Steps:
    """Steps of `seqs`: position t of a sequence feeds item t and predicts item t + 1.

    Sequences longer than `max_len` steps are cut into runs of `max_len` (truncated history, the
    same the networks see when scoring). `last_as_input` also feeds each sequence's last item
    (with no target), so the final state has read the whole sequence (HRNN's session summary).
    `units="user"` groups all runs of a user (consecutive in `seqs`) into one unit.
    """
    lengths = seqs.lengths
    seq_of = np.repeat(np.arange(len(seqs)), lengths)  # (N,)
    pos = np.arange(len(seqs.items)) - seqs.offsets[seq_of]  # (N,) position in its sequence
    has_next = pos < lengths[seq_of] - 1
    keep = np.flatnonzero(has_next | last_as_input)
    nxt = np.minimum(keep + 1, len(seqs.items) - 1)
    events = event_codes(seqs)
    gaps = gap_buckets(seqs.timestamps, pos == 0, session_gap_s)
    start = (pos[keep] % max_len) == 0
    user = seqs.users[seq_of[keep]]
    if units == "run":
        unit_start = start
    else:
        unit_start = start & np.r_[True, user[1:] != user[:-1]]
    return Steps(
        item=seqs.items[keep],
        target=np.where(has_next[keep], seqs.items[nxt], PAD),
        start=start,
        unit=np.r_[np.flatnonzero(unit_start), len(keep)].astype(np.int64),
        user=user,
        event=events[keep],
        gap=gaps[keep],
        next_event=np.where(has_next[keep], events[nxt], UNKNOWN_EVENT),
    )


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each step sits in a (T, slots) grid: steps of a unit fill one slot's consecutive
    times; a new unit takes the slot where the previous one ended."""

    step: np.ndarray  # (S',) index into Steps, in placement order
    time: np.ndarray  # (S',)
    slot: np.ndarray  # (S',)
    length: int  # T
    slots: int

    def grid(self, values: np.ndarray, fill) -> np.ndarray:
        """(T, slots) array of `values[step]` at each placed step, `fill` elsewhere."""
        out = np.full((self.length, self.slots), fill, dtype=np.asarray(values).dtype)
        out[self.time, self.slot] = values[self.step]
        return out


def parallel_layout(unit: np.ndarray, n_slots: int, keys: np.ndarray | None = None) -> Layout:
    """Lay the units out over `n_slots` parallel slots (session-parallel mini-batches).

    A slot plays its units back to back, as when a finished session hands its slot to the next
    one. The `n_slots` longest units open one slot each; the rest, in `keys` order, are poured
    into the room each slot has left below max(mean load, longest unit), so slots end within
    one unit of each other however skewed the lengths (a heavy user is a long unit). `keys`
    (U,) also order the units within a slot: random keys give a random schedule, None keeps
    the units' own order.
    """
    lengths = np.diff(unit)
    n_units = len(lengths)
    keys = np.arange(n_units) if keys is None else keys
    n_slots = max(1, min(n_slots, n_units))
    by_length = np.lexsort((keys, -lengths))
    head, rest = by_length[:n_slots], by_length[n_slots:]
    rest = rest[np.argsort(keys[rest], kind="stable")]
    capacity = max(math.ceil(lengths.sum() / n_slots), int(lengths.max(initial=0)))
    room_end = np.cumsum(capacity - lengths[head])  # (B,) the slots' rooms laid end to end
    rest_begin = np.cumsum(lengths[rest]) - lengths[rest]
    slot = np.empty(n_units, dtype=np.int64)
    slot[head] = np.arange(n_slots)
    slot[rest] = np.minimum(np.searchsorted(room_end, rest_begin, side="right"), n_slots - 1)
    order = np.lexsort((keys, slot))  # by slot, then by key within the slot
    lengths, slot = lengths[order], slot[order]
    begin = np.cumsum(lengths) - lengths  # (U,) in the concatenation of all slots
    first = np.searchsorted(slot, slot, side="left")  # first unit of the same slot
    offset = begin - begin[first]  # (U,) time at which the unit starts in its slot
    total = int(lengths.sum())
    time = np.repeat(offset, lengths) + np.arange(total) - np.repeat(begin, lengths)
    return Layout(
        step=ranges(unit[:-1][order], lengths),
        time=time,
        slot=np.repeat(slot, lengths),
        length=int(time.max()) + 1 if total else 0,
        slots=n_slots,
    )


def cut_units(steps: Steps, cap: int) -> Steps:
    """Cut units longer than `cap` steps, at run starts, into pieces of about `cap` steps.

    An epoch of parallel slots lasts as long as its longest unit, so one heavy user would keep
    the other slots idle; cut, each piece starts as a unit of its own (for HRNN: from an empty
    user state — a truncation of the user-level history in training only)."""
    lengths = np.diff(steps.unit)
    if len(lengths) == 0 or lengths.max() <= cap:
        return steps
    run = np.flatnonzero(steps.start)  # (R,) first step of each run
    unit_of = np.searchsorted(steps.unit, run, side="right") - 1
    piece = (run - steps.unit[unit_of]) // cap
    new = np.r_[True, (unit_of[1:] != unit_of[:-1]) | (piece[1:] != piece[:-1])]
    return dataclasses.replace(steps, unit=np.r_[run[new], len(steps)].astype(np.int64))


def row_layout(unit: np.ndarray) -> Layout:
    """Each unit in a slot of its own, from time 0 (slot u holds unit u)."""
    lengths = np.diff(unit)
    total = int(lengths.sum())
    return Layout(
        step=np.arange(total),
        time=np.arange(total) - np.repeat(unit[:-1], lengths),
        slot=np.repeat(np.arange(len(lengths)), lengths),
        length=int(lengths.max(initial=0)),
        slots=len(lengths),
    )


def draw_negatives(probs: torch.Tensor, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Items drawn with replacement from `probs` (n_items,), in `shape`."""
    n = math.prod(shape)
    if n == 0:
        return torch.zeros(shape, dtype=torch.long)
    return torch.multinomial(probs, n, replacement=True, generator=generator).view(shape)


def sampling_probs(train: InteractionData, alpha: float) -> torch.Tensor:
    """(n_items,) the popularity^alpha distribution extra negatives are drawn from."""
    return popularity_log_probs(np.maximum(train.item_popularity, 0.0), alpha).exp()


def parallel_batches(
    steps: Steps,
    batch_size: int,
    bptt: int,
    generator: torch.Generator,
    *,
    n_negatives: int = 0,
    neg_probs: torch.Tensor | None = None,
    shuffle: bool = True,
    fields: tuple[str, ...] = (),
) -> Iterator[dict[str, torch.Tensor]]:
    """One epoch of session-parallel mini-batches, `bptt` steps of `batch_size // bptt` slots each
    (units longer than an even share of the epoch are cut first, see `cut_units`).

    Each batch holds (C, B) time-major tensors `item`, `target` (PAD where there is nothing to
    predict), `start` (the state restarts before this step) and the requested `fields` of
    `Steps`; `negatives` (C, N) popularity-drawn items per step; and first, so the fit loop counts
    events, `rows` (E,): the flat indices (t * B + b) of the steps that have a target.
    """
    n_slots = max(1, batch_size // bptt)
    steps = cut_units(steps, math.ceil(len(steps) / n_slots))
    n_units = len(steps.unit) - 1
    if n_units == 0:
        return
    keys = torch.randperm(n_units, generator=generator).numpy() if shuffle else None
    layout = parallel_layout(steps.unit, n_slots, keys)
    grids = {
        "item": layout.grid(steps.item, 0),
        "target": layout.grid(steps.target, PAD),
        "start": layout.grid(steps.start, True),
    }
    for name in fields:
        grids[name] = layout.grid(getattr(steps, name), 0 if name != "next_event" else UNKNOWN_EVENT)
    tensors = {k: torch.from_numpy(v) for k, v in grids.items()}
    for t0 in range(0, layout.length, bptt):
        chunk = {k: v[t0 : t0 + bptt] for k, v in tensors.items()}  # (C, B) each
        # a chunk with nothing to predict still runs: the states must advance through it
        rows = torch.nonzero(chunk["target"].reshape(-1) >= 0).squeeze(1)  # (E,)
        batch = {"rows": rows, **chunk}
        if n_negatives and neg_probs is not None:
            batch["negatives"] = draw_negatives(neg_probs, (chunk["item"].shape[0], n_negatives), generator)
        yield batch


def window_batches(
    steps: Steps,
    batch_size: int,
    generator: torch.Generator,
    *,
    n_negatives: int = 0,
    neg_probs: torch.Tensor | None = None,
) -> Iterator[dict[str, torch.Tensor]]:
    """One epoch of whole runs as rows: (B, L) left-aligned `item` and `target` (PAD-padded),
    about `batch_size` targets per batch; `rows` (E,) as in `parallel_batches`, `negatives`
    (1, N) shared by the batch. Runs of similar length share a batch (ties and the order of
    the batches are random), so little of a batch is padding."""
    n_runs = len(steps.unit) - 1
    if n_runs == 0:
        return
    layout = row_layout(steps.unit)
    items = torch.from_numpy(layout.grid(steps.item, 0).T.copy())  # (R, L)
    targets = torch.from_numpy(layout.grid(steps.target, PAD).T.copy())
    lengths = np.diff(steps.unit)
    order = np.lexsort((torch.rand(n_runs, generator=generator).numpy(), lengths))
    cum = np.cumsum(lengths[order])
    bounds = np.r_[0, np.flatnonzero(np.diff(cum // batch_size) > 0) + 1, n_runs]
    for b in torch.randperm(len(bounds) - 1, generator=generator).tolist():
        lo, hi = bounds[b], bounds[b + 1]
        idx = torch.from_numpy(order[lo:hi])
        width = int(lengths[order[lo:hi]].max())
        target = targets[idx, :width]  # (B, L)
        batch = {
            "rows": torch.nonzero(target.reshape(-1) >= 0).squeeze(1),
            "item": items[idx, :width],
            "target": target,
        }
        if n_negatives and neg_probs is not None:
            batch["negatives"] = draw_negatives(neg_probs, (1, n_negatives), generator)
        yield batch


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
