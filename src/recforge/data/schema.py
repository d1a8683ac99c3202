"""The canonical tables every source adapter produces.

`interactions`: user_id, item_id (string), timestamp (int64 unix seconds, UTC), event (category),
value (float64: the rating for explicit data, otherwise a weight), session_id (nullable string).
`items`: item_id, title, text, category ("a/b" path), price, image_path, audio_path, + attributes.
`users`: user_id + attribute columns.

`coerce_*` turn a parsed frame into the canonical dtypes and raise `DataError` naming the source,
column and offending rows when that is impossible; they never modify their input.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from recforge.data.errors import DataError

STRING = pd.StringDtype()

EVENTS: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "rating")
EVENT_DTYPE = pd.CategoricalDtype(categories=list(EVENTS))

INTERACTION_COLUMNS: dict[str, object] = {
    "user_id": STRING,
    "item_id": STRING,
    "timestamp": np.dtype("int64"),
    "event": EVENT_DTYPE,
    "value": np.dtype("float64"),
    "session_id": STRING,
}
ITEM_COLUMNS: dict[str, object] = {
    "item_id": STRING,
    "title": STRING,
    "text": STRING,
    "category": STRING,
    "price": np.dtype("float64"),
    "image_path": STRING,
    "audio_path": STRING,
}
USER_COLUMNS: dict[str, object] = {"user_id": STRING}

# Columns that may hold nulls; every other canonical column must be fully populated.
NULLABLE = {"session_id", "text", "category", "price", "image_path", "audio_path"}

# 1990-01-01 .. 2100-01-01 (MovieLens 100K is from 1997): outside is a unit mix-up (ms) or garbage.
MIN_TIMESTAMP = 631_152_000
MAX_TIMESTAMP = 4_102_444_800


def empty_interactions() -> pd.DataFrame:
    """An interactions table with no rows and the canonical dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in INTERACTION_COLUMNS.items()})


def empty_items() -> pd.DataFrame:
    """An items table with no rows and the canonical dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in ITEM_COLUMNS.items()})


def empty_users() -> pd.DataFrame:
    """A users table with no rows and the canonical dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in USER_COLUMNS.items()})


def _bad_rows(mask: pd.Series) -> list[int]:
    return [int(i) for i in np.flatnonzero(mask.to_numpy())]


def require_columns(
    df: pd.DataFrame,
    required: list[str],
    source: str,
    hint: str = "Map your columns to the canonical names in the source's parameters",
) -> None:
    """Raise `DataError` naming the file and the first missing column unless `df` has `required`."""
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"missing required column(s) {missing}; found {list(df.columns)}",
            source=source,
            column=missing[0],
            hint=hint,
        )


def _to_string(df: pd.DataFrame, column: str, source: str, nullable: bool) -> pd.Series:
    s = df[column]
    out = s.astype(STRING)
    out = out.where(~out.isna(), pd.NA)
    if not nullable:
        bad = out.isna() | (out.str.strip() == "")
        if bad.any():
            raise DataError("null or empty ids", source=source, column=column, rows=_bad_rows(bad))
    return out


def _to_float(df: pd.DataFrame, column: str, source: str, nullable: bool) -> pd.Series:
    raw = df[column]
    num = pd.to_numeric(raw, errors="coerce").astype("float64")
    bad = num.isna() & raw.notna()
    if bad.any():
        raise DataError("values that are not numbers", source=source, column=column, rows=_bad_rows(bad))
    if not nullable and num.isna().any():
        raise DataError("missing values", source=source, column=column, rows=_bad_rows(num.isna()))
    return num


def coerce_timestamps(raw: pd.Series, source: str, column: str = "timestamp") -> pd.Series:
    """Unix seconds (int64, UTC) from integer seconds, numeric strings or ISO-8601 datetimes."""
    if raw.isna().any():
        raise DataError("missing timestamps", source=source, column=column, rows=_bad_rows(raw.isna()))
    if pd.api.types.is_datetime64_any_dtype(raw):
        dt = raw.dt.tz_localize("UTC") if raw.dt.tz is None else raw.dt.tz_convert("UTC")
        return (dt.astype("datetime64[s, UTC]").astype("int64")).astype("int64")
    num = pd.to_numeric(raw, errors="coerce")
    if num.notna().all():
        if (num != np.floor(num)).any():
            bad = num != np.floor(num)
            raise DataError("fractional unix timestamps", source=source, column=column, rows=_bad_rows(bad))
        out = num.astype("int64")
    else:
        parsed = pd.to_datetime(raw.astype(str), errors="coerce", utc=True, format="mixed")
        bad = parsed.isna()
        if bad.any():
            raise DataError(
                "unparsable timestamps (expected unix seconds or ISO-8601)",
                source=source,
                column=column,
                rows=_bad_rows(bad),
            )
        out = parsed.astype("datetime64[s, UTC]").astype("int64").astype("int64")
    implausible = (out < MIN_TIMESTAMP) | (out > MAX_TIMESTAMP)
    if implausible.any():
        raise DataError(
            "timestamps outside 1990..2100 (milliseconds instead of seconds?)",
            source=source,
            column=column,
            rows=_bad_rows(implausible),
        )
    return out.reset_index(drop=True)


