"""Validation of the canonical tables: great-expectations suites plus recommender checks.

`validate_canonical_tables` runs one ExpectationSuite per table (`interactions`, `items`, `users`)
in an ephemeral GX context and adds recommender statistics GX has no expectation for (interaction
counts, cold-start share, session lengths). Every check carries a severity: a failed `error` check
is a hard failure, a failed `warning` check is only reported. The report is a JSON-serialisable dict
and never raises on bad data, so it can always be written; `check_report` then raises
`ValidationFailed` on hard failures, or returns the status that `assert_validated` later compares
against the interactions a downstream pipeline loads. `recforge.data.validation_report` renders
the report as Markdown.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recforge.data.errors import DataError
from recforge.data.schema import (
    EVENTS,
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    MIN_TIMESTAMP,
    NULLABLE,
    USER_COLUMNS,
)
from recforge.data.validation_report import describe_failure, iso_utc

logger = logging.getLogger(__name__)

Severity = Literal["error", "warning"]

RERUN_HINT = "Fix the data, then run `kedro run --pipelines validation`"

CANONICAL: dict[str, dict[str, object]] = {
    "interactions": INTERACTION_COLUMNS,
    "items": ITEM_COLUMNS,
    "users": USER_COLUMNS,
}
# Columns shown next to each offending row, so a row can be found without opening the table.
KEY_COLUMNS: dict[str, list[str]] = {
    "interactions": ["user_id", "item_id", "timestamp", "event"],
    "items": ["item_id"],
    "users": ["user_id"],
}
EVENT_KEY = ["user_id", "item_id", "timestamp", "event"]


class Severities(BaseModel):
    """The severity of each check; the field name is the check's name in the report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    columns: Severity = "error"
    dtype: Severity = "error"
    not_null: Severity = "error"
    unique_id: Severity = "error"
    event_type: Severity = "error"
    rating_scale: Severity = "error"
    duplicate_events: Severity = "error"
    timestamp_window: Severity = "error"
    referential_integrity: Severity = "error"
    min_interactions: Severity = "warning"
    cold_start: Severity = "warning"
    session_length: Severity = "warning"


class ValidationParams(BaseModel):
    """Thresholds and severities of the validation pipeline (`params:validation`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rating_scale: tuple[float, float] = (1.0, 5.0)
    earliest_timestamp: datetime = datetime.fromtimestamp(MIN_TIMESTAMP, UTC)
    # None means "now"; a later value is still capped at now, since events cannot be in the future.
    latest_timestamp: datetime | None = None
    min_user_interactions: int = Field(5, ge=1)
    min_item_interactions: int = Field(5, ge=1)
    max_share_below_min: float = Field(0.5, ge=0.0, le=1.0)
    cold_start_window: float = Field(0.1, gt=0.0, lt=1.0)
    max_cold_start_share: float = Field(0.3, ge=0.0, le=1.0)
    max_single_event_session_share: float = Field(0.5, ge=0.0, le=1.0)
    max_offending_rows: int = Field(5, ge=1, le=100)
    severity: Severities = Severities()

    @field_validator("earliest_timestamp", "latest_timestamp")
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        # Naive dates in YAML mean UTC, like the canonical timestamps.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _ordered(self) -> ValidationParams:
        low, high = self.rating_scale
        if not low < high:
            raise ValueError(f"rating_scale must be [low, high] with low < high, got {[low, high]}")
        if self.latest_timestamp is not None and self.latest_timestamp <= self.earliest_timestamp:
            raise ValueError("latest_timestamp must be after earliest_timestamp")
        return self


class ValidationFailed(DataError):
    """One or more `error` checks failed; lists each with table, column, expectation and rows."""

    def __init__(self, failures: list[dict[str, Any]]) -> None:
        self.failures = failures
        lines = [f"validation failed with {len(failures)} hard failure(s):"]
        lines += [f"  - {describe_failure(f)}" for f in failures]
        super().__init__(
            "\n".join(lines),
            hint=f"{RERUN_HINT} (see data/08_reporting/validation_report.md; "
            "a check's severity is set in conf/base/parameters_validation.yml)",
        )


@dataclass(frozen=True)
class _Planned:
    check: str
    column: str
    expected: str
    expectation: Any  # a great_expectations Expectation; GX is imported lazily


def table_fingerprint(df: pd.DataFrame) -> str:
    """`<rows>:<sha256>` of the table's values (not its index), stable across a parquet round trip."""
    hashes = pd.util.hash_pandas_object(df, index=False).to_numpy()
    return f"{len(df)}:{hashlib.sha256(hashes.tobytes()).hexdigest()}"


