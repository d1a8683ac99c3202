"""recforge.data.validation: each check catches its bad input, in the report and in the error."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pydantic
import pytest

from recforge.data.errors import DataError
from recforge.data.schema import (
    STRING,
    coerce_interactions,
    coerce_items,
    coerce_users,
    empty_interactions,
    empty_items,
    empty_users,
)
from recforge.data.validation import (
    ValidationFailed,
    ValidationParams,
    assert_validated,
    check_report,
    table_fingerprint,
    validate_canonical_tables,
)
from recforge.data.validation_report import report_to_markdown

T0 = 1_600_000_000  # 2020-09-13 12:26:40 UTC
NOW = 1_700_000_000
# Thresholds under which the clean fixture raises no warning either.
LENIENT = {
    "min_user_interactions": 1,
    "min_item_interactions": 1,
    "max_cold_start_share": 1.0,
    "max_single_event_session_share": 1.0,
}


@pytest.fixture
def interactions() -> pd.DataFrame:
    """Eight canonical events: three users, three items, three two-event sessions."""
    raw = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2", "u3", "u3", "u1", "u2"],
            "item_id": ["i1", "i2", "i1", "i3", "i2", "i3", "i3", "i2"],
            "timestamp": [T0, T0 + 60, T0 + 3600, T0 + 3660, T0 + 7200, T0 + 7260, T0 + 86400, T0 + 90000],
            "event": ["view", "rating", "click", "rating", "purchase", "rating", "view", "add_to_cart"],
            "value": [1.0, 4.0, 1.0, 5.0, 1.0, 1.0, 1.0, 1.0],
            "session_id": ["s1", "s1", "s2", "s2", "s3", "s3", None, None],
        }
    )
    return coerce_interactions(raw, source="fixture")


@pytest.fixture
def items() -> pd.DataFrame:
    return coerce_items(
        pd.DataFrame(
            {"item_id": ["i1", "i2", "i3"], "title": ["one", "two", "three"], "price": [1.0, 2.5, None]}
        ),
        source="fixture",
    )


@pytest.fixture
def users() -> pd.DataFrame:
    return coerce_users(pd.DataFrame({"user_id": ["u1", "u2", "u3"], "age": [30, 41, 25]}), source="fixture")


def _validate(interactions: pd.DataFrame, items: pd.DataFrame, users: pd.DataFrame, **params) -> dict:
    return validate_canonical_tables(interactions, items, users, ValidationParams(**params), now=NOW)


def _failed(report: dict, table: str, check: str, column: str) -> dict:
    found = [
        e
        for e in report["tables"][table]["checks"]
        if e["check"] == check and e["column"] == column and not e["success"]
    ]
    assert found, f"no failed {check} check on {table}.{column}"
    return found[0]


def _assert_caught(
    report: dict, interactions: pd.DataFrame, table: str, check: str, column: str, rows: list[int]
) -> tuple[dict, str]:
    """The check failed in the report with these rows, and the raised message names all of it."""
    entry = _failed(report, table, check, column)
    assert entry["severity"] == "error"
    assert [r["row"] for r in entry["offending_rows"]] == rows
    assert report["passed"] is False
    with pytest.raises(ValidationFailed) as caught:
        check_report(report, interactions)
    message = str(caught.value)
    assert f"table {table!r}, column {column!r}: {entry['expectation']} [check {check}]" in message
    for row in rows:
        assert f"row {row} (" in message
    assert "kedro run --pipelines validation" in message
    assert isinstance(caught.value, DataError)
    return entry, message


def test_clean_tables_pass_every_check(interactions, items, users):
    report = _validate(interactions, items, users, **LENIENT)

    assert report["passed"] is True
    assert report["summary"]["failed_errors"] == report["summary"]["failed_warnings"] == 0
    checks = {(t, e["check"]) for t, s in report["tables"].items() for e in s["checks"]}
    for expected in [
        *[
            ("interactions", check)
            for check in (
                "columns", "dtype", "not_null", "event_type", "rating_scale", "duplicate_events",
                "timestamp_window", "referential_integrity", "min_interactions", "cold_start",
                "session_length",
            )
        ],
        ("items", "unique_id"), ("users", "unique_id"), ("items", "dtype"), ("users", "not_null"),
    ]:
        assert expected in checks
    json.dumps(report, allow_nan=False)  # strict JSON: no numpy scalars, NaN or NA left
    status = check_report(report, interactions)
    assert status == {"passed": True, "fingerprint": table_fingerprint(interactions)}
    page = report_to_markdown(report)
    assert page.startswith("# Validation report") and "**PASSED**" in page
    assert "## interactions (8 rows)" in page and "## Recommender statistics" in page


def test_missing_column_is_a_schema_failure(interactions, items, users):
    interactions = interactions.drop(columns="session_id")
    report = _validate(interactions, items, users, **LENIENT)
    entry, message = _assert_caught(report, interactions, "interactions", "columns", "session_id", [])
    assert entry["expectation"] == "expect_column_to_exist" and entry["observed_value"] == "missing"
    assert "observed missing" in message


@pytest.mark.parametrize(
    ("table", "column", "corrupt", "observed", "rows"),
    [
        ("interactions", "timestamp", lambda df: df.astype({"timestamp": "float64"}), "float64", []),
        ("interactions", "value", lambda df: df.astype({"value": "int64"}), "int64", []),
        ("items", "price", lambda df: df.astype({"price": STRING}), "string", []),
        # An object column is checked value by value: the int id is the offending row.
        (
            "users",
            "user_id",
            lambda df: df.assign(user_id=pd.Series(["u1", 2, "u3"], dtype=object)),
            None,
            [1],
        ),
    ],
)
def test_wrong_dtype(interactions, items, users, table, column, corrupt, observed, rows):
    frames = {"interactions": interactions, "items": items, "users": users}
    frames[table] = corrupt(frames[table])
    report = _validate(**frames, **LENIENT)
    entry, message = _assert_caught(report, frames["interactions"], table, "dtype", column, rows)
    assert entry["expectation"] == "expect_column_values_to_be_of_type"
    if observed is not None:
        assert entry["observed_value"] == observed and f"observed {observed}" in message


@pytest.mark.parametrize(("table", "column", "row"), [("interactions", "user_id", 2), ("items", "title", 1)])
def test_null_in_required_column(interactions, items, users, table, column, row):
    frames = {"interactions": interactions, "items": items, "users": users}
    frames[table].loc[row, column] = pd.NA
    report = _validate(**frames, **LENIENT)
    entry, _ = _assert_caught(report, frames["interactions"], table, "not_null", column, [row])
    assert entry["expectation"] == "expect_column_values_to_not_be_null"


@pytest.mark.parametrize(("table", "column"), [("items", "item_id"), ("users", "user_id")])
def test_duplicate_ids(interactions, items, users, table, column):
    frames = {"interactions": interactions, "items": items, "users": users}
    frames[table] = pd.concat([frames[table], frames[table].iloc[[0]]], ignore_index=True)
    report = _validate(**frames, **LENIENT)
    entry, _ = _assert_caught(report, interactions, table, "unique_id", column, [0, 3])
    assert entry["expectation"] == "expect_column_values_to_be_unique"
    assert entry["offending_rows"][1] == {"row": 3, column: frames[table].at[0, column]}


def test_unknown_event_type(interactions, items, users):
    interactions["event"] = interactions["event"].astype(STRING)
    interactions.loc[4, "event"] = "like"
    report = _validate(interactions, items, users, **LENIENT)
    entry, message = _assert_caught(report, interactions, "interactions", "event_type", "event", [4])
    assert entry["offending_rows"][0]["event"] == "like"
    assert "column 'event': expect_column_values_to_be_of_type [check dtype]" in message


def test_rating_outside_scale_only_for_rating_events(interactions, items, users):
    interactions.loc[3, "value"] = 7.0  # a rating
    interactions.loc[0, "value"] = 9.0  # a view's weight: not a rating, not checked
    report = _validate(interactions, items, users, **LENIENT)
    entry, message = _assert_caught(report, interactions, "interactions", "rating_scale", "value", [3])
    assert entry["expectation"] == "expect_column_values_to_be_between"
    assert entry["offending_rows"][0] == {
        "row": 3, "user_id": "u2", "item_id": "i3", "timestamp": T0 + 3660, "event": "rating", "value": 7.0
    }
    assert "value=7.0" in message


def test_rating_scale_is_a_parameter(interactions, items, users):
    report = _validate(interactions, items, users, rating_scale=(2, 10), **LENIENT)
    _assert_caught(report, interactions, "interactions", "rating_scale", "value", [5])  # the rating of 1


def test_duplicate_events(interactions, items, users):
    interactions = pd.concat([interactions, interactions.iloc[[1]]], ignore_index=True)
    report = _validate(interactions, items, users, **LENIENT)
    entry, _ = _assert_caught(
        report, interactions, "interactions", "duplicate_events", "user_id+item_id+timestamp+event", [1, 8]
    )
    assert entry["expectation"] == "expect_compound_columns_to_be_unique"


@pytest.mark.parametrize(
    "timestamp",
    [T0 * 1000, 100_000_000, NOW + 86_400],
    ids=["milliseconds", "before-1990", "future"],
)
def test_implausible_timestamp(interactions, items, users, timestamp):
    interactions.loc[2, "timestamp"] = timestamp
    report = _validate(interactions, items, users, **LENIENT)
    entry, message = _assert_caught(
        report, interactions, "interactions", "timestamp_window", "timestamp", [2]
    )
    assert f"timestamp={timestamp}" in message
    assert entry["expected"].endswith("2023-11-14 22:13:20")  # capped at `now`


def test_timestamp_window_is_a_parameter(interactions, items, users):
    report = _validate(interactions, items, users, latest_timestamp="2020-09-14", **LENIENT)
    _assert_caught(report, interactions, "interactions", "timestamp_window", "timestamp", [6, 7])


@pytest.mark.parametrize(("column", "table"), [("user_id", "users"), ("item_id", "items")])
def test_missing_reference(interactions, items, users, column, table):
    frames = {"interactions": interactions, "items": items, "users": users}
    frames[table] = frames[table][frames[table][column] != frames["interactions"].at[4, column]]
    report = _validate(**frames, **LENIENT)
    missing = frames["interactions"].at[4, column]
    rows = frames["interactions"].index[frames["interactions"][column] == missing].tolist()
    entry, message = _assert_caught(
        report, interactions, "interactions", "referential_integrity", column, rows
    )
    assert entry["expected"] == f"in {table}.{column}"
    assert f"{column}={missing!r}" in message


def test_recommender_statistics_and_warnings_do_not_fail(interactions, items, users):
    # A late new item (cold start) and a one-event session; u3 has only two interactions.
    late = pd.DataFrame(
        {"user_id": ["u1"], "item_id": ["i4"], "timestamp": [T0 + 89_000], "event": ["view"], "value": [1.0],
         "session_id": [None]}
    )
    interactions = pd.concat([interactions, coerce_interactions(late, "late")], ignore_index=True)
    interactions.loc[6, "session_id"] = "s4"
    items = coerce_items(pd.DataFrame({"item_id": ["i1", "i2", "i3", "i4"]}), "fixture")
    report = _validate(
        interactions, items, users,
        min_user_interactions=3, min_item_interactions=1, max_share_below_min=0.2,
        max_cold_start_share=0.2, max_single_event_session_share=0.2,
    )

    stats = report["recommender"]
    assert stats["users"]["below_min"] == 1 and stats["users"]["share_below_min"] == pytest.approx(1 / 3)
    assert stats["items"]["cold_start"] == 1 and stats["items"]["cold_start_share"] == pytest.approx(0.25)
    assert stats["users"]["cold_start"] == 0
    assert stats["sessions"] == {
        "count": 4, "min": 1, "median": 2.0, "p95": 2.0, "max": 2, "share_length_one": 0.25
    }
    below = _failed(report, "interactions", "min_interactions", "user_id")
    assert below["offending_rows"] == [{"row": 4, "user_id": "u3", "interactions": 2}]
    cold = _failed(report, "interactions", "cold_start", "item_id")
    assert cold["offending_rows"] == [{"row": 8, "item_id": "i4", "first_timestamp": T0 + 89_000}]
    single = _failed(report, "interactions", "session_length", "session_id")
    assert single["offending_rows"] == [{"row": 6, "session_id": "s4", "user_id": "u1"}]
    assert {below["severity"], cold["severity"], single["severity"]} == {"warning"}

    assert report["passed"] is True and report["summary"]["failed_warnings"] == 3
    assert check_report(report, interactions)["passed"] is True
    assert "| warn | session_length |" in report_to_markdown(report)


def test_severity_turns_an_error_into_a_warning(interactions, items, users):
    interactions = pd.concat([interactions, interactions.iloc[[1]]], ignore_index=True)
    report = _validate(interactions, items, users, severity={"duplicate_events": "warning"}, **LENIENT)
    entry = _failed(report, "interactions", "duplicate_events", "user_id+item_id+timestamp+event")
    assert entry["severity"] == "warning"
    assert report["passed"] is True
    check_report(report, interactions)


def test_bad_tables_still_give_a_report(items, users):
    raw = empty_interactions().astype({"timestamp": STRING})
    report = _validate(raw, empty_items(), empty_users())
    assert "skipped" in report["recommender"]
    assert _failed(report, "interactions", "dtype", "timestamp")["observed_value"] == "string"
    json.dumps(report, allow_nan=False)
    report_to_markdown(report)


def test_params_are_checked():
    with pytest.raises(pydantic.ValidationError):
        ValidationParams(rating_scale=(5, 1))
    with pytest.raises(pydantic.ValidationError):
        ValidationParams(severity={"rating_scale": "fatal"})
    with pytest.raises(pydantic.ValidationError):
        ValidationParams(cold_start_window=1.5)


def test_fingerprint_survives_parquet_and_catches_changes(interactions, tmp_path):
    path = tmp_path / "interactions.parquet"
    interactions.to_parquet(path)
    status = {"passed": True, "fingerprint": table_fingerprint(interactions)}
    assert status["fingerprint"].startswith("8:")

    assert_validated(status, pd.read_parquet(path))

    changed = interactions.copy()
    changed.loc[0, "value"] = 2.0
    with pytest.raises(DataError, match="changed since they were validated.*kedro run --pipelines valid"):
        assert_validated(status, changed)
    with pytest.raises(DataError, match="have not passed validation"):
        assert_validated(None, interactions)
    with pytest.raises(DataError, match="have not passed validation"):
        assert_validated({"passed": False, "fingerprint": status["fingerprint"]}, interactions)


def test_report_from_other_interactions_is_rejected(interactions, items, users):
    report = _validate(interactions, items, users, **LENIENT)
    with pytest.raises(DataError, match="another interactions table"):
        check_report(report, interactions.iloc[:-1])


def test_import_does_not_load_great_expectations_or_kedro():
    code = (
        "import sys, recforge.data.validation, recforge.data.validation_report; "
        "assert 'great_expectations' not in sys.modules; assert 'kedro' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