def coerce_interactions(df: pd.DataFrame, source: str, default_event: str = "view") -> pd.DataFrame:
    """Canonical interactions from a parsed frame whose columns already carry canonical names.

    `event` and `value` and `session_id` are optional (defaults: `default_event`, 1.0, null).
    """
    if len(df) == 0:
        raise DataError("no interactions (empty file)", source=source)
    require_columns(df, ["user_id", "item_id", "timestamp"], source)
    df = df.reset_index(drop=True)
    out = pd.DataFrame(
        {
            "user_id": _to_string(df, "user_id", source, nullable=False),
            "item_id": _to_string(df, "item_id", source, nullable=False),
            "timestamp": coerce_timestamps(df["timestamp"], source),
        }
    )
    if "event" in df.columns:
        ev = df["event"].astype(STRING).str.strip().str.lower()
        unknown = ~ev.isin(EVENTS)
        if unknown.any():
            raise DataError(
                f"unknown event types {sorted(set(ev[unknown].dropna()))[:5]}; allowed {list(EVENTS)}",
                source=source,
                column="event",
                rows=_bad_rows(unknown),
            )
        out["event"] = ev.astype(EVENT_DTYPE)
    else:
        if default_event not in EVENTS:
            raise DataError(f"default event {default_event!r} is not one of {list(EVENTS)}", source=source)
        out["event"] = pd.Categorical([default_event] * len(df), dtype=EVENT_DTYPE)
    out["value"] = _to_float(df, "value", source, nullable=False) if "value" in df.columns else 1.0
    out["value"] = out["value"].astype("float64")
    if "session_id" in df.columns:
        out["session_id"] = _to_string(df, "session_id", source, nullable=True)
    else:
        out["session_id"] = pd.Series(pd.NA, index=out.index, dtype=STRING)
    return out[list(INTERACTION_COLUMNS)]


def coerce_items(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Canonical items; unknown canonical columns are filled with nulls, extra columns kept."""
    require_columns(df, ["item_id"], source)
    df = df.reset_index(drop=True)
    out = pd.DataFrame({"item_id": _to_string(df, "item_id", source, nullable=False)})
    dup = out["item_id"].duplicated(keep=False)
    if dup.any():
        raise DataError("duplicate item ids", source=source, column="item_id", rows=_bad_rows(dup))
    out["title"] = (
        _to_string(df, "title", source, nullable=True) if "title" in df.columns else out["item_id"]
    ).fillna(out["item_id"])
    for col in ("text", "category", "image_path", "audio_path"):
        out[col] = (
            _to_string(df, col, source, nullable=True)
            if col in df.columns
            else pd.Series(pd.NA, index=out.index, dtype=STRING)
        )
    out["price"] = (
        _to_float(df, "price", source, nullable=True) if "price" in df.columns else np.nan
    )
    out["price"] = out["price"].astype("float64")
    extra = [c for c in df.columns if c not in ITEM_COLUMNS]
    for c in extra:
        out[c] = df[c].to_numpy()
    return out


def coerce_users(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Canonical users: user_id plus whatever attribute columns the source has."""
    require_columns(df, ["user_id"], source)
    df = df.reset_index(drop=True)
    out = pd.DataFrame({"user_id": _to_string(df, "user_id", source, nullable=False)})
    dup = out["user_id"].duplicated(keep=False)
    if dup.any():
        raise DataError("duplicate user ids", source=source, column="user_id", rows=_bad_rows(dup))
    for c in df.columns:
        if c != "user_id":
            out[c] = df[c].to_numpy()
    return out


def users_from_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    """A users table with no attributes, for sources that have none."""
    ids = pd.unique(interactions["user_id"])
    return pd.DataFrame({"user_id": pd.array(sorted(ids), dtype=STRING)})


def items_from_interactions(interactions: pd.DataFrame) -> pd.DataFrame:
    """An items table with only ids (title = id), for sources without item metadata."""
    ids = pd.array(sorted(pd.unique(interactions["item_id"])), dtype=STRING)
    return coerce_items(pd.DataFrame({"item_id": ids}), source="interactions")
