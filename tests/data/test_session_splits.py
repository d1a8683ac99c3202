"""Session preprocessing as split parameters: session/item core, last-days split, recent train
fraction, truncation of huge sessions, unsorted sessions and unseen test items."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from recforge.data.schema import coerce_interactions
from recforge.data.filters import preprocess_sessions
from recforge.data.splits import SplitConfig, split_interactions

T0 = 1_600_000_000
DAY = 86_400


def sessions_frame(n_sessions: int = 400, n_items: int = 60, days: int = 10, seed: int = 0) -> pd.DataFrame:
    """Canonical session clicks: geometric lengths (many of 1), Zipf-ish items, starts over `days`."""
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(0.3, size=n_sessions), 15)
    sess = np.repeat(np.arange(n_sessions), lengths)
    start = np.sort(rng.integers(0, days * DAY - 3600, size=n_sessions))
    step = np.concatenate([np.arange(n) for n in lengths]) * 60
    pop = 1.0 / np.arange(1, n_items + 1)
    items = rng.choice(n_items, size=len(sess), p=pop / pop.sum())
    frame = pd.DataFrame(
        {
            "user_id": [f"s{s}" for s in sess],
            "item_id": [f"i{i}" for i in items],
            "timestamp": T0 + start[sess] + step,
            "session_id": [f"s{s}" for s in sess],
        }
    )
    return coerce_interactions(frame, source="fixture")


def rows(pairs: list[tuple[str, str, int]]) -> pd.DataFrame:
    """(session, item, seconds after T0) rows; user = session, as in YooChoose."""
    frame = pd.DataFrame(pairs, columns=["session_id", "item_id", "timestamp"])
    frame["user_id"] = frame["session_id"]
    frame["timestamp"] += T0
    return coerce_interactions(frame, source="fixture")


def everything(s) -> pd.DataFrame:
    return pd.concat([s.train, s.valid, s.test], ignore_index=True)


def test_defaults_leave_the_rows_alone() -> None:
    df = sessions_frame()
    out, stats = preprocess_sessions(df, SplitConfig())
    assert out is df and stats["truncated_sessions"] == 0 and stats["rows_out"] == len(df)


def test_single_event_sessions_are_dropped() -> None:
    df = sessions_frame()
    assert (df.groupby("session_id").size() == 1).any()
    config = SplitConfig(strategy="last_sessions", min_session_length=2, min_user_interactions=0,
                         min_item_interactions=0)  # fmt: skip
    s = split_interactions(df, None, config)
    assert everything(s).groupby("session_id").size().min() >= 2
    kept = df.groupby("session_id").size()
    assert set(everything(s)["session_id"]) == set(kept[kept >= 2].index)


def test_item_support_and_session_length_reach_a_fixed_point() -> None:
    # i1 has 5 rows, but one sits in session "c" which loses its other item (rare, 1 row) and so
    # becomes a single-event session: dropping it leaves i1 with 4 rows, so i1 goes too, which
    # shortens session "a" to one event... A single pass of items-then-sessions stops too early.
    df = rows(
        [("a", "i1", 0), ("a", "i2", 1), ("b", "i1", 10), ("b", "i2", 11), ("c", "i1", 20), ("c", "rare", 21),
         ("d", "i1", 30), ("d", "i2", 31), ("e", "i1", 40), ("e", "i3", 41)]
        + [(f"x{k}", "i2", 100 + 2 * k) for k in range(5)] + [(f"x{k}", "i3", 101 + 2 * k) for k in range(5)]
    )  # fmt: skip
    config = SplitConfig(min_session_length=2, min_item_interactions=5, min_user_interactions=0)
    out, stats = preprocess_sessions(df, config)
    assert out.groupby("item_id").size().min() >= 5 and out.groupby("session_id").size().min() >= 2
    assert set(out["item_id"]) == {"i2", "i3"} and "i1" not in set(out["item_id"])
    assert set(out["session_id"]) == {f"x{k}" for k in range(5)}
    assert stats["rows_out"] == 10 and stats["sessions_out"] == 5
    again, _ = preprocess_sessions(out, config)
    pd.testing.assert_frame_equal(again, out)


def test_last_days_has_no_leakage() -> None:
    df = sessions_frame(days=10)
    # One session straddles the test cut: it must be in no split.
    end = int(df["timestamp"].max())
    df = pd.concat([df, rows([("straddler", "i0", end - T0 - DAY - 60), ("straddler", "i1", end - T0 - DAY + 60)])],
                   ignore_index=True)  # fmt: skip
    config = SplitConfig(strategy="last_days", test_days=1, valid_days=1)
    s = split_interactions(df, None, config)
    cut_test, cut_valid = s.summary["cut_timestamps"]["test"], s.summary["cut_timestamps"]["valid"]
    assert cut_test == end - DAY and cut_valid == end - 2 * DAY
    assert s.train["timestamp"].max() < cut_valid
    assert s.valid["timestamp"].min() >= cut_valid and s.valid["timestamp"].max() < cut_test
    test_starts = s.test.groupby("session_id")["timestamp"].min()
    assert (test_starts >= cut_test).all() and len(test_starts) > 0
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not set(getattr(s, a)["session_id"]) & set(getattr(s, b)["session_id"])
    assert "straddler" not in set(everything(s)["session_id"])
    assert s.summary["preprocessing"]["straddling_sessions_dropped"] >= 1
    assert json.loads(json.dumps(s.summary))["strategy"] == "last_days"


def test_last_days_without_valid_days_has_no_valid_split() -> None:
    s = split_interactions(sessions_frame(), None, SplitConfig(strategy="last_days", test_days=2))
    assert s.valid.empty and not s.test.empty
    assert s.train["timestamp"].max() < s.summary["cut_timestamps"]["test"]


@pytest.mark.parametrize("fraction", [1 / 64, 1 / 4])
def test_train_fraction_recent_keeps_the_most_recent_sessions(fraction: float) -> None:
    df = sessions_frame(n_sessions=640)
    full = split_interactions(df, None, SplitConfig(strategy="last_days", test_days=1))
    part = split_interactions(df, None, SplitConfig(strategy="last_days", test_days=1, train_fraction_recent=fraction))
    starts = full.train.groupby("session_id")["timestamp"].min().sort_values(kind="stable")
    n_keep = int(np.ceil(fraction * len(starts)))
    kept = part.train.groupby("session_id")["timestamp"].min()
    assert len(kept) == n_keep
    assert kept.min() >= starts.iloc[-n_keep]  # nothing older than the n_keep-th most recent start
    assert part.summary["preprocessing"]["old_train_sessions_dropped"] == len(starts) - n_keep
    pd.testing.assert_frame_equal(part.test[["session_id", "item_id"]], full.test[["session_id", "item_id"]])
    # Fewer training sessions: more test items the train split never saw, counted, not an error.
    unseen = part.summary["preprocessing"]["test_items_not_in_train"]
    assert unseen["rows"] == int((part.test["item_idx"] == -1).sum()) > 0
    assert unseen["items"] == part.test.loc[part.test["item_idx"] == -1, "item_id"].nunique()


def test_huge_sessions_are_truncated_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    bot = rows([("bot", f"i{k % 7}", k) for k in range(1000)])
    other = rows([("h1", "i1", 5000), ("h1", "i2", 5001), ("h2", "i3", 5002), ("h2", "i4", 5003)])
    df = pd.concat([bot, other], ignore_index=True)
    config = SplitConfig(max_session_length=50, min_user_interactions=0, min_item_interactions=0)
    with caplog.at_level(logging.WARNING, logger="recforge.data.filters"):
        out, stats = preprocess_sessions(df, config)
    assert stats["truncated_sessions"] == 1
    assert any("truncated 1 session" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    kept = out[out["session_id"] == "bot"]
    assert len(kept) == 50 and kept["timestamp"].min() == T0 + 950  # the most recent events
    assert (out["session_id"] == "h1").sum() == 2


def test_unsorted_sessions_are_counted_and_split_in_time_order() -> None:
    df = rows([("a", "i1", 30), ("a", "i2", 10), ("a", "i3", 20), ("b", "i1", 40), ("b", "i2", 50),
               ("c", "i3", 70), ("c", "i1", 60)])  # fmt: skip
    config = SplitConfig(strategy="last_sessions", valid_fraction=0.0, test_fraction=0.3,
                         min_user_interactions=0, min_item_interactions=0)  # fmt: skip
    s = split_interactions(df, None, config)
    assert s.summary["preprocessing"]["unsorted_sessions"] == 2
    a = s.train[s.train["session_id"] == "a"]
    assert a["item_id"].tolist() == ["i2", "i3", "i1"]
    assert s.test["item_id"].tolist() == ["i1", "i3"]
