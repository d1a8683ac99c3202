"""Train / valid / test splits of the canonical interactions, and the id maps fitted on train.

Every strategy is a pure, vectorised function of the interactions (and a seed where chance is
involved) that returns one label per row: TRAIN, VALID or TEST. Rows are first put in a stable
time order (timestamp, then original position), so ties are always broken the same way and two
runs with the same config give byte-identical splits.

Strategies (`SplitConfig.strategy`):
- `random`: a seeded share of rows to valid and test.
- `temporal`: global cut points in time at the (1 - test) and (1 - test - valid) quantiles.
- `leave_last_out`: per user, the last interaction to test and the one before to valid.
- `last_sessions`: sessions ordered by start time; the last ones to test, those before to valid.
- `cold_start_items`: a seeded share of items held out entirely (all their rows to valid/test).
- `cold_start_users`: a seeded share of users held out entirely (all their rows to valid/test),
  the same draw over users.
- `presplit`: the source's own held-out file is test; valid is carved from train by leave-last-out.
- `last_days`: whole sessions by time: those starting in the last `test_days` days to test, those
  lying inside the `valid_days` before that to valid, those ending before to train. A session
  that straddles a cut would leak across it, so it is dropped (and counted).

`valid_fraction = 0` means "no validation split" for every strategy (`valid_days = 0` for
`last_days`).

Cold users and cold items, for every strategy: a valid/test row whose user (item) is unknown to
the id maps fitted on train gets `user_idx` (`item_idx`) -1. After a time cut (`temporal`,
`last_sessions`, `last_days`) a cold user is one whose first interaction is after the cut (she
signed up late: none of her rows reached train), a cold item one first interacted with after it
(released late); `cold_start_users` / `cold_start_items` make such users / items by a seeded draw
instead. The cold-start slices of evaluation (`evaluation.cold_start.cold_start_slices`) read
exactly these -1 rows.

Session preprocessing (`recforge.data.filters`; all off by default) runs inside
`split_interactions`: long sessions are truncated and the (user, item, session) core is taken
before labelling, old training sessions are dropped after (`train_fraction_recent`). Its counts
go under `summary["preprocessing"]`, with the test items unknown to train: never an error, their
`item_idx` is -1.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recforge.data.errors import DataError
from recforge.data.filters import (
    DROPPED,
    TEST,
    TRAIN,
    VALID,
    dedupe_pairs,
    filter_events,
    keep_recent_train,
    preprocess_sessions,
    require_canonical,
    session_codes,
    time_order,
)
from recforge.data.idmap import UNKNOWN, IdMap
from recforge.data.schema import EVENTS, INTERACTION_COLUMNS

logger = logging.getLogger(__name__)

# The row labels TRAIN, VALID, TEST and DROPPED live in `recforge.data.filters`.
DAY = 86_400

Strategy = Literal[
    "random", "temporal", "leave_last_out", "last_sessions", "cold_start_items", "cold_start_users",
    "presplit", "last_days",
]


class SplitConfig(BaseModel):
    """How to filter and split the interactions (`params:splitting`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: Strategy = "temporal"
    valid_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)
    min_user_interactions: int = Field(default=1, ge=0)
    min_item_interactions: int = Field(default=1, ge=0)
    seed: int = Field(default=42, ge=0)
    events: tuple[str, ...] | None = None  # None keeps every event type
    dedupe: bool = False
    test_days: float = Field(default=1.0, gt=0)  # last_days: the last days of the log to test
    valid_days: float = Field(default=0.0, ge=0)  # last_days: the days before the test days; 0 = none
    min_session_length: int = Field(default=1, ge=1)  # 2 drops single-event sessions
    max_session_length: int | None = Field(default=None, ge=1)  # longer sessions keep their last events
    train_fraction_recent: float = Field(default=1.0, gt=0.0, le=1.0)  # e.g. 1/64 = 0.015625

    @property
    def with_valid(self) -> bool:
        """Whether this config asks for a validation split."""
        return self.valid_days > 0 if self.strategy == "last_days" else self.valid_fraction > 0

    @field_validator("events")
    @classmethod
    def _known_events(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("events must name at least one event type, or be null for all")
        unknown = sorted(set(v) - set(EVENTS))
        if unknown:
            raise ValueError(f"unknown event types {unknown}; allowed {list(EVENTS)}")
        return v

    @model_validator(mode="after")
    def _fractions_leave_train(self) -> SplitConfig:
        if self.valid_fraction + self.test_fraction >= 1.0:
            raise ValueError(
                f"valid_fraction + test_fraction must be < 1 (got {self.valid_fraction} + "
                f"{self.test_fraction}), or nothing is left to train on"
            )
        return self


@dataclass(frozen=True)
class Splits:
    """The result of `split_interactions`: three tables with `user_idx`/`item_idx`, the maps, a summary."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    user_map: IdMap
    item_map: IdMap
    summary: dict[str, Any]


# --------------------------------------------------------------------------------------------
# Strategies: each returns an int8 label (TRAIN / VALID / TEST) per row of its input.


def _n_of(fraction: float, n: int) -> int:
    # A positive fraction of a small table still holds out at least one row.
    return 0 if fraction <= 0 else max(1, int(round(fraction * n)))


def _label_tail(n: int, n_valid: int, n_test: int) -> np.ndarray:
    """Labels for n rows already in order: the last n_test TEST, the n_valid before them VALID."""
    labels = np.full(n, TRAIN, dtype=np.int8)
    labels[max(n - n_test, 0) :] = TEST
    labels[max(n - n_test - n_valid, 0) : max(n - n_test, 0)] = VALID
    return labels


def label_random(df: pd.DataFrame, valid_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """A seeded random share of rows to valid and test."""
    n = len(df)
    perm = np.random.default_rng(seed).permutation(n)
    labels = np.empty(n, dtype=np.int8)
    labels[perm] = _label_tail(n, _n_of(valid_fraction, n), _n_of(test_fraction, n))
    return labels


def label_temporal(df: pd.DataFrame, valid_fraction: float, test_fraction: float) -> np.ndarray:
    """Global cut points in time: the latest rows to test, the ones before to valid."""
    n = len(df)
    order = time_order(df)
    labels = np.empty(n, dtype=np.int8)
    labels[order] = _label_tail(n, _n_of(valid_fraction, n), _n_of(test_fraction, n))
    return labels


def label_leave_last_out(df: pd.DataFrame, with_valid: bool = True) -> np.ndarray:
    """Per user: last interaction in time to test, the one before to valid.

    A user needs at least one training row besides the held-out ones (3 rows, or 2 without
    valid); users with fewer stay train-only.
    """
    order = time_order(df)
    users = df["user_id"].iloc[order]
    from_end = users.groupby(users, sort=False, observed=True).cumcount(ascending=False).to_numpy()
    size = users.groupby(users, sort=False, observed=True).transform("size").to_numpy()
    held = 2 if with_valid else 1
    eligible = size > held
    sorted_labels = np.full(len(df), TRAIN, dtype=np.int8)
    sorted_labels[eligible & (from_end == 0)] = TEST
    if with_valid:
        sorted_labels[eligible & (from_end == 1)] = VALID
    labels = np.empty(len(df), dtype=np.int8)
    labels[order] = sorted_labels
    return labels


def label_last_sessions(
    df: pd.DataFrame, valid_fraction: float, test_fraction: float, source: str = "interactions"
) -> np.ndarray:
    """Sessions ordered by start time (ties: first appearance); the last ones to test, then valid."""
    sessions = df["session_id"]
    missing = sessions.isna().to_numpy()
    if missing.any():
        raise DataError(
            "rows without a session_id; strategy 'last_sessions' needs sessions",
            source=source,
            column="session_id",
            rows=np.flatnonzero(missing).tolist(),
            hint="Use strategy 'temporal' or 'leave_last_out' for data without sessions",
        )
    order = time_order(df)
    ordered = sessions.iloc[order]
    # Codes in order of first appearance in time = sessions ordered by start time, ties stable.
    codes_sorted, _ = pd.factorize(ordered)
    n_sessions = int(codes_sorted.max()) + 1 if len(codes_sorted) else 0
    session_labels = _label_tail(n_sessions, _n_of(valid_fraction, n_sessions), _n_of(test_fraction, n_sessions))
    labels = np.empty(len(df), dtype=np.int8)
    labels[order] = session_labels[codes_sorted]
    return labels


def label_last_days(df: pd.DataFrame, test_days: float, valid_days: float) -> tuple[np.ndarray, dict[str, int]]:
    """Whole sessions by time against cuts `test_days` (and `valid_days` before that) before the
    last event: test sessions start at or after the test cut, valid ones lie within
    [valid cut, test cut), train ones end before the valid cut; straddlers are DROPPED.

    Returns the labels and {"test": test cut, "valid": valid cut} in unix seconds.
    """
    ts = df["timestamp"].to_numpy()
    codes = session_codes(df)
    first = pd.Series(ts).groupby(codes).transform("min").to_numpy()  # (N,) the row's session start
    last = pd.Series(ts).groupby(codes).transform("max").to_numpy()  # (N,) the row's session end
    test_cut = int(ts.max() - round(test_days * DAY)) if len(ts) else 0
    valid_cut = int(test_cut - round(valid_days * DAY))
    labels = np.full(len(df), DROPPED, dtype=np.int8)
    labels[last < valid_cut] = TRAIN
    labels[(first >= valid_cut) & (last < test_cut)] = VALID
    labels[first >= test_cut] = TEST
    return labels, {"test": test_cut, "valid": valid_cut}


def _label_held_out(
    df: pd.DataFrame, column: str, valid_fraction: float, test_fraction: float, seed: int
) -> np.ndarray:
    """A seeded share of the distinct values of `column` held out entirely: every row of a
    held-out value goes to valid/test."""
    # Sorted ids first, so the draw depends on the seed and the id set, not on row order.
    ids = pd.Index(df[column].unique()).sort_values()
    n = len(ids)
    perm = np.random.default_rng(seed).permutation(n)
    id_labels = np.empty(n, dtype=np.int8)
    id_labels[perm] = _label_tail(n, _n_of(valid_fraction, n), _n_of(test_fraction, n))
    return id_labels[ids.get_indexer(df[column])]


def label_cold_start_items(df: pd.DataFrame, valid_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """A seeded share of items held out entirely: every row of a held-out item goes to valid/test."""
    return _label_held_out(df, "item_id", valid_fraction, test_fraction, seed)


def label_cold_start_users(df: pd.DataFrame, valid_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """A seeded share of users held out entirely: every row of a held-out user goes to valid/test,
    so they are all cold users (`user_idx` -1) there."""
    return _label_held_out(df, "user_id", valid_fraction, test_fraction, seed)


# --------------------------------------------------------------------------------------------
# Entry point


def _with_indices(df: pd.DataFrame, user_map: IdMap, item_map: IdMap) -> pd.DataFrame:
    out = df.iloc[time_order(df)][list(INTERACTION_COLUMNS)].reset_index(drop=True)
    out["user_idx"] = user_map.to_index(out["user_id"], unknown=UNKNOWN)
    out["item_idx"] = item_map.to_index(out["item_id"], unknown=UNKNOWN)
    return out


def _split_stats(df: pd.DataFrame) -> dict[str, int]:
    cold_user = df["user_idx"].to_numpy() == UNKNOWN
    cold_item = df["item_idx"].to_numpy() == UNKNOWN
    return {
        "interactions": len(df),
        "users": int(df["user_id"].nunique()),
        "items": int(df["item_id"].nunique()),
        "cold_start_user_rows": int(cold_user.sum()),
        "cold_start_item_rows": int(cold_item.sum()),
        "cold_start_users": int(df.loc[cold_user, "user_id"].nunique()),
        "cold_start_items": int(df.loc[cold_item, "item_id"].nunique()),
    }


_EMPTY_HINTS = {
    "random": "raise splitting.{fraction} or use more data",
    "temporal": "raise splitting.{fraction} or use more data",
    "leave_last_out": "no user has enough interactions (3, or 2 with valid_fraction 0); use 'temporal' or 'random'",
    "last_sessions": "raise splitting.{fraction}; the data may have too few sessions",
    "cold_start_items": "raise splitting.{fraction}; the data may have too few items",
    "cold_start_users": "raise splitting.{fraction}; the data may have too few users",
    "presplit": "the source has no usable held-out file; use another strategy such as 'temporal'",
    "last_days": "raise splitting.{days}; the log may span too few days",
}


def _check_not_empty(name: str, df: pd.DataFrame, config: SplitConfig) -> None:
    if not df.empty:
        return
    if name == "train":
        held = "test_days / valid_days" if config.strategy == "last_days" else "valid_fraction / test_fraction"
        hint = f"lower splitting.{held} or the k-core thresholds"
    else:
        hint = _EMPTY_HINTS[config.strategy].format(fraction=f"{name}_fraction", days=f"{name}_days")
    raise DataError(f"the {name!r} split is empty (strategy {config.strategy!r})", source=name, hint=hint)


def split_interactions(interactions: pd.DataFrame, heldout: pd.DataFrame | None, config: SplitConfig) -> Splits:
    """Split filtered interactions by `config.strategy`, fit id maps on train, summarise.

    `interactions` should already be through `filters.filter_interactions`; the session
    preprocessing (`filters.preprocess_sessions`) runs first. `heldout` is the source's pre-split
    test file (used by `presplit` only; its events are filtered and, with `dedupe`, its pairs
    deduped like the interactions'). Valid/test ids unknown to the train maps get index -1.
    """
    require_canonical(interactions, "interactions")
    df, preprocessing = preprocess_sessions(interactions.reset_index(drop=True), config)
    with_valid = config.with_valid
    strategy = config.strategy
    cuts: dict[str, int] | None = None
    if strategy == "random":
        labels = label_random(df, config.valid_fraction, config.test_fraction, config.seed)
    elif strategy == "temporal":
        labels = label_temporal(df, config.valid_fraction, config.test_fraction)
    elif strategy == "leave_last_out":
        labels = label_leave_last_out(df, with_valid=with_valid)
    elif strategy == "last_sessions":
        labels = label_last_sessions(df, config.valid_fraction, config.test_fraction)
    elif strategy == "cold_start_items":
        labels = label_cold_start_items(df, config.valid_fraction, config.test_fraction, config.seed)
    elif strategy == "cold_start_users":
        labels = label_cold_start_users(df, config.valid_fraction, config.test_fraction, config.seed)
    elif strategy == "presplit":
        # The source's own test file is the test split; valid is each user's last training row.
        labels = label_leave_last_out(df, with_valid=False) if with_valid else np.zeros(len(df), np.int8)
        labels[labels == TEST] = VALID
    elif strategy == "last_days":
        labels, cuts = label_last_days(df, config.test_days, config.valid_days)
        preprocessing["straddling_sessions_dropped"] = int(
            len(np.unique(session_codes(df)[labels == DROPPED]))
        )
    else:  # pragma: no cover - SplitConfig's Literal rules this out
        raise DataError(f"unknown split strategy {strategy!r}")

    labels, preprocessing["old_train_sessions_dropped"] = keep_recent_train(df, labels, config.train_fraction_recent)
    train, valid = df[labels == TRAIN], df[labels == VALID]
    if strategy == "presplit":
        if heldout is None:
            heldout = df.iloc[:0]
        require_canonical(heldout, "heldout_interactions")
        test = filter_events(heldout.reset_index(drop=True), config.events, "heldout_interactions")
        test = dedupe_pairs(test) if config.dedupe else test
    else:
        test = df[labels == TEST]

    parts = {"train": train, "valid": valid, "test": test}
    for name in ("train", "test", "valid"):
        if name == "valid" and not with_valid:
            continue
        _check_not_empty(name, parts[name], config)

    user_map = IdMap.fit(train["user_id"], "user")
    item_map = IdMap.fit(train["item_id"], "item")
    parts = {name: _with_indices(part, user_map, item_map) for name, part in parts.items()}

    unseen = parts["test"]["item_idx"].to_numpy() == UNKNOWN
    preprocessing["test_items_not_in_train"] = {
        "rows": int(unseen.sum()),
        "items": int(parts["test"].loc[unseen, "item_id"].nunique()),
    }
    if unseen.any():
        logger.info(
            "%d test rows (%d distinct items) have items not in train: kept with item_idx -1",
            preprocessing["test_items_not_in_train"]["rows"], preprocessing["test_items_not_in_train"]["items"],
        )  # fmt: skip
    summary: dict[str, Any] = {
        "strategy": strategy,
        "parameters": config.model_dump(mode="json"),
        "n_users": len(user_map),
        "n_items": len(item_map),
        "splits": {name: _split_stats(part) for name, part in parts.items()},
        "preprocessing": preprocessing,
    }
    if cuts is not None:
        summary["cut_timestamps"] = cuts
    elif strategy in ("temporal", "last_sessions"):
        summary["cut_timestamps"] = {
            name: int(parts[name]["timestamp"].min()) for name in ("valid", "test") if not parts[name].empty
        }
    logger.info(
        "split %r: train %d, valid %d, test %d interactions; %d users, %d items in train",
        strategy,
        len(parts["train"]),
        len(parts["valid"]),
        len(parts["test"]),
        len(user_map),
        len(item_map),
    )
    return Splits(
        train=parts["train"],
        valid=parts["valid"],
        test=parts["test"],
        user_map=user_map,
        item_map=item_map,
        summary=summary,
    )