def assert_validated(status: dict | None, interactions: pd.DataFrame) -> None:
    """Raise `DataError` unless `status` says these exact interactions passed validation."""
    if not status or status.get("passed") is not True:
        raise DataError(
            "the interactions have not passed validation (validation status missing or failed)",
            source="validation_status",
            hint=RERUN_HINT,
        )
    fingerprint = table_fingerprint(interactions)
    if status.get("fingerprint") != fingerprint:
        raise DataError(
            "the interactions changed since they were validated "
            f"(fingerprint {fingerprint}, validated {status.get('fingerprint')})",
            source="interactions",
            hint=RERUN_HINT,
        )


def hard_failures(report: dict) -> list[dict]:
    """The failed `error` checks of a report, each with its table."""
    return [
        {"table": table, **entry}
        for table, section in report["tables"].items()
        for entry in section["checks"]
        if not entry["success"] and entry["severity"] == "error"
    ]


def check_report(report: dict, interactions: pd.DataFrame) -> dict:
    """The validation status for `interactions`; raises `ValidationFailed` on any hard failure."""
    failures = hard_failures(report)
    if failures:
        raise ValidationFailed(failures)
    fingerprint = table_fingerprint(interactions)
    reported = report["tables"]["interactions"].get("fingerprint")
    if reported != fingerprint:
        raise DataError(
            f"the validation report describes another interactions table ({reported}, now {fingerprint})",
            source="interactions",
            hint=RERUN_HINT,
        )
    return {"passed": True, "fingerprint": fingerprint}


def validate_canonical_tables(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    params: ValidationParams | None = None,
    now: int | None = None,
) -> dict:
    """Run every check on the canonical tables and return the report; never raises on bad data.

    `now` (unix seconds) is the upper bound for timestamps; the current time when None.
    """
    # GX takes ~5 s to import: only a validation run should pay for it.
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    params = params or ValidationParams()
    now = int(time.time()) if now is None else int(now)
    frames = {
        "interactions": interactions.reset_index(drop=True),
        "items": items.reset_index(drop=True),
        "users": users.reset_index(drop=True),
    }
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    source = context.data_sources.add_pandas("recforge")

    report: dict[str, Any] = {"tables": {}}
    for table, df in frames.items():
        planned = _plan(table, frames, params, now)
        suite = gx.ExpectationSuite(name=table)
        for i, p in enumerate(planned):
            p.expectation.meta = {"recforge_id": i}
            suite.add_expectation(p.expectation)
        suite = context.suites.add(suite)
        batch = (
            source.add_dataframe_asset(table)
            .add_batch_definition_whole_dataframe("whole")
            .get_batch(batch_parameters={"dataframe": df})
        )
        result = batch.validate(
            suite,
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": params.max_offending_rows},
        )
        by_id = {r.expectation_config.meta["recforge_id"]: r for r in result.results}
        checks = [_entry(table, df, p, by_id[i], params) for i, p in enumerate(planned)]
        report["tables"][table] = {
            "rows": len(df),
            "columns": [str(c) for c in df.columns],
            "fingerprint": table_fingerprint(df),
            "checks": checks,
        }

    stats, stat_checks = recommender_statistics(
        frames["interactions"], params, users=frames["users"], items=frames["items"]
    )
    report["tables"]["interactions"]["checks"].extend(stat_checks)
    report["recommender"] = stats

    entries = [e for section in report["tables"].values() for e in section["checks"]]
    failed = [e for e in entries if not e["success"]]
    report["passed"] = not any(e["severity"] == "error" for e in failed)
    report["summary"] = {
        "checks": len(entries),
        "failed_errors": sum(e["severity"] == "error" for e in failed),
        "failed_warnings": sum(e["severity"] == "warning" for e in failed),
    }
    report["now"] = now
    report["params"] = params.model_dump(mode="json")
    report["great_expectations_version"] = gx.__version__
    for table, section in report["tables"].items():
        for e in section["checks"]:
            if not e["success"]:
                log = logger.error if e["severity"] == "error" else logger.warning
                log("validation %s: %s", e["severity"], describe_failure({"table": table, **e}))
    logger.info("validation %s: %s", "passed" if report["passed"] else "FAILED", report["summary"])
    return _jsonable(report)


