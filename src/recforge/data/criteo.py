"""Criteo display-advertising logs -> one parquet file, streamed in chunks with bounded memory.

Criteo Labs, Display Advertising Challenge (Kaggle 2014). Two input layouts are read:

- ``tsv``: the Kaggle ``train.txt``: tab-separated, no header, 40 fields per line: ``label``
  (0/1), ``I1..I13`` (integer counts, empty = missing), ``C1..C26`` (categoricals, hashed by
  Criteo to 8 hex characters, empty = missing).
- ``csv``: the same 40 columns comma-separated under a header line ``label,I1,...,C26`` (the
  layout of Criteo's published samples, which also write integers as ``260.0``).

Neither layout quotes fields (Criteo fields never contain the separator), so a line's field count
is its separator count + 1; it is checked for every line before parsing, which is how bad lines are
named. Line numbers in errors are 1-based and count every physical line of the file, the CSV header
included (line 1), so they match ``sed -n 'Np'`` and editors.

The parquet file (one row group per ``chunk_rows`` lines):

- ``label``: int8, never null.
- ``I1..I13``: int64, null = missing. Not float32: float32 is exact only up to 2**24 and I5 goes
  above 2.3e7. ``iter_criteo_batches`` hands them to training as float32 with NaN for missing.
- ``C1..C26``: string, null = missing, Criteo's 8 hex characters stored as they are (not
  checked: any token is a usable category). Hashing or vocabularies belong to the features step,
  which fits them on the training split.

It is written to a temporary file beside the target and renamed over it only once the whole input
has converted, so a failure leaves no half-written parquet and an earlier output stays as it was.
The raw file is only read.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice, repeat
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from recforge.data.errors import DataError

logger = logging.getLogger(__name__)

LABEL = "label"
INT_COLUMNS = tuple(f"I{i}" for i in range(1, 14))
CAT_COLUMNS = tuple(f"C{i}" for i in range(1, 27))
COLUMNS = (LABEL, *INT_COLUMNS, *CAT_COLUMNS)
METADATA_KEY = "recforge.criteo"
CRITEO_URL = "https://www.kaggle.com/c/criteo-display-ad-challenge (dac.tar.gz holds train.txt)"
SCHEMA = pa.schema(
    [pa.field(LABEL, pa.int8(), nullable=False)]
    + [pa.field(c, pa.int64()) for c in INT_COLUMNS]
    + [pa.field(c, pa.string()) for c in CAT_COLUMNS]
)

# Up to 18 digits fits int64; the optional ".0" is how the CSV samples write integers.
_INT_PATTERN = r"^-?[0-9]{1,18}(\.0*)?$"
_LINES_HINT = "Rows are 1-based line numbers in the file (a CSV header is line 1)"
_SHOWN_SKIPS = 20

Format = Literal["auto", "tsv", "csv"]
OnBadRows = Literal["error", "skip"]


class CriteoConfig(BaseModel):
    """Where the Criteo file is, where its parquet goes and how bad lines are handled."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    raw_path: Path = Path("data/01_raw/criteo/train.txt")
    out_path: Path = Path("data/02_intermediate/criteo.parquet")
    fmt: Format = "auto"
    chunk_rows: int = Field(default=250_000, ge=1, description="lines per chunk and per parquet row group")
    on_bad_rows: OnBadRows = "error"


@dataclass(frozen=True)
class CriteoConversion:
    """What ``convert_criteo`` wrote; the same facts are in the parquet's ``recforge.criteo`` metadata."""

    path: Path
    rows: int
    row_groups: int
    fmt: Literal["tsv", "csv"]
    skipped_lines: int
    skipped_examples: tuple[int, ...]  # the first line numbers skipped (at most 20)


def _sniff_format(path: Path) -> Literal["tsv", "csv"]:
    with open(path, "rb") as f:
        first = f.readline(1 << 16)
    if b"\t" in first:
        return "tsv"
    if first.split(b",", 1)[0].strip() == LABEL.encode():
        return "csv"
    raise DataError(
        "cannot tell the format: the first line has no tab (tsv) and does not start with a `label,` header (csv)",
        source=str(path),
        rows=[1],
        hint="Set fmt to 'tsv' or 'csv'",
    )


