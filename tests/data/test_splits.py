"""Splits: every strategy, no leakage, k-core fixed point, seeded determinism, train-only id maps."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recforge.data.errors import DataError
from recforge.data.idmap import UNKNOWN
from recforge.data.schema import INTERACTION_COLUMNS, coerce_interactions
from recforge.data.filters import dedupe_pairs, filter_events, filter_interactions, filter_k_core
from recforge.data.splits import SplitConfig, Splits, split_interactions

T0 = 1_600_000_000


def make_interactions(
    n_users: int = 30, n_items: int = 40, per_user: tuple[int, int] = (2, 12), seed: int = 0
) -> pd.DataFrame:
    """Canonical interactions; `value` is the row number so every row is identifiable after a split.

    Timestamps come from a small range so there are plenty of ties; each user's rows form 1-3
    sessions named after the user.
    """
    rng = np.random.default_rng(seed)
    counts = rng.integers(per_user[0], per_user[1] + 1, size=n_users)
    users = np.repeat([f"u{u:02d}" for u in range(n_users)], counts)
    n = len(users)
    ts = T0 + rng.integers(0, 500, size=n) * 60
    order = np.argsort(rng.random(n))  # rows not grouped by user, as in a real log
    users, ts = users[order], ts[order]
    frame = pd.DataFrame(
        {
            "user_id": users,
            "item_id": [f"i{i:02d}" for i in rng.integers(0, n_items, size=n)],
            "timestamp": ts,
            "event": rng.choice(["view", "click", "purchase"], size=n),
            "value": np.arange(n, dtype="float64"),
            "session_id": [f"{u}-s{t // (60 * 200)}" for u, t in zip(users, ts - T0, strict=True)],
        }
    )
    return coerce_interactions(frame, source="fixture")


def canonical(rows: list[tuple[str, str, int]], events: list[str] | None = None) -> pd.DataFrame:
    """A small canonical table from (user, item, timestamp) triples; value = row number."""
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    frame["timestamp"] = frame["timestamp"] + T0
    frame["value"] = np.arange(len(frame), dtype="float64")
    if events is not None:
        frame["event"] = events
    return coerce_interactions(frame, source="fixture")


def run(df: pd.DataFrame, heldout: pd.DataFrame | None = None, **config: object) -> Splits:
    cfg = SplitConfig(**config)
    return split_interactions(filter_interactions(df, cfg), heldout, cfg)


def row_ids(df: pd.DataFrame) -> set[int]:
    return set(df["value"].astype(int))


@pytest.fixture(scope="module")
def interactions() -> pd.DataFrame:
    return make_interactions()


def assert_partition(result: Splits, source: pd.DataFrame) -> None:
    """No row in two splits (no test row in train), and together they are the source."""
    tr, va, te = row_ids(result.train), row_ids(result.valid), row_ids(result.test)
    assert not tr & te and not tr & va and not va & te
    assert tr | va | te == row_ids(source)


# --- config -----------------------------------------------------------------------------------


def test_config_defaults_and_frozen() -> None:
    cfg = SplitConfig()
    assert (cfg.strategy, cfg.valid_fraction, cfg.test_fraction, cfg.events, cfg.dedupe) == (
        "temporal",
        0.1,
        0.1,
        None,
        False,
    )
    with pytest.raises(ValidationError):
        cfg.seed = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad",
    [
        {"valid_fraction": 0.5, "test_fraction": 0.5},
        {"valid_fraction": 0.7, "test_fraction": 0.4},
        {"test_fraction": 0.0},
        {"valid_fraction": -0.1},
        {"min_user_interactions": -1},
        {"min_item_interactions": -2},
        {"seed": -1},
        {"strategy": "by_magic"},
        {"events": ["view", "hover"]},
        {"events": []},
        {"test_fracton": 0.2},
    ],
)
def test_config_rejects_out_of_range(bad: dict) -> None:
    with pytest.raises(ValidationError):
        SplitConfig(**bad)


def test_config_from_yaml_like_dict() -> None:
    cfg = SplitConfig.model_validate({"strategy": "random", "events": ["click", "purchase"], "seed": 3})
    assert cfg.events == ("click", "purchase")


# --- filtering --------------------------------------------------------------------------------


def test_k_core_reaches_fixed_point(interactions: pd.DataFrame) -> None:
    out = filter_k_core(interactions, 5, 4)
    assert 0 < len(out) < len(interactions)
    assert out.groupby("user_id").size().min() >= 5
    assert out.groupby("item_id").size().min() >= 4
    pd.testing.assert_frame_equal(filter_k_core(out, 5, 4), out)


def test_k_core_iterates_past_one_round() -> None:
    # Round 1 passes every user; only i3 (1 row) fails. Dropping it leaves u2 with one row, then
    # i2 with one, then u1 with one: four rounds until only u3's two i1 rows remain.
    df = canonical(
        [("u1", "i1", 1), ("u1", "i2", 2), ("u2", "i2", 3), ("u2", "i3", 4), ("u3", "i1", 5), ("u3", "i1", 6)]
    )
    out = filter_k_core(df, 2, 2)
    assert set(out["value"].astype(int)) == {4, 5}
    # A single round would have kept u1 and u2's i2 row.
    assert len(filter_k_core(df, 2, 1)) == 6


def test_k_core_empty_raises() -> None:
    df = canonical([("u1", "i1", 1), ("u2", "i2", 2)])
    with pytest.raises(DataError, match="min_user_interactions"):
        filter_k_core(df, 2, 1)


def test_filter_events_keeps_only_named() -> None:
    df = canonical([("u1", "i1", 1), ("u1", "i2", 2), ("u2", "i1", 3)], events=["view", "purchase", "click"])
    out = filter_events(df, ("purchase", "click"))
    assert list(out["event"].astype(str)) == ["purchase", "click"]
    with pytest.raises(DataError, match="'event'.*add_to_cart"):
        filter_events(df, ("add_to_cart",))


def test_dedupe_keeps_last_in_time() -> None:
    # The repeated pair's later row (value 0, ts 9) is first in the file: "last" means in time.
    df = canonical([("u1", "i1", 9), ("u1", "i2", 2), ("u1", "i1", 3), ("u2", "i1", 3)])
    out = dedupe_pairs(df)
    assert list(out["value"].astype(int)) == [0, 1, 3]


# --- strategies -------------------------------------------------------------------------------


def test_random_partitions_by_fraction_and_seed(interactions: pd.DataFrame) -> None:
    a = run(interactions, strategy="random", valid_fraction=0.2, test_fraction=0.1, seed=7)
    assert_partition(a, interactions)
    n = len(interactions)
    assert len(a.test) == round(0.1 * n) and len(a.valid) == round(0.2 * n)
    b = run(interactions, strategy="random", valid_fraction=0.2, test_fraction=0.1, seed=7)
    pd.testing.assert_frame_equal(a.test, b.test)
    pd.testing.assert_frame_equal(a.train, b.train)
    c = run(interactions, strategy="random", valid_fraction=0.2, test_fraction=0.1, seed=8)
    assert row_ids(c.test) != row_ids(a.test)


def test_temporal_cuts_in_time(interactions: pd.DataFrame) -> None:
    s = run(interactions, strategy="temporal", valid_fraction=0.1, test_fraction=0.2)
    assert_partition(s, interactions)
    assert s.train["timestamp"].max() <= s.valid["timestamp"].min()
    assert s.valid["timestamp"].max() <= s.test["timestamp"].min()
    assert s.train["timestamp"].max() <= s.test["timestamp"].min()
    assert len(s.test) == round(0.2 * len(interactions))
    assert s.summary["cut_timestamps"]["test"] == s.test["timestamp"].min()


def test_temporal_breaks_ties_by_original_order() -> None:
    df = canonical([(f"u{i % 3}", f"i{i % 4}", 0) for i in range(10)])  # all at the same second
    s = run(df, strategy="temporal", valid_fraction=0.2, test_fraction=0.3)
    assert list(s.train["value"].astype(int)) == [0, 1, 2, 3, 4]
    assert list(s.valid["value"].astype(int)) == [5, 6]
    assert list(s.test["value"].astype(int)) == [7, 8, 9]


def test_leave_last_out(interactions: pd.DataFrame) -> None:
    s = run(interactions, strategy="leave_last_out")
    assert_partition(s, interactions)
    sizes = interactions.groupby("user_id").size()
    eligible = set(sizes[sizes >= 3].index)
    assert set(s.test["user_id"]) == eligible == set(s.valid["user_id"])
    assert s.test["user_id"].is_unique and s.valid["user_id"].is_unique
    # Users with fewer than 3 interactions keep them all in train.
    short = set(sizes[sizes < 3].index)
    assert short and short <= set(s.train["user_id"])
    # The test row is the user's last in time; valid comes right before it, after all of train.
    last_train = s.train.groupby("user_id")["timestamp"].max()
    valid_ts = s.valid.set_index("user_id")["timestamp"]
    test_ts = s.test.set_index("user_id")["timestamp"]
    users = sorted(eligible)
    assert (last_train[users] <= valid_ts[users]).all()
    assert (valid_ts[users] <= test_ts[users]).all()
    latest = interactions.groupby("user_id")["timestamp"].max()
    assert (test_ts[users] == latest[users]).all()


def test_leave_last_out_ties_go_by_file_order() -> None:
    df = canonical([("u1", "a", 5), ("u1", "b", 5), ("u1", "c", 5), ("u1", "d", 5)])
    s = run(df, strategy="leave_last_out")
    assert list(s.test["item_id"]) == ["d"] and list(s.valid["item_id"]) == ["c"]


def test_leave_last_out_without_valid() -> None:
    df = canonical([("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 3)])
    s = run(df, strategy="leave_last_out", valid_fraction=0.0)
    assert s.valid.empty and list(s.test["item_id"]) == ["b"]
    assert list(s.train["value"].astype(int)) == [0, 2]


def test_last_sessions_keeps_sessions_whole(interactions: pd.DataFrame) -> None:
    s = run(interactions, strategy="last_sessions", valid_fraction=0.1, test_fraction=0.2)
    assert_partition(s, interactions)
    train_s, valid_s, test_s = (set(p["session_id"]) for p in (s.train, s.valid, s.test))
    assert not train_s & test_s and not train_s & valid_s and not valid_s & test_s
    n_sessions = interactions["session_id"].nunique()
    assert len(test_s) == round(0.2 * n_sessions) and len(valid_s) == round(0.1 * n_sessions)
    starts = interactions.groupby("session_id")["timestamp"].min()
    assert starts[sorted(train_s)].max() <= starts[sorted(valid_s)].min()
    assert starts[sorted(valid_s)].max() <= starts[sorted(test_s)].min()


def test_last_sessions_needs_session_ids() -> None:
    df = canonical([("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 3)])  # session_id all null
    with pytest.raises(DataError, match="session_id.*temporal"):
        run(df, strategy="last_sessions")


def test_cold_start_items_are_held_out_entirely(interactions: pd.DataFrame) -> None:
    s = run(interactions, strategy="cold_start_items", valid_fraction=0.1, test_fraction=0.2, seed=3)
    assert_partition(s, interactions)
    held = set(s.valid["item_id"]) | set(s.test["item_id"])
    assert not held & set(s.train["item_id"])
    assert not held & set(s.item_map.ids)
    assert (s.valid["item_idx"] == UNKNOWN).all() and (s.test["item_idx"] == UNKNOWN).all()
    n_items = interactions["item_id"].nunique()
    assert s.test["item_id"].nunique() == round(0.2 * n_items)
    assert s.summary["splits"]["test"]["cold_start_item_rows"] == len(s.test)
    again = run(interactions, strategy="cold_start_items", valid_fraction=0.1, test_fraction=0.2, seed=3)
    assert set(again.test["item_id"]) == set(s.test["item_id"])
    other = run(interactions, strategy="cold_start_items", valid_fraction=0.1, test_fraction=0.2, seed=4)
    assert set(other.test["item_id"]) != set(s.test["item_id"])
    # The draw depends on the item set, not on the order of the rows.
    shuffled = interactions.sample(frac=1.0, random_state=1)
    again = run(shuffled, strategy="cold_start_items", valid_fraction=0.1, test_fraction=0.2, seed=3)
    assert set(again.test["item_id"]) == set(s.test["item_id"])


def test_cold_start_users_are_held_out_entirely(interactions: pd.DataFrame) -> None:
    s = run(interactions, strategy="cold_start_users", valid_fraction=0.1, test_fraction=0.2, seed=3)
    assert_partition(s, interactions)
    held = set(s.valid["user_id"]) | set(s.test["user_id"])
    assert not held & set(s.train["user_id"]) and not held & set(s.user_map.ids)
    assert (s.valid["user_idx"] == UNKNOWN).all() and (s.test["user_idx"] == UNKNOWN).all()
    assert s.test["user_id"].nunique() == round(0.2 * interactions["user_id"].nunique())
    assert s.summary["splits"]["test"]["cold_start_user_rows"] == len(s.test)
    other = run(interactions, strategy="cold_start_users", valid_fraction=0.1, test_fraction=0.2, seed=4)
    assert set(other.test["user_id"]) != set(s.test["user_id"])
    shuffled = interactions.sample(frac=1.0, random_state=1)
    again = run(shuffled, strategy="cold_start_users", valid_fraction=0.1, test_fraction=0.2, seed=3)
    assert set(again.test["user_id"]) == set(s.test["user_id"])


def test_after_a_time_cut_cold_users_are_those_who_start_after_it(interactions: pd.DataFrame) -> None:
    """The documented definition for a temporal split: user_idx -1 in test exactly for the users
    whose first interaction is at or after the test cut (none of their rows reached train)."""
    s = run(interactions, strategy="temporal", valid_fraction=0.0, test_fraction=0.3)
    first = interactions.groupby("user_id")["timestamp"].min()
    cold = set(s.test.loc[s.test["user_idx"] == UNKNOWN, "user_id"])
    in_train = set(s.train["user_id"])
    assert cold == set(s.test["user_id"]) - in_train
    cut = s.train["timestamp"].max()
    assert all(first[u] >= cut for u in cold)


def test_presplit_uses_heldout_as_test(interactions: pd.DataFrame) -> None:
    heldout = canonical([("u00", "i01", 900_000), ("u01", "zz", 900_001), ("new", "i02", 900_002)])
    heldout["value"] = heldout["value"] + 10_000
    s = run(interactions, heldout, strategy="presplit")
    assert_partition(Splits(s.train, s.valid, s.test.iloc[:0], s.user_map, s.item_map, {}), interactions)
    assert row_ids(s.test) == {10_000, 10_001, 10_002}
    # Valid is each user's last training interaction.
    sizes = interactions.groupby("user_id").size()
    assert set(s.valid["user_id"]) == set(sizes[sizes >= 2].index)
    latest = interactions.groupby("user_id")["timestamp"].max()
    assert (s.valid.set_index("user_id")["timestamp"] == latest[s.valid["user_id"]].to_numpy()).all()
    test = s.test.set_index("user_id")
    assert test.loc["new", "user_idx"] == UNKNOWN and test.loc["u01", "item_idx"] == UNKNOWN
    assert test.loc["u00", "user_idx"] == s.user_map.to_index(["u00"])[0]


def test_presplit_without_heldout_is_an_error(interactions: pd.DataFrame) -> None:
    empty = interactions.iloc[:0]
    with pytest.raises(DataError, match=r"file/table 'test'.*'test' split is empty.*temporal"):
        run(interactions, empty, strategy="presplit")


# --- id maps, outputs, summary ----------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["random", "temporal", "leave_last_out"])
def test_id_maps_are_fitted_on_train_only(interactions: pd.DataFrame, strategy: str) -> None:
    s = run(interactions, strategy=strategy, seed=1)
    assert set(s.user_map.ids) == set(s.train["user_id"])
    assert set(s.item_map.ids) == set(s.train["item_id"])
    for part in (s.train, s.valid, s.test):
        assert part["user_idx"].dtype == np.int64 and part["item_idx"].dtype == np.int64
        known = part["item_id"].isin(set(s.train["item_id"])).to_numpy()
        assert (part["item_idx"].to_numpy()[~known] == UNKNOWN).all()
        np.testing.assert_array_equal(
            part["item_idx"].to_numpy()[known], s.item_map.to_index(part["item_id"][known])
        )
        assert list(part.columns) == [*INTERACTION_COLUMNS, "user_idx", "item_idx"]
        assert (part.dtypes[list(INTERACTION_COLUMNS)] == interactions.dtypes).all()
    assert (s.train["user_idx"] >= 0).all() and (s.train["item_idx"] >= 0).all()


def test_valid_and_test_unknowns_are_marked() -> None:
    # i9 appears only as u1's last interaction, so the train map cannot know it.
    df = canonical([("u1", "a", 1), ("u1", "b", 2), ("u1", "i9", 3), ("u2", "a", 1), ("u2", "b", 2), ("u2", "a", 3)])
    s = run(df, strategy="leave_last_out")
    test = s.test.set_index("user_id")
    assert test.loc["u1", "item_idx"] == UNKNOWN and test.loc["u2", "item_idx"] == s.item_map.to_index(["a"])[0]
    assert s.summary["splits"]["test"]["cold_start_item_rows"] == 1
    assert s.summary["splits"]["test"]["cold_start_items"] == 1


def test_summary_is_json_and_counts_match(interactions: pd.DataFrame) -> None:
    s = run(interactions, strategy="random", seed=2)
    summary = json.loads(json.dumps(s.summary))
    assert summary["strategy"] == "random" and summary["parameters"]["seed"] == 2
    assert summary["n_users"] == len(s.user_map) and summary["n_items"] == len(s.item_map)
    for name, part in (("train", s.train), ("valid", s.valid), ("test", s.test)):
        stats = summary["splits"][name]
        assert stats["interactions"] == len(part)
        assert stats["users"] == part["user_id"].nunique() and stats["items"] == part["item_id"].nunique()
        assert stats["cold_start_user_rows"] == int((part["user_idx"] == UNKNOWN).sum())


def test_empty_split_names_split_and_params() -> None:
    df = canonical([("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 3), ("u2", "c", 4)])  # 2 rows per user
    with pytest.raises(DataError, match=r"file/table 'test'.*'test' split is empty.*'leave_last_out'.*'temporal'"):
        run(df, strategy="leave_last_out")


def test_split_does_not_modify_input(interactions: pd.DataFrame) -> None:
    before = interactions.copy()
    run(interactions, strategy="cold_start_items", dedupe=True, min_user_interactions=2)
    pd.testing.assert_frame_equal(interactions, before)