def recommender_statistics(
    interactions: pd.DataFrame,
    params: ValidationParams,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
) -> tuple[dict, list[dict]]:
    """Interaction counts, cold-start shares and session lengths, with their (warning) checks."""
    needed = ["user_id", "item_id", "timestamp"]
    missing = [c for c in needed if c not in interactions.columns]
    if missing:
        return {"skipped": f"interactions lack column(s) {missing}"}, []
    if not pd.api.types.is_numeric_dtype(interactions["timestamp"]):
        return {"skipped": f"timestamp is {interactions['timestamp'].dtype}, not numeric"}, []
    df = interactions.reset_index(drop=True)
    df = df[df[needed].notna().all(axis=1)]
    if len(df) == 0:
        return {"skipped": "no interactions with user, item and timestamp"}, []

    t_min, t_max = int(df["timestamp"].min()), int(df["timestamp"].max())
    cutoff = t_max - params.cold_start_window * (t_max - t_min)
    stats: dict[str, Any] = {
        "interactions": len(df),
        "time_span": {"first": t_min, "last": t_max, "cold_start_cutoff": cutoff},
    }
    checks: list[dict] = []
    for key, kind, min_count, table in (
        ("user_id", "users", params.min_user_interactions, users),
        ("item_id", "items", params.min_item_interactions, items),
    ):
        entity_stats, entity_checks = _entity_checks(df, key, kind, min_count, cutoff, params)
        if table is not None and key in table.columns:
            entity_stats["without_interactions"] = int((~table[key].dropna().isin(df[key])).sum())
        stats[kind] = entity_stats
        checks += entity_checks
    stats["sessions"], session_checks = _session_checks(df, params)
    checks += session_checks
    return stats, checks


