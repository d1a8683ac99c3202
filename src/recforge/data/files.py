"""Users' own data: CSV or parquet tables with a column mapping -> canonical tables.

Parameters map canonical names to the file's columns (`user_id: customer`); canonical names that
are not mapped are looked up under their own name. Errors name the file, the file's own column
and the offending rows (0-based data rows: the CSV header is not a row).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recforge.data.errors import DataError
from recforge.data.media import read_media_dir
from recforge.data.schema import (
    EVENTS,
    INTERACTION_COLUMNS,
    ITEM_COLUMNS,
    coerce_interactions,
    coerce_items,
    coerce_users,
    empty_interactions,
    items_from_interactions,
    users_from_interactions,
)

logger = logging.getLogger(__name__)

# Subscripting with the tuple spells out its members, so the Literal follows the schema.
EventName = Literal[EVENTS]  # type: ignore[valid-type]

# `rating` is accepted as a name for `value` that also makes the default event "rating".
INTERACTION_KEYS = (*INTERACTION_COLUMNS, "rating")
_ROWS_HINT = "Rows count data rows from 0; the header line is not a row"


class TableFile(BaseModel):
    """One input table: where it is, how to read it, and which of its columns is which."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: Path
    format: Literal["auto", "csv", "parquet"] = "auto"
    columns: dict[str, str] = Field(default_factory=dict, description="canonical name -> column in the file")
    sep: str = Field(default=",", min_length=1)
    encoding: str = "utf-8"

    @property
    def kind(self) -> Literal["csv", "parquet"]:
        """The file format, from `format` or else from the file suffix."""
        if self.format != "auto":
            return self.format
        suffix = self.path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            return "parquet"
        if suffix in (".csv", ".tsv", ".txt"):
            return "csv"
        raise DataError(
            f"cannot tell the format from suffix {suffix!r}", source=str(self.path), hint="Set `format: csv|parquet`"
        )


class FilesConfig(BaseModel):
    """The `files` source: interactions plus optional items, users, pre-split test file and media."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interactions: TableFile
    items: TableFile | None = None
    users: TableFile | None = None
    test: TableFile | None = Field(default=None, description="pre-split test interactions -> heldout_interactions")
    default_event: EventName = "view"
    media_dir: Path | None = Field(default=None, description="root that items.image_path/audio_path are relative to")

    @model_validator(mode="after")
    def _check_columns(self) -> FilesConfig:
        allowed = {
            "interactions": set(INTERACTION_KEYS),
            "test": set(INTERACTION_KEYS),
            "items": set(ITEM_COLUMNS),
            "users": {"user_id"},
        }
        for name, keys in allowed.items():
            table: TableFile | None = getattr(self, name)
            if table is None:
                continue
            unknown = set(table.columns) - keys
            if unknown:
                raise ValueError(f"{name}.columns: unknown canonical name(s) {sorted(unknown)}; allowed {sorted(keys)}")
            if {"rating", "value"} <= set(table.columns):
                raise ValueError(f"{name}.columns: map either `rating` or `value`, not both")
        return self

    def test_table(self) -> TableFile | None:
        """The test file, inheriting from `interactions` every option it does not set itself."""
        if self.test is None:
            return None
        inherited = {k: getattr(self.test, k) for k in self.test.model_fields_set}
        return self.interactions.model_copy(update=inherited)


@dataclass(frozen=True)
class FilesData:
    """What the `files` source yields: canonical tables and the media files."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    heldout_interactions: pd.DataFrame
    media: dict[str, bytes]


def _rows(mask: pd.Series | np.ndarray) -> list[int]:
    return np.flatnonzero(np.asarray(mask)).tolist()


def _locate_undecodable(table: TableFile) -> tuple[str | None, list[int]]:
    """Column and rows holding bytes that are not valid in the declared encoding."""
    df = pd.read_csv(
        table.path, sep=table.sep, encoding=table.encoding, encoding_errors="replace", dtype=str,
        keep_default_na=False,
    )  # fmt: skip
    bad_header = [c for c in df.columns if "\ufffd" in str(c)]
    if bad_header:
        return bad_header[0], []
    hits = df.apply(lambda col: col.str.contains("\ufffd", regex=False))  # (rows, cols) bool
    if not hits.to_numpy().any():
        return None, []
    column = str(hits.columns[hits.any(axis=0).to_numpy()][0])
    return column, _rows(hits.any(axis=1))


def read_table(table: TableFile) -> pd.DataFrame:
    """The raw table as stored (CSV cells as strings so ids never turn into floats)."""
    source = str(table.path)
    if not table.path.is_file():
        raise DataError("file not found", source=source)
    if table.kind == "parquet":
        try:
            return pd.read_parquet(table.path)
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise DataError(f"cannot read parquet: {exc}", source=source) from exc
    try:
        return pd.read_csv(table.path, sep=table.sep, encoding=table.encoding, dtype=str)
    except pd.errors.EmptyDataError as exc:
        raise DataError("empty file (no header, no rows)", source=source) from exc
    except UnicodeDecodeError as exc:
        column, rows = _locate_undecodable(table)
        raise DataError(
            f"bytes that are not valid {table.encoding} ({exc.reason})",
            source=source,
            column=column,
            rows=rows,
            hint=f"Set `encoding:` for this file (e.g. latin-1) or re-save it as {table.encoding}. {_ROWS_HINT}",
        ) from exc
    except LookupError as exc:
        raise DataError(f"unknown encoding {table.encoding!r}", source=source) from exc
    except pd.errors.ParserError as exc:
        raise DataError(f"malformed CSV: {exc}", source=source, hint="Check `sep:`") from exc


