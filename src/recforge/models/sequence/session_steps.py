"""How the recurrent session families lay out their training data: steps, runs, units and the
session-parallel mini-batches built from them.

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

from recforge.data.interactions import InteractionData
from recforge.data.schema import EVENTS
from recforge.data.sequences import PAD, Sequences, build_sequences
from recforge.training.samplers import popularity_log_probs

UNKNOWN_EVENT = len(EVENTS)  # the event code of a step whose event type is not known


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


def row_batches(
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