def _plan(table: str, frames: dict[str, pd.DataFrame], params: ValidationParams, now: int) -> list[_Planned]:
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    df = frames[table]
    present = set(df.columns)
    plan: list[_Planned] = []
    for column, dtype in CANONICAL[table].items():
        plan.append(_Planned("columns", column, "present", gxe.ExpectColumnToExist(column=column)))
        if column not in present:
            continue
        type_check = gxe.ExpectColumnValuesToBeOfType(column=column, type_=_gx_type(dtype))
        plan.append(_Planned("dtype", column, str(dtype), type_check))
        if column not in NULLABLE:
            null_check = gxe.ExpectColumnValuesToNotBeNull(column=column)
            plan.append(_Planned("not_null", column, "no nulls", null_check))
    id_column = {"items": "item_id", "users": "user_id"}.get(table)
    if id_column in present:
        unique_check = gxe.ExpectColumnValuesToBeUnique(column=id_column)
        plan.append(_Planned("unique_id", id_column, "unique", unique_check))
    if table != "interactions":
        return plan

    if "event" in present:
        plan.append(
            _Planned("event_type", "event", f"one of {list(EVENTS)}",
                     gxe.ExpectColumnValuesToBeInSet(column="event", value_set=list(EVENTS)))
        )
    if {"event", "value"} <= present:
        low, high = params.rating_scale
        plan.append(
            _Planned(
                "rating_scale",
                "value",
                f"[{low:g}, {high:g}] where event == 'rating'",
                gxe.ExpectColumnValuesToBeBetween(
                    column="value",
                    min_value=low,
                    max_value=high,
                    row_condition=Column("event") == "rating",
                ),
            )
        )
    if set(EVENT_KEY) <= present:
        plan.append(
            _Planned("duplicate_events", "+".join(EVENT_KEY), "unique (user, item, timestamp, event)",
                     gxe.ExpectCompoundColumnsToBeUnique(column_list=EVENT_KEY))
        )
    if "timestamp" in present:
        earliest = int(params.earliest_timestamp.timestamp())
        latest = now
        if params.latest_timestamp is not None:
            latest = min(int(params.latest_timestamp.timestamp()), now)
        plan.append(
            _Planned(
                "timestamp_window",
                "timestamp",
                f"{iso_utc(earliest)} .. {iso_utc(latest)}",
                gxe.ExpectColumnValuesToBeBetween(column="timestamp", min_value=earliest, max_value=latest),
            )
        )
    for key, ref_table in (("user_id", "users"), ("item_id", "items")):
        ref = frames[ref_table]
        if key in present and key in ref.columns:
            known = ref[key].dropna().unique().tolist()
            in_set = gxe.ExpectColumnValuesToBeInSet(column=key, value_set=known)
            plan.append(_Planned("referential_integrity", key, f"in {ref_table}.{key}", in_set))
    return plan


def _gx_type(dtype: object) -> str:
    # GX compares `dtype.type`: `str` covers pandas' string dtypes (and str values in an object column).
    if isinstance(dtype, pd.StringDtype):
        return "str"
    if isinstance(dtype, pd.CategoricalDtype):
        return "CategoricalDtypeType"
    return np.dtype(dtype).name


def _entry(table: str, df: pd.DataFrame, planned: _Planned, result: Any, params: ValidationParams) -> dict:
    res = dict(result.result or {})
    error = _exception_message(result.exception_info)
    observed = res.get("observed_value")
    if planned.check == "columns":
        observed = "present" if planned.column in df.columns else "missing"
    elif planned.check == "dtype" and "unexpected_count" not in res:
        observed = str(df[planned.column].dtype)
    elif error is not None:
        observed = f"could not evaluate: {error}"
    elif observed is None and "unexpected_count" in res:
        observed = f"{res['unexpected_count']} of {res.get('element_count')} rows unexpected"
    index = res.get("partial_unexpected_index_list") or []
    columns = [c for c in KEY_COLUMNS[table] if c in df.columns]
    columns += [c for c in planned.column.split("+") if c in df.columns and c not in columns]
    return {
        "check": planned.check,
        "expectation": result.expectation_config.type,
        "column": planned.column,
        "success": bool(result.success) and error is None,
        "severity": getattr(params.severity, planned.check),
        "expected": planned.expected,
        "observed_value": observed,
        "unexpected_count": res.get("unexpected_count"),
        "offending_rows": _rows(df, list(index)[: params.max_offending_rows], columns),
    }


