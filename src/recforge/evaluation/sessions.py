"""Session protocols: next-item prediction in held-out sessions, and user sequences.

Session protocols (test sessions are new: a prefix is the earlier items of the same session):
- `next_item`: every position t >= 1 of every test session; items < t predict item t (Hidasi et
  al. 2016, "Session-based Recommendations with Recurrent Neural Networks", GRU4Rec's protocol);
- `last_item`: only each session's last item.
Recall@K (= HR@K: one target) and MRR@K ranked over all items. Items already in the prefix are not
masked: repeat clicks are part of session data. The target's rank counts the other items scoring
>= it, so ties count against it and a constant scorer gets nothing (as in `sampled_ranking`).

Items unknown to train (item_idx -1) never crash a run: an unknown target is left out of the
denominators and counted (`n_unknown_targets`); unknown items are dropped from prefixes
(`n_unknown_events` counts them); a target whose prefix keeps no known item at all is left out
and counted (`n_empty_prefix`).

User sequences (`user_sequences`): each known test user's last `max_len` training items are the
prefix; full ranking with training items masked (`protocols.full_ranking`) next to N sampled
negatives (`protocols.sampled_ranking`; 100 as in SASRec/BERT4Rec) — the two often disagree
(Krichene & Rendle 2020). With a `leave_last_out` split this is the usual leave-last-out protocol.

Everything is batched through one prefix scorer `(B, L) -> (B, n_items)`: `score_sequence` of a
`SequenceNetwork`, or item popularity for `popularity`, so it sits on the same board as a
baseline. Other families are skipped (`prefix_scorer` returns None).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd
import torch

from recforge.data.errors import DataError
from recforge.data.interactions import InteractionData
from recforge.data.sequences import PAD, build_sequences
from recforge.evaluation.metrics import mean_over, single_target_metrics
from recforge.evaluation.protocols import full_ranking, sampled_ranking
from recforge.models.cf.popularity import Popularity
from recforge.models.sequence.sequence import SequenceNetwork

logger = logging.getLogger(__name__)

PrefixScoreFn = Callable[[torch.Tensor], torch.Tensor]  # (B, L) item_idx, PAD-left-padded -> (B, I)
SESSION_PROTOCOLS = ("next_item", "last_item")
DEFAULT_MAX_LEN = 50


def prefix_scorer(model: Any) -> PrefixScoreFn | None:
    """The `(B, L) -> (B, I)` scorer of a fitted `Recommender` or bare network, or None when the
    family cannot score from a prefix."""
    net = getattr(model, "network", model)
    if isinstance(net, SequenceNetwork):
        return net.score_sequence
    if isinstance(net, Popularity):
        # Popularity ignores the prefix: the baseline every session model must beat.
        return lambda items: net.log_count.expand(items.shape[0], -1)
    return None


def _device(model: Any) -> torch.device:
    net = getattr(model, "network", model)
    for t in list(net.parameters()) + list(net.buffers()):
        return t.device
    return torch.device("cpu")


# ------------------------------------------------------------------------- session examples
def session_examples(
    test_frame: pd.DataFrame, max_len: int, positions: str = "all"
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(prefixes (E, max_len) right-aligned with PAD, targets (E,), counts) from a test split frame.

    Sessions are `session_id` groups (`user_id` when the frame has no sessions) in stable time
    order. Unknown items (-1) are dropped from prefixes; examples with an unknown target or no
    known prefix item are left out and counted.
    """
    if positions not in ("all", "last"):
        raise ValueError(f"positions must be 'all' or 'last', got {positions!r}")
    has_sessions = "session_id" in test_frame.columns and test_frame["session_id"].notna().any()
    key_col = "session_id" if has_sessions else "user_id"
    if key_col not in test_frame.columns:
        raise DataError(f"the test frame has neither session_id nor user_id; found {list(test_frame.columns)}",
                        source="test", column="session_id")  # fmt: skip
    key = pd.factorize(test_frame[key_col].astype("string").fillna("__none__"))[0]
    ts = test_frame["timestamp"].to_numpy()
    order = np.lexsort((np.arange(len(key)), ts, key))  # session, time, row
    items = test_frame["item_idx"].to_numpy(dtype=np.int64)[order]  # (N,)
    k = key[order]
    n = len(items)
    new = np.r_[True, k[1:] != k[:-1]] if n else np.zeros(0, dtype=bool)
    start = np.flatnonzero(new)  # (S,)
    seq_of = np.cumsum(new) - 1  # (N,)
    pos = np.arange(n) - start[seq_of]  # (N,) position in the session
    end = np.r_[start[1:], n] - 1  # (S,) last position
    known = items >= 0
    compact = items[known]  # known items, in session/time order
    ck = np.r_[0, np.cumsum(known)]  # (N+1,) known items before each flat position
    n_before = ck[:n] - ck[start[seq_of]]  # (N,) known items earlier in the same session

    is_target = pos >= 1
    if positions == "last":
        is_target &= np.arange(n) == end[seq_of]
    unknown_target = is_target & ~known
    empty = is_target & known & (n_before == 0)
    tgt = np.flatnonzero(is_target & known & (n_before > 0))  # (E,)
    window = ck[tgt][:, None] - max_len + np.arange(max_len)[None, :]  # (E, L) indices into compact
    valid = window >= ck[start[seq_of[tgt]]][:, None]
    prefixes = np.where(valid, compact[np.clip(window, 0, None)], PAD)
    counts = {
        "n_sessions": int(len(start)),
        "n_targets": int(len(tgt)),
        "n_unknown_targets": int(unknown_target.sum()),
        "n_empty_prefix": int(empty.sum()),
        "n_unknown_events": int((~known).sum()),
    }
    return prefixes.astype(np.int64), items[tgt], counts