def _check_header(line: bytes, source: str) -> None:
    names = tuple(n.strip() for n in line.decode("utf-8", errors="replace").rstrip("\r\n").split(","))
    if names != COLUMNS:
        wrong = next((i for i, (a, b) in enumerate(zip(names, COLUMNS, strict=False)) if a != b), min(len(names), 40))
        got = names[wrong] if wrong < len(names) else "<missing>"
        expected = COLUMNS[wrong] if wrong < len(COLUMNS) else "<no more columns>"
        raise DataError(
            f"CSV header field {wrong + 1} is {got!r}, expected {expected!r} (the header must be label,I1..I13,C1..C26)",
            source=source,
            column=got,
            rows=[1],
        )


def _chunks(f: BinaryIO, chunk_rows: int) -> Iterator[list[bytes]]:
    while lines := list(islice(f, chunk_rows)):
        yield lines


def _parse(lines: list[bytes], sep: str, numbers: np.ndarray, source: str) -> pa.Table:
    block = b"".join(lines)
    if not block.endswith(b"\n"):
        block += b"\n"  # the file's last line may lack its newline
    table = pa_csv.read_csv(
        pa.py_buffer(block),
        read_options=pa_csv.ReadOptions(column_names=list(COLUMNS)),
        parse_options=pa_csv.ParseOptions(delimiter=sep, quote_char=False, ignore_empty_lines=False),
        convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(COLUMNS, pa.string()), null_values=[""], strings_can_be_null=True
        ),
    )
    if table.num_rows != len(lines):  # pyarrow also ends a row at a lone "\r"
        raise DataError(
            f"{len(lines)} lines parsed into {table.num_rows} rows: a carriage return inside a line?",
            source=source,
            rows=[int(numbers[0]), int(numbers[-1])],
            hint="Rows are the first and last line of the chunk that failed",
        )
    return table


def _typed(table: pa.Table, numbers: np.ndarray, source: str) -> pa.Table:
    """The parsed strings as ``SCHEMA``; ``numbers`` holds each row's line number for errors."""
    label = table.column(LABEL)
    bad = ~pc.fill_null(pc.is_in(label, value_set=pa.array(["0", "1"])), False).to_numpy(zero_copy_only=False)
    if bad.any():
        raise DataError("label must be 0 or 1", source=source, column=LABEL, rows=numbers[bad].tolist(), hint=_LINES_HINT)
    out: dict[str, Any] = {LABEL: pc.cast(label, pa.int8())}
    for col in INT_COLUMNS:
        out[col] = _integers(table.column(col), col, numbers, source)
    for col in CAT_COLUMNS:
        out[col] = table.column(col)
    return pa.table(out, schema=SCHEMA)


def _integers(raw: pa.ChunkedArray, column: str, numbers: np.ndarray, source: str) -> pa.ChunkedArray:
    try:
        return pc.cast(raw, pa.int64())  # train.txt: plain integers, the fast path
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    bad = ~pc.fill_null(pc.match_substring_regex(raw, _INT_PATTERN), True).to_numpy(zero_copy_only=False)
    if bad.any():
        problem = "values that are not integers (empty means missing)"
        raise DataError(problem, source=source, column=column, rows=numbers[bad].tolist(), hint=_LINES_HINT)
    return pc.cast(pc.replace_substring_regex(raw, r"\.0*$", ""), pa.int64())