def _entity_checks(
    df: pd.DataFrame, key: str, kind: str, min_count: int, cutoff: float, params: ValidationParams
) -> tuple[dict, list[dict]]:
    grouped = df.groupby(key, observed=True, sort=False)
    counts = grouped.size()
    first_ts = grouped["timestamp"].min()
    # Index labels are row positions (the frame was reset), so the minimum is the first row.
    first_row = df.index.to_series().groupby(df[key], observed=True, sort=False).min()
    below = counts[counts < min_count].sort_values(kind="stable")
    cold = first_ts[first_ts > cutoff].sort_values(ascending=False, kind="stable")
    n = len(counts)
    share_below, share_cold = len(below) / n, len(cold) / n
    stats = {
        "count": n,
        "min_interactions": min_count,
        "below_min": len(below),
        "share_below_min": share_below,
        "cold_start": len(cold),
        "cold_start_share": share_cold,
        "interactions_per_entity": {
            "min": int(counts.min()),
            "median": float(counts.median()),
            "max": int(counts.max()),
        },
    }
    shown = params.max_offending_rows
    window = f"{params.cold_start_window:.0%}"
    checks = [
        _stat_entry(
            "min_interactions",
            key,
            expectation=f"recforge:{kind}_below_min_interactions",
            expected=f"share of {kind} with < {min_count} interactions <= {params.max_share_below_min:g}",
            observed=share_below,
            success=share_below <= params.max_share_below_min,
            count=len(below),
            rows=[
                {"row": int(first_row[i]), key: i, "interactions": int(c)}
                for i, c in below.iloc[:shown].items()
            ],
            params=params,
        ),
        _stat_entry(
            "cold_start",
            key,
            expectation=f"recforge:{kind}_cold_start_share",
            expected=f"share of {kind} first seen in the last {window} of the time span "
            f"<= {params.max_cold_start_share:g}",
            observed=share_cold,
            success=share_cold <= params.max_cold_start_share,
            count=len(cold),
            rows=[
                {"row": int(first_row[i]), key: i, "first_timestamp": int(t)}
                for i, t in cold.iloc[:shown].items()
            ],
            params=params,
        ),
    ]
    return stats, checks


def _session_checks(df: pd.DataFrame, params: ValidationParams) -> tuple[dict | None, list[dict]]:
    if "session_id" not in df.columns or not df["session_id"].notna().any():
        return None, []
    sessions = df[df["session_id"].notna()]
    lengths = sessions.groupby("session_id", observed=True, sort=False).size()
    single = lengths[lengths == 1]
    share_one = len(single) / len(lengths)
    stats = {
        "count": len(lengths),
        "min": int(lengths.min()),
        "median": float(lengths.median()),
        "p95": float(lengths.quantile(0.95)),
        "max": int(lengths.max()),
        "share_length_one": share_one,
    }
    first_row = sessions.index.to_series().groupby(sessions["session_id"], observed=True).min()
    rows = [
        {"row": int(first_row[s]), "session_id": s, "user_id": df.at[int(first_row[s]), "user_id"]}
        for s in single.index[: params.max_offending_rows]
    ]
    check = _stat_entry(
        "session_length",
        "session_id",
        expectation="recforge:share_of_length_one_sessions",
        expected=f"share of length-1 sessions <= {params.max_single_event_session_share:g}",
        observed=share_one,
        success=share_one <= params.max_single_event_session_share,
        count=len(single),
        rows=rows,
        params=params,
    )
    return stats, [check]


def _stat_entry(
    check: str,
    column: str,
    *,
    expectation: str,
    expected: str,
    observed: float,
    success: bool,
    count: int,
    rows: list[dict],
    params: ValidationParams,
) -> dict:
    return {
        "check": check,
        "expectation": expectation,
        "column": column,
        "success": bool(success),
        "severity": getattr(params.severity, check),
        "expected": expected,
        "observed_value": observed,
        "unexpected_count": count,
        "offending_rows": [] if success else rows,
    }


def _rows(df: pd.DataFrame, index: list[Any], columns: list[str]) -> list[dict]:
    if not index:
        return []
    sub = df.loc[index, columns]
    return [{"row": int(i), **rec} for i, rec in zip(sub.index, sub.to_dict(orient="records"), strict=True)]


def _exception_message(info: Any) -> str | None:
    # GX reports either one {raised_exception, exception_message} dict or one per failing metric.
    if not isinstance(info, dict):
        return None
    if "raised_exception" in info:
        return info.get("exception_message") if info["raised_exception"] else None
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return value.get("exception_message")
    return None


def _jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars unwrapped, NA/NaN to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)
