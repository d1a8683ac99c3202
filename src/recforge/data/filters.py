"""Row filters and session preprocessing: the rows every split of the interactions draws from.

Everything here is a pure, vectorised function of the canonical interactions that decides which
rows survive, in their table order; `recforge.data.splits` then labels the survivors. Where time
matters, rows are taken in stable time order (`time_order`: by timestamp, ties by original
position), so two runs with the same config keep the same rows.

Filters (`filter_interactions`, in this order):
- `filter_events`: only the configured event types (`SplitConfig.events`; None keeps all);
- `dedupe_pairs` (with `SplitConfig.dedupe`): one row per (user, item) pair, its last in time;
- `filter_k_core`: every user has >= `min_user` rows, every item >= `min_item`, every session
  >= `min_session`, iterated to a fixed point since each drop can push another count below its
  threshold. Raises `DataError` when nothing survives.

Session preprocessing (all off by default, so other data splits exactly as before), run by
`split_interactions` before labelling and reported under `summary["preprocessing"]`:
- sessions longer than `max_session_length` keep their most recent events (a warning counts them);
- `min_session_length` joins the user and item thresholds in one core iterated to a fixed point
  (items, then sessions, again until nothing changes: the GRU4Rec preprocessing, Hidasi et al.
  2016), e.g. `min_session_length: 2, min_item_interactions: 5`;
- `train_fraction_recent` keeps only the most recent share of training sessions by start time
  (1/64 and 1/4 of YooChoose: Tan et al. 2016, "Improved Recurrent Neural Networks for
  Session-based Recommendations"): the older ones are labelled DROPPED, in no split;
- sessions whose rows are not in time order are counted; every split is put in stable time order,
  which sorts each session without reordering its ties.

A row without a session_id is a session of its own (`session_codes`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recforge.data.errors import DataError
from recforge.data.schema import INTERACTION_COLUMNS, require_columns

if TYPE_CHECKING:  # splits imports this module: a runtime import would be a cycle
    from recforge.data.splits import SplitConfig

logger = logging.getLogger(__name__)

# Row labels of a split. Defined here because `keep_recent_train` marks rows DROPPED; the
# strategies in `recforge.data.splits` assign the others.
TRAIN, VALID, TEST = 0, 1, 2
DROPPED = 3  # rows in no split: sessions straddling a last_days cut, old sessions under train_fraction_recent


def require_canonical(df: pd.DataFrame, source: str) -> None:
    """Raise `DataError` unless `df` has every canonical interaction column."""
    require_columns(
        df, list(INTERACTION_COLUMNS), source, hint="Run the ingestion pipeline so the table has the canonical schema"
    )


# --------------------------------------------------------------------------------------------
# Filtering


def time_order(df: pd.DataFrame) -> np.ndarray:
    """Positions of `df`'s rows in stable time order: by timestamp, ties by original position."""
    return np.argsort(df["timestamp"].to_numpy(), kind="stable")


def filter_events(df: pd.DataFrame, events: tuple[str, ...] | None, source: str = "interactions") -> pd.DataFrame:
    """Rows whose event is one of `events` (all rows when `events` is None)."""
    if events is None:
        return df
    out = df[df["event"].isin(events).to_numpy()].reset_index(drop=True)
    if out.empty and not df.empty:
        present = sorted(str(e) for e in pd.unique(df["event"].dropna()))
        raise DataError(
            f"no rows left after keeping events {list(events)}; the table has {present}",
            source=source,
            column="event",
            hint="Set splitting.events to event types the data has, or null for all",
        )
    return out


def dedupe_pairs(df: pd.DataFrame) -> pd.DataFrame:
    """Drop repeated user-item pairs, keeping each pair's last interaction in time."""
    order = time_order(df)
    repeated = np.empty(len(df), dtype=bool)
    repeated[order] = df.iloc[order].duplicated(subset=["user_id", "item_id"], keep="last").to_numpy()
    # Rows stay in the input's order: dedupe changes only which rows exist.
    return df[~repeated].reset_index(drop=True)


def filter_k_core(
    df: pd.DataFrame, min_user: int, min_item: int, source: str = "interactions", *, min_session: int = 1
) -> pd.DataFrame:
    """Rows of the k-core: every remaining user has >= min_user rows, every item >= min_item and
    every session (rows with a session_id) >= min_session.

    Dropping a sparse item can push a user or session below its threshold and vice versa, so this
    repeats until nothing changes (a fixed point). Raises `DataError` if nothing survives.
    """
    if min_user < 0 or min_item < 0 or min_session < 0:
        raise DataError(f"negative k-core thresholds ({min_user}, {min_item}, {min_session})", source=source)
    out = df.reset_index(drop=True)
    rounds = 0
    while True:
        user_n = out.groupby("user_id", sort=False, observed=True)["user_id"].transform("size")
        item_n = out.groupby("item_id", sort=False, observed=True)["item_id"].transform("size")
        keep = ((user_n >= min_user) & (item_n >= min_item)).to_numpy()
        if min_session > 1:
            session_n = out.groupby("session_id", sort=False, dropna=True)["item_id"].transform("size")
            keep &= (session_n.isna() | (session_n >= min_session)).to_numpy()
        if keep.all():
            break
        out = out[keep].reset_index(drop=True)
        rounds += 1
    if out.empty and not df.empty:
        raise DataError(
            f"no interactions survive the (user {min_user}, item {min_item}, session {min_session})-core",
            source=source,
            column="user_id",
            hint="Lower splitting.min_user_interactions / min_item_interactions / min_session_length",
        )
    logger.info(
        "k-core (user %d, item %d, session %d): %d -> %d interactions after %d round(s)",
        min_user, min_item, min_session, len(df), len(out), rounds,
    )  # fmt: skip
    return out