def convert_criteo(
    path: str | Path,
    out_path: str | Path,
    *,
    fmt: Format = "auto",
    chunk_rows: int = 250_000,
    on_bad_rows: OnBadRows = "error",
) -> CriteoConversion:
    """Stream a Criteo file into the parquet file ``out_path``, one row group per ``chunk_rows`` lines.

    Memory is bounded by the chunk, not the file. Lines with the wrong number of fields raise a
    ``DataError`` naming their line numbers, or with ``on_bad_rows="skip"`` are left out, counted
    and logged. A label other than 0/1 or a non-integer in I1..I13 always raises. On any failure ``out_path`` is left as it was.
    """
    path, out_path = Path(path), Path(out_path)
    source = str(path)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if not path.is_file():
        raise DataError(
            "Criteo file not found",
            source=source,
            hint=f"Get the Display Advertising Challenge data from {CRITEO_URL}, unpack it and put train.txt at {path}",
        )
    if out_path.resolve() == path.resolve():
        raise ValueError(f"out_path {out_path} is the raw file itself")
    kind = _sniff_format(path) if fmt == "auto" else fmt
    sep = "\t" if kind == "tsv" else ","
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.parent / f".{out_path.name}.tmp-{uuid.uuid4().hex[:8]}"
    rows = groups = skipped = 0
    examples: list[int] = []
    try:
        with open(path, "rb") as f, pq.ParquetWriter(tmp, SCHEMA) as writer:
            next_line = 1
            if kind == "csv":
                _check_header(f.readline(), source)
                next_line = 2
            for lines in _chunks(f, chunk_rows):
                numbers = np.arange(next_line, next_line + len(lines))
                next_line += len(lines)
                fields = np.fromiter(map(bytes.count, lines, repeat(sep.encode())), np.int64, len(lines)) + 1
                wrong = fields != len(COLUMNS)
                if wrong.any():
                    if on_bad_rows == "error":
                        raise DataError(
                            f"lines with the wrong number of fields (expected {len(COLUMNS)} separated by {sep!r})",
                            source=source,
                            rows=numbers[wrong].tolist(),
                            hint=f"{_LINES_HINT}; on_bad_rows: skip leaves such lines out",
                        )
                    skipped += int(wrong.sum())
                    examples.extend(numbers[wrong][: _SHOWN_SKIPS - len(examples)].tolist())
                    lines = [line for line, w in zip(lines, wrong, strict=True) if not w]
                    numbers = numbers[~wrong]
                    if not lines:
                        continue
                table = _typed(_parse(lines, sep, numbers, source), numbers, source)
                writer.write_table(table, row_group_size=len(lines))
                rows += table.num_rows
                groups += 1
            if rows == 0:
                raise DataError(f"no data lines ({skipped} skipped)", source=source)
            meta = {"source": path.name, "fmt": kind, "rows": rows, "skipped_lines": skipped, "skipped_examples": examples}
            writer.add_key_value_metadata({METADATA_KEY: json.dumps(meta)})
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if skipped:
        logger.warning("%s: skipped %d line(s) with the wrong number of fields, e.g. lines %s", source, skipped, examples)
    logger.info("%s -> %s: %d rows in %d row groups, %d line(s) skipped", source, out_path, rows, groups, skipped)
    return CriteoConversion(out_path, rows, groups, kind, skipped, tuple(examples))


def convert_criteo_config(config: CriteoConfig) -> CriteoConversion:
    """``convert_criteo`` as configured by a ``CriteoConfig`` (an ``ingestion.criteo`` block)."""
    return convert_criteo(
        config.raw_path, config.out_path, fmt=config.fmt, chunk_rows=config.chunk_rows, on_bad_rows=config.on_bad_rows
    )


def read_criteo_metadata(parquet_path: str | Path) -> dict[str, Any]:
    """The conversion's facts (source file name, fmt, rows, skipped_lines, skipped_examples)."""
    metadata = pq.ParquetFile(parquet_path).metadata.metadata or {}
    return json.loads(metadata.get(METADATA_KEY.encode(), b"{}"))


def iter_criteo_batches(
    parquet_path: str | Path, batch_rows: int, columns: Sequence[str] | None = None
) -> Iterator[dict[str, np.ndarray]]:
    """Batches of at most ``batch_rows`` rows in file order, as numpy arrays; never the whole table.

    ``label`` is int8, ``I1..I13`` float32 with NaN for missing, ``C1..C26`` object arrays of str
    with None for missing. Only ``columns`` (default: all) are read.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    pf = pq.ParquetFile(parquet_path)
    names = list(columns) if columns is not None else pf.schema_arrow.names
    unknown = [c for c in names if c not in pf.schema_arrow.names]
    if unknown:
        raise DataError(f"unknown column(s) {unknown}; has {pf.schema_arrow.names}", source=str(parquet_path), column=unknown[0])
    for batch in pf.iter_batches(batch_size=batch_rows, columns=names):
        out: dict[str, np.ndarray] = {}
        for name, col in zip(batch.schema.names, batch.columns, strict=True):
            if name in INT_COLUMNS:
                col = pc.cast(col, pa.float32())
            out[name] = col.to_numpy(zero_copy_only=False)
        yield out