def target_ranks(
    scorer: PrefixScoreFn,
    prefixes: np.ndarray,
    targets: np.ndarray,
    *,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """(E,) 0-based rank of each target among all items: other items scoring >= it."""
    ranks = np.empty(len(targets), dtype=np.int64)
    with torch.no_grad():
        for s in range(0, len(targets), batch_size):
            p = torch.from_numpy(prefixes[s : s + batch_size]).to(device)  # (B, L)
            t = torch.from_numpy(targets[s : s + batch_size]).to(device)  # (B,)
            scores = torch.nan_to_num(scorer(p).float(), nan=-torch.inf)  # (B, I)
            own = scores.gather(1, t[:, None])  # (B, 1)
            ranks[s : s + len(t)] = ((scores >= own).sum(dim=1) - 1).cpu().numpy()
    return ranks


def _session_metrics(ranks: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    per = single_target_metrics(ranks, ks)
    out = {f"recall@{k}": per[f"hr@{k}"] for k in ks} | {f"mrr@{k}": per[f"mrr@{k}"] for k in ks}
    summary = mean_over(out, np.ones(len(ranks), dtype=bool))
    summary.pop("n_users")
    return summary


# ---------------------------------------------------------------------------- user sequences
def user_prefixes(train: InteractionData, max_len: int, users: np.ndarray) -> np.ndarray:
    """(len(users), max_len): each user's last `max_len` training items, right-aligned with PAD."""
    users = np.asarray(users, dtype=np.int64)
    out = np.full((len(users), max_len), PAD, dtype=np.int64)
    rows = np.isin(train.user_idx, users)
    if not rows.any():
        return out
    mine = InteractionData(
        train.user_idx[rows], train.item_idx[rows], train.value[rows], train.timestamp[rows], train.n_users,
        train.n_items,
    )  # fmt: skip
    seqs = build_sequences(mine, by="user", max_length=max_len)
    seq_of = seqs.sequence_of(seqs.items)
    col = max_len - seqs.lengths[seq_of] + (np.arange(len(seqs.items)) - seqs.offsets[seq_of])
    out[np.searchsorted(users, seqs.users[seq_of]), col] = seqs.items
    return out


def evaluate_user_sequences(
    scorer: PrefixScoreFn,
    train: InteractionData,
    test: InteractionData,
    max_len: int,
    ks: Iterable[int] = (5, 10, 20),
    *,
    n_negatives: int = 100,
    seed: int = 0,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Full ranking (training items masked) and sampled ranking with `n_negatives`, side by side."""
    ks = tuple(int(k) for k in ks)
    users = np.unique(test.user_idx)  # only test users need a prefix: train may hold millions
    prefix = torch.from_numpy(user_prefixes(train, max_len, users)).to(device)  # (U_test, L)
    row_of = torch.full((train.n_users,), -1, dtype=torch.long, device=device)
    row_of[torch.from_numpy(users).to(device)] = torch.arange(len(users), device=device)

    def score_fn(user: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        return scorer(prefix[row_of[user.to(device)]])  # (B, I)

    def pair_fn(user: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        uniq, inverse = torch.unique(user.to(device), return_inverse=True)  # score each user's prefix once
        return scorer(prefix[row_of[uniq]])[inverse, item.to(device)]

    out: dict[str, Any] = {"full": full_ranking(score_fn, train.csr, test, ks, batch_size=batch_size, device=device)}
    try:
        out["sampled"] = sampled_ranking(
            pair_fn, train.csr, test, n_negatives=n_negatives, seed=seed, ks=ks, batch_size=batch_size,
            device=device,
        )  # fmt: skip
    except DataError as exc:
        # A catalogue smaller than the negatives asked for: report why instead of failing the run.
        logger.warning("sampled ranking skipped: %s", exc)
        out["sampled"] = {"skipped": str(exc)}
    return out


# ----------------------------------------------------------------------------- entry points
def evaluate_sessions(
    network: Any,
    train: InteractionData,
    test_frame: pd.DataFrame,
    max_len: int | None = None,
    ks: Iterable[int] = (5, 10, 20),
    *,
    n_negatives: int = 100,
    seed: int = 0,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Session and user-sequence protocols for one fitted model (a `Recommender` or a network).

    `test_frame` is a split table (`item_idx`, `user_idx`, `timestamp`, `session_id`; -1 for ids
    unknown to train). `max_len` defaults to the network's own, else 50. Families that cannot score
    a prefix get `{"skipped": reason}`. The session protocols run when the frame has sessions; the
    user-sequence protocols when some test rows have a known user and item.
    """
    scorer = prefix_scorer(network)
    if scorer is None:
        name = type(getattr(network, "network", network)).__name__
        return {"skipped": f"{name} is not a SequenceNetwork: it cannot score a prefix"}
    ks = tuple(int(k) for k in ks)
    net = getattr(network, "network", network)
    max_len = int(max_len or getattr(net, "max_len", DEFAULT_MAX_LEN))
    device = _device(network) if device is None else torch.device(device)
    out: dict[str, Any] = {"max_len": max_len}

    if "session_id" in test_frame.columns and test_frame["session_id"].notna().any():
        for name, positions in zip(SESSION_PROTOCOLS, ("all", "last"), strict=True):
            prefixes, targets, counts = session_examples(test_frame, max_len, positions)
            ranks = target_ranks(scorer, prefixes, targets, batch_size=batch_size, device=device)
            out[name] = _session_metrics(ranks, ks) | counts
        nxt = out["next_item"]
        logger.info(
            "sessions: %d test sessions, %d next-item targets; %d unknown targets and %d targets with an "
            "empty prefix left out; %d unknown events dropped from prefixes", nxt["n_sessions"],
            nxt["n_targets"], nxt["n_unknown_targets"], nxt["n_empty_prefix"], nxt["n_unknown_events"],
        )  # fmt: skip

    test = InteractionData.from_frame(test_frame, train.n_users, train.n_items, name="test")
    if len(test):
        out["user_sequences"] = evaluate_user_sequences(
            scorer, train, test, max_len, ks, n_negatives=n_negatives, seed=seed, batch_size=batch_size,
            device=device,
        )  # fmt: skip
    return _json_safe(out)


def session_leaderboard(metrics: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per family that was evaluated: Recall/MRR@K of both session protocols, then the
    user-sequence full-ranking NDCG/HR and sampled HR/NDCG. Sorted by next-item MRR at the largest K
    (user-sequence full NDCG when there are no sessions). Skipped families are left out."""
    rows = []
    for family, m in metrics.items():
        if not m or "skipped" in m:
            continue
        row: dict[str, Any] = {"family": family}
        for proto in SESSION_PROTOCOLS:
            for name, v in m.get(proto, {}).items():
                if "@" in name:
                    row[f"{proto}_{name}"] = v
            if proto in m:
                row[f"{proto}_targets"] = m[proto].get("n_targets")
        user = m.get("user_sequences", {})
        for kind, names in (("full", ("ndcg", "hr")), ("sampled", ("hr", "ndcg"))):
            for name, v in user.get(kind, {}).items():
                if "@" in name and name.split("@")[0] in names:
                    row[f"user_{kind}_{name}"] = v
        rows.append(row)
    board = pd.DataFrame(rows)
    if board.empty:
        return pd.DataFrame({"family": pd.Series(dtype="string")})
    metric_cols = [c for c in board.columns if "@" in c]
    board[metric_cols] = board[metric_cols].astype("float64")
    # A protocol with no target anywhere (e.g. one-event test sessions) adds only empty columns.
    board = board.drop(columns=[c for c in metric_cols if board[c].isna().all()])
    key = _sort_key(board.columns)
    if key is not None:
        board = board.sort_values(key, ascending=False, na_position="last", kind="stable")
    return board.reset_index(drop=True)


def _sort_key(columns: Iterable[str]) -> str | None:
    columns = list(columns)
    for prefix in ("next_item_mrr@", "user_full_ndcg@"):
        found = [c for c in columns if c.startswith(prefix)]
        if found:
            return max(found, key=lambda c: int(c.split("@")[1]))
    return None


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python numbers, so the dict can be written as JSON."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