def filter_interactions(interactions: pd.DataFrame, config: SplitConfig, source: str = "interactions") -> pd.DataFrame:
    """Events to keep, then (optionally) dedupe, then the k-core: the rows every split draws from."""
    require_canonical(interactions, source)
    out = filter_events(interactions.reset_index(drop=True), config.events, source)
    if config.dedupe:
        out = dedupe_pairs(out)
    return filter_k_core(out, config.min_user_interactions, config.min_item_interactions, source)


# --------------------------------------------------------------------------------------------
# Session preprocessing


def session_codes(df: pd.DataFrame) -> np.ndarray:
    """(N,) a code per session; a row without a session_id is a session of its own."""
    codes = pd.factorize(df["session_id"])[0].astype(np.int64)  # NA -> -1
    alone = codes < 0
    codes[alone] = codes.max(initial=-1) + 1 + np.arange(int(alone.sum()))
    return codes


def count_unsorted_sessions(df: pd.DataFrame) -> int:
    """Sessions (with a session_id) whose rows, in table order, go back in time somewhere."""
    codes = pd.factorize(df["session_id"])[0]
    by_session = np.argsort(codes, kind="stable")  # each session's rows, in table order
    c, t = codes[by_session], df["timestamp"].to_numpy()[by_session]
    back = (c[1:] == c[:-1]) & (np.diff(t) < 0) & (c[1:] >= 0)
    return int(len(np.unique(c[1:][back])))


def truncate_sessions(df: pd.DataFrame, max_length: int) -> tuple[pd.DataFrame, int]:
    """Each session's most recent `max_length` rows (stable time order); rows without a session
    are kept. Returns the rows, in their input order, and how many sessions were cut."""
    codes = pd.factorize(df["session_id"])[0]
    order = np.lexsort((np.arange(len(df)), df["timestamp"].to_numpy(), codes))  # session, time, row
    c = codes[order]
    from_end = np.empty(len(df), dtype=np.int64)
    # Position from the end of the run of equal codes: a reversed cumulative count.
    run_end = np.r_[np.flatnonzero(c[1:] != c[:-1]), len(c) - 1] if len(c) else np.zeros(0, dtype=np.int64)
    run_of = np.repeat(np.arange(len(run_end)), np.diff(np.r_[-1, run_end]))
    from_end[order] = run_end[run_of] - np.arange(len(c))
    drop = (from_end >= max_length) & (codes >= 0)
    cut = int(len(np.unique(codes[drop])))
    if cut:
        longest = int(np.bincount(codes[codes >= 0]).max())
        logger.warning(
            "truncated %d session(s) longer than max_session_length=%d to their most recent events "
            "(%d events dropped; longest session had %d)", cut, max_length, int(drop.sum()), longest,
        )  # fmt: skip
    return df[~drop].reset_index(drop=True), cut


def preprocess_sessions(
    df: pd.DataFrame, config: SplitConfig, source: str = "interactions"
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Count unsorted sessions, truncate long ones, then the (user, item, session) core.

    With the default config the rows come back unchanged.
    """
    stats: dict[str, Any] = {
        "unsorted_sessions": count_unsorted_sessions(df),
        "truncated_sessions": 0,
        "rows_in": len(df),
    }
    if stats["unsorted_sessions"]:
        logger.info("%d session(s) had rows out of time order: sorted (stable)", stats["unsorted_sessions"])
    out = df
    if config.max_session_length is not None:
        out, stats["truncated_sessions"] = truncate_sessions(out, config.max_session_length)
    if config.min_session_length > 1 or stats["truncated_sessions"]:
        out = filter_k_core(
            out, config.min_user_interactions, config.min_item_interactions, source,
            min_session=config.min_session_length,
        )  # fmt: skip
    stats["rows_out"] = len(out)
    stats["sessions_out"] = int(out["session_id"].nunique())
    return out, stats


def keep_recent_train(df: pd.DataFrame, labels: np.ndarray, fraction: float) -> tuple[np.ndarray, int]:
    """Labels with all but the most recent `fraction` of training sessions (by start time) DROPPED."""
    if fraction >= 1.0:
        return labels, 0
    train = labels == TRAIN
    codes = session_codes(df)[train]
    start = pd.Series(df["timestamp"].to_numpy()[train]).groupby(codes).min()  # per training session
    # Oldest first; ties by code (first appearance in the table) so the cut is deterministic.
    ranked = start.index.to_numpy()[np.lexsort((start.index.to_numpy(), start.to_numpy()))]
    n_keep = max(1, int(np.ceil(fraction * len(ranked))))
    old = np.zeros(int(codes.max(initial=-1)) + 1, dtype=bool)
    old[ranked[: len(ranked) - n_keep]] = True
    out = labels.copy()
    rows = np.flatnonzero(train)
    out[rows[old[codes]]] = DROPPED
    dropped = len(ranked) - n_keep
    logger.info("train_fraction_recent=%g: kept the %d most recent of %d training sessions", fraction, n_keep,
                len(ranked))  # fmt: skip
    return out, dropped