def _integral_ids(s: pd.Series) -> pd.Series:
    # Parquet writers store nullable integer ids as float; "7.0" must still read as id "7".
    if pd.api.types.is_float_dtype(s):
        num = s.dropna()
        if (num == np.floor(num)).all():
            return s.astype("Int64")
    return s


def _rename(df: pd.DataFrame, table: TableFile, canonical: tuple[str, ...], keep_extra: bool) -> pd.DataFrame:
    """Canonical names for the mapped columns; unmapped canonical names are taken as they are."""
    source = str(table.path)
    absent = {k: v for k, v in table.columns.items() if v not in df.columns}
    if absent:
        key, col = next(iter(absent.items()))
        raise DataError(
            f"column {col!r} mapped to {key!r} not found; the file has {list(df.columns)}",
            source=source,
            column=col,
            hint="Fix the column mapping in parameters_ingestion.yml",
        )
    mapping = {canon: table.columns.get(canon, canon) for canon in canonical}
    out = {canon: df[col] for canon, col in mapping.items() if col in df.columns}
    if keep_extra:
        used = set(out) | set(table.columns.values())
        out.update({c: df[c] for c in df.columns if c not in used})
    frame = pd.DataFrame(out, index=df.index)
    for col in ("user_id", "item_id", "session_id"):
        if col in frame.columns:
            frame[col] = _integral_ids(frame[col])
    return frame


def _coerce(
    fn: Callable[..., pd.DataFrame], frame: pd.DataFrame, table: TableFile, **kwargs: object
) -> pd.DataFrame:
    """Run a schema coercion, reporting errors under the file's own column names."""
    try:
        return fn(frame, source=str(table.path), **kwargs)
    except DataError as exc:
        back = {canon: col for canon, col in table.columns.items()}
        if "rating" in back:
            back["value"] = back["rating"]
        column = back.get(exc.column, exc.column) if exc.column else None
        problem = exc.problem if column == exc.column else f"{exc.problem} (canonical {exc.column!r})"
        hint = f"{exc.hint}. {_ROWS_HINT}" if exc.hint and exc.rows else exc.hint or (_ROWS_HINT if exc.rows else None)
        raise DataError(problem, source=exc.source, column=column, rows=exc.rows, hint=hint) from exc


def read_interactions(table: TableFile, default_event: str = "view") -> pd.DataFrame:
    """Canonical interactions from one mapped table (also used for the pre-split test file)."""
    frame = _rename(read_table(table), table, INTERACTION_KEYS, keep_extra=False)
    if "rating" in frame.columns:
        frame = frame.rename(columns={"rating": "value"})
        default_event = "rating"
    return _coerce(coerce_interactions, frame, table, default_event=default_event)


def read_items(table: TableFile) -> pd.DataFrame:
    """Canonical items; columns not mapped to a canonical name are kept as attributes."""
    frame = _rename(read_table(table), table, tuple(ITEM_COLUMNS), keep_extra=True)
    return _coerce(coerce_items, frame, table)


def read_users(table: TableFile) -> pd.DataFrame:
    """Canonical users; columns other than the id are kept as attributes."""
    frame = _rename(read_table(table), table, ("user_id",), keep_extra=True)
    return _coerce(coerce_users, frame, table)


def _check_known(
    interactions: pd.DataFrame, table: TableFile, kind: str, known: pd.DataFrame, known_file: TableFile
) -> None:
    unknown = ~interactions[f"{kind}_id"].isin(known[f"{kind}_id"])
    if unknown.any():
        col = table.columns.get(f"{kind}_id", f"{kind}_id")
        raise DataError(
            f"{kind} ids not in the {kind}s table {str(known_file.path)!r}: "
            f"{sorted(set(interactions.loc[unknown, f'{kind}_id']))[:5]}",
            source=str(table.path),
            column=col,
            rows=_rows(unknown),
            hint=f"Add them to the {kind}s file or drop those rows. {_ROWS_HINT}",
        )


def _check_media(items: pd.DataFrame, table: TableFile | None, media: dict[str, bytes]) -> None:
    source = str(table.path) if table is not None else "items"
    for col in ("image_path", "audio_path"):
        missing = items[col].notna() & ~items[col].isin(list(media))
        if missing.any():
            raise DataError(
                f"media files not found under media_dir: {items.loc[missing, col].head(3).tolist()}",
                source=source,
                column=table.columns.get(col, col) if table is not None else col,
                rows=_rows(missing),
                hint="Paths are relative to `media_dir`",
            )


def load_files(config: FilesConfig) -> FilesData:
    """Read and validate every configured table; raw files are only read, never written."""
    interactions = read_interactions(config.interactions, config.default_event)
    test = config.test_table()
    heldout = read_interactions(test, config.default_event) if test is not None else empty_interactions()
    both = [(interactions, config.interactions)] + ([(heldout, test)] if test is not None else [])
    everything = pd.concat([frame for frame, _ in both], ignore_index=True)

    if config.items is not None:
        items = read_items(config.items)
        for frame, table in both:
            _check_known(frame, table, "item", items, config.items)
    else:
        items = items_from_interactions(everything)
    if config.users is not None:
        users = read_users(config.users)
        for frame, table in both:
            _check_known(frame, table, "user", users, config.users)
    else:
        users = users_from_interactions(everything)

    media = read_media_dir(config.media_dir) if config.media_dir is not None else {}
    _check_media(items, config.items, media)
    logger.info(
        "files source: %d interactions, %d held out, %d items, %d users, %d media files",
        len(interactions), len(heldout), len(items), len(users), len(media),
    )  # fmt: skip
    return FilesData(interactions, items, users, heldout, media)
