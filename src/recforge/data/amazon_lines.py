"""The lines of Amazon's review and metadata files: JSON, or else a Python dict literal (read with
`ast.literal_eval`, never `eval`), optionally gzipped; bad lines named by their 1-based line
numbers or skipped and counted (`BadLines`); and the field values the adapter cleans (prices,
text, category paths, image URLs). `data.amazon` builds the canonical tables from them.
"""

from __future__ import annotations

import ast
import gzip
import html
import json
import math
import re
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from recforge.data.errors import DataError

logger = logging.getLogger(__name__)

# The asin of a meta line without parsing it, to skip the many items that have no review.
_ASIN = re.compile(r"""["']asin["']\s*:\s*["']([^"'\\]+)["']""")
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_AMOUNT = re.compile(r"^\$?\s*((?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)$")
_SHOWN_SKIPS = 20
LINES_HINT = "Rows are 1-based line numbers in the file"
OnBadLines = Literal["error", "skip"]


# ----------------------------------------------------------------------------- values
def parse_price(value: object) -> float:
    """A price in dollars from a number or text ("$12.99", "$1,299.00", "$5.99 - $12.99": the low
    end); NaN when absent, negative or not a price."""
    if value is None or isinstance(value, bool):
        return math.nan
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) and value >= 0 else math.nan
    if not isinstance(value, str):
        return math.nan
    parts = re.split(r"\s*[-\u2013]\s*", value.strip())
    if not 1 <= len(parts) <= 2:
        return math.nan
    amounts = [_AMOUNT.match(p) for p in parts]
    if not all(amounts):
        return math.nan
    return min(float(m.group(1).replace(",", "")) for m in amounts if m)


def clean_text(value: object) -> str | None:
    """Text without HTML entities, tags or runs of whitespace; lists are joined; None when empty."""
    if isinstance(value, list | tuple):
        value = " ".join(t for t in (clean_text(v) for v in value) if t)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = _SPACE.sub(" ", _TAG.sub(" ", html.unescape(str(value)))).strip()
    return text or None


def category_paths(record: dict[str, Any]) -> list[str]:
    """The record's category paths as "a/b/c" strings (2014 `categories`: several; 2018 `category`: one)."""
    if isinstance(record.get("categories"), list):
        raw = [p for p in record["categories"] if isinstance(p, list | tuple)]
    elif isinstance(record.get("category"), list):
        raw = [record["category"]]
    else:
        raw = []
    paths = []
    for path in raw:
        names = [n.replace("/", "-") for n in (clean_text(part) for part in path) if n]
        if names:
            paths.append("/".join(names))
    return paths


def image_url(record: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """The first non-empty URL under `keys` (2014: a string; 2018: lists of strings)."""
    for key in keys:
        value = record.get(key)
        urls = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        for url in urls:
            if isinstance(url, str) and url.strip():
                return url.strip()
    return None


# ----------------------------------------------------------------------------- lines
def _open_lines(path: Path) -> Iterator[bytes]:
    """The file's lines as bytes, gunzipped when it starts with gzip's magic bytes."""
    with open(path, "rb") as probe:
        gz = probe.read(2) == b"\x1f\x8b"
    with gzip.open(path, "rb") if gz else open(path, "rb") as fh:
        line_no = 0
        try:
            for line_no, line in enumerate(fh, start=1):  # noqa: B007 - read after the loop on error
                yield line
        except (OSError, EOFError) as exc:  # a truncated or corrupt gzip stream
            raise DataError(f"cannot read past line {line_no}: {exc}", source=str(path), rows=[line_no + 1],
                            hint="The download may be incomplete; fetch the file again") from exc  # fmt: skip


def parse_record(line: str) -> dict[str, Any] | None:
    """A dict from one line of JSON or one Python dict literal (`ast.literal_eval`), else None."""
    try:
        obj = json.loads(line)
    except ValueError:
        try:
            obj = ast.literal_eval(line)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    return obj if isinstance(obj, dict) else None


class BadLines:
    """Bad lines of one file by reason; `finish` raises or logs them per `on_bad_lines`."""

    def __init__(self, path: Path, on_bad_lines: OnBadLines) -> None:
        self.path, self.on_bad_lines = path, on_bad_lines
        self.by_reason: dict[str, list[int]] = {}

    def add(self, reason: str, line_no: int) -> None:
        self.by_reason.setdefault(reason, []).append(line_no)

    def finish(self, skipped: dict[str, dict[str, Any]]) -> None:
        if not self.by_reason:
            return
        lines = sorted(n for ns in self.by_reason.values() for n in ns)
        what = "; ".join(f"{len(ns)} {reason}" for reason, ns in self.by_reason.items())
        if self.on_bad_lines == "error":
            missing = [r.removeprefix("without key ") for r in self.by_reason if r.startswith("without key ")]
            raise DataError(
                f"bad lines: {what}",
                source=str(self.path),
                column=missing[0] if missing else None,
                rows=lines,
                hint=f"{LINES_HINT}; `on_bad_lines: skip` leaves such lines out",
            )
        skipped[str(self.path)] = {"count": len(lines), "examples": lines[:_SHOWN_SKIPS], "reasons": what}
        logger.warning("%s: skipped %d bad line(s) (%s), e.g. lines %s", self.path, len(lines), what, lines[:5])


def records(
    path: Path, bad: BadLines, required: tuple[str, ...], wanted: set[str] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, record) for every good line; bad ones go to `bad`.

    With `wanted`, a line whose asin is visible without parsing and not in it is passed over.
    """
    for line_no, raw in enumerate(_open_lines(path), start=1):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            bad.add("not UTF-8", line_no)
            continue
        if not text:
            continue
        if wanted is not None and (seen := _ASIN.findall(text)) and wanted.isdisjoint(seen):
            continue
        record = parse_record(text)
        if record is None:
            bad.add("not JSON or a Python dict literal", line_no)
            continue
        absent = next((k for k in required if record.get(k) in (None, "")), None)
        if absent is not None:
            bad.add(f"without key {absent}", line_no)
            continue
        yield line_no, record
