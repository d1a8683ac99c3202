"""Criteo ingestion from fixtures in both real layouts: chunking, bad lines, atomic writes, batches."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from recforge.data.criteo import (
    CAT_COLUMNS,
    COLUMNS,
    INT_COLUMNS,
    CriteoConfig,
    convert_criteo,
    convert_criteo_config,
    iter_criteo_batches,
    read_criteo_metadata,
)
from recforge.data.errors import DataError

# label, I1..I13, C1..C26 as the file holds them ("" = missing).
ROW_A = ["0", "", "3", "260", "", "17668", "", "", "33", "", "", "", "0", ""] + [
    "05db9164", "08d6d899", "9143c832", "f56b7dd5", "25c83c98", "7e0ccccf", "df5c2d18", "0b153874", "a73ee510",
    "8f48ce11", "a7b606c4", "ae1bb660", "eae197fd", "b28479f6", "bfef54b3", "bad5ee18", "e5ba7672", "87c6f83c",
    "", "", "0429f84b", "", "3a171ecb", "c0d61a5c", "", "",
]  # fmt: skip
ROW_B = ["1", "0", "-1", "19", "35", "30251", "247", "1", "35", "160", "", "1", "", "35"] + [
    "68fd1e64", "04e09220", "95e13fd4", "a1e6a194", "25c83c98", "fe6b92e5", "f819e175", "062b5529", "a73ee510",
    "ab9456b4", "6153cf57", "8882c6cd", "769a1844", "b28479f6", "69f825dd", "23056e4f", "d4bb7bd8", "6fc84bfb",
    "21ddcdc9", "b1252a9d", "5155d8a3", "", "be7c41b4", "ded4aac9", "001f3601", "92c878de",
]  # fmt: skip


def _rows(n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        ints = [str(int(v)) if rng.random() > 0.2 else "" for v in rng.integers(-2, 100_000, 13)]
        cats = [f"{int(v):08x}" if rng.random() > 0.15 else "" for v in rng.integers(0, 2**32, 26, dtype=np.uint64)]
        rows.append([str(int(rng.integers(0, 2))), *ints, *cats])
    return rows


def write_tsv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("".join("\t".join(r) + "\n" for r in rows))
    return path


def write_csv(path: Path, rows: list[list[str]], float_ints: bool = True) -> Path:
    """The sample's layout: header, commas, integers written as `260.0`."""
    out = [",".join(COLUMNS)]
    for r in rows:
        ints = [f"{v}.0" if (v and float_ints) else v for v in r[1:14]]
        out.append(",".join([r[0], *ints, *r[14:]]))
    path.write_text("\n".join(out) + "\n")
    return path


def expected_values(rows: list[list[str]]) -> dict[str, list]:
    cols = list(zip(*rows, strict=True))
    out: dict[str, list] = {"label": [int(v) for v in cols[0]]}
    for i, c in enumerate(INT_COLUMNS, start=1):
        out[c] = [int(v) if v else None for v in cols[i]]
    for i, c in enumerate(CAT_COLUMNS, start=14):
        out[c] = [v or None for v in cols[i]]
    return out


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


@pytest.mark.parametrize("layout", ["tsv", "csv"])
def test_round_trip_values_missing_ints_and_empty_categoricals(tmp_path, layout):
    rows = [ROW_A, ROW_B, *_rows(30)]
    raw = (write_tsv if layout == "tsv" else write_csv)(tmp_path / f"train.{layout}", rows)
    before = raw.read_bytes()
    result = convert_criteo(raw, tmp_path / "criteo.parquet")
    assert result.fmt == layout and result.rows == len(rows) and result.skipped_lines == 0
    table = pq.read_table(result.path)
    assert table.schema.names == list(COLUMNS)
    assert str(table.schema.field("label").type) == "int8"
    assert all(str(table.schema.field(c).type) == "int64" for c in INT_COLUMNS)
    assert all(str(table.schema.field(c).type) == "string" for c in CAT_COLUMNS)
    assert table.to_pydict() == expected_values(rows)
    assert table.column("I1")[0].as_py() is None and table.column("I12")[0].as_py() == 0  # missing is not 0
    assert raw.read_bytes() == before
    meta = read_criteo_metadata(result.path)
    assert meta == {"source": raw.name, "fmt": layout, "rows": len(rows), "skipped_lines": 0, "skipped_examples": []}


def test_large_integers_are_exact(tmp_path):
    row = list(ROW_B)
    row[5] = "23159456"  # above 2**24: float32 would round it
    table = pq.read_table(convert_criteo(write_tsv(tmp_path / "train.txt", [row]), tmp_path / "c.parquet").path)
    assert table.column("I5").to_pylist() == [23159456]


def test_crlf_and_no_final_newline(tmp_path):
    raw = tmp_path / "train.txt"
    raw.write_bytes(("\t".join(ROW_A) + "\r\n" + "\t".join(ROW_B)).encode())
    table = pq.read_table(convert_criteo(raw, tmp_path / "c.parquet").path)
    assert table.to_pydict() == expected_values([ROW_A, ROW_B])


def test_one_row_group_per_chunk_gives_the_same_table(tmp_path):
    rows = _rows(103, seed=1)
    raw = write_tsv(tmp_path / "train.txt", rows)
    one = convert_criteo(raw, tmp_path / "one.parquet", chunk_rows=1000)
    many = convert_criteo(raw, tmp_path / "many.parquet", chunk_rows=10)
    assert one.row_groups == 1 and many.row_groups == 11
    meta = pq.ParquetFile(many.path).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [10] * 10 + [3]
    assert pq.read_table(many.path).equals(pq.read_table(one.path))


def _with_bad_lines(tmp_path: Path) -> tuple[Path, list[list[str]]]:
    """12 rows where line 5 lacks a field, line 8 is blank and line 10 has one too many."""
    rows = _rows(12, seed=2)
    lines = ["\t".join(r) for r in rows]
    lines[4] = "\t".join(rows[4][:-1])
    lines[7] = ""
    lines[9] = "\t".join([*rows[9], "extra"])
    raw = tmp_path / "train.txt"
    raw.write_text("\n".join(lines) + "\n")
    return raw, [r for i, r in enumerate(rows) if i not in (4, 7, 9)]


def test_wrong_field_count_names_file_and_line_numbers(tmp_path):
    raw, _ = _with_bad_lines(tmp_path)
    with pytest.raises(DataError, match=r"wrong number of fields.*\[rows: 5, 8, 10\]") as err:
        convert_criteo(raw, tmp_path / "c.parquet", chunk_rows=100)
    assert err.value.source == str(raw) and err.value.rows == [5, 8, 10]
    assert "line numbers" in str(err.value) and "on_bad_rows: skip" in str(err.value)
    with pytest.raises(DataError) as err:  # the first chunk with a bad line stops the run
        convert_criteo(raw, tmp_path / "c.parquet", chunk_rows=5)
    assert err.value.rows == [5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.txt"]  # no parquet, no temp file


def test_skip_leaves_bad_lines_out_counts_and_logs_them(tmp_path, caplog):
    raw, kept = _with_bad_lines(tmp_path)
    before = raw.read_bytes()
    with caplog.at_level(logging.WARNING, logger="recforge.data.criteo"):
        result = convert_criteo(raw, tmp_path / "c.parquet", chunk_rows=5, on_bad_rows="skip")
    assert result.rows == 9 and result.skipped_lines == 3 and result.skipped_examples == (5, 8, 10)
    assert pq.read_table(result.path).to_pydict() == expected_values(kept)
    meta = read_criteo_metadata(result.path)
    assert meta["skipped_lines"] == 3 and meta["skipped_examples"] == [5, 8, 10] and meta["rows"] == 9
    assert any("skipped 3 line(s)" in r.getMessage() and str(raw) in r.getMessage() for r in caplog.records)
    assert raw.read_bytes() == before


def test_skip_is_a_config_option(tmp_path):
    raw, _ = _with_bad_lines(tmp_path)
    config = CriteoConfig.model_validate(
        {"raw_path": str(raw), "out_path": str(tmp_path / "02" / "c.parquet"), "on_bad_rows": "skip", "chunk_rows": 4}
    )
    result = convert_criteo_config(config)
    assert result.path == tmp_path / "02" / "c.parquet" and result.skipped_lines == 3 and result.row_groups == 3
    with pytest.raises(ValueError, match="on_bad_rows"):
        CriteoConfig.model_validate({"on_bad_rows": "ignore"})


def test_a_bad_line_with_the_right_field_count_is_not_skipped(tmp_path):
    rows = _rows(6, seed=4)
    rows[3][0] = "2"
    with pytest.raises(DataError, match="label must be 0 or 1") as err:
        convert_criteo(write_tsv(tmp_path / "train.txt", rows), tmp_path / "c.parquet", on_bad_rows="skip")
    assert err.value.column == "label" and err.value.rows == [4]


@pytest.mark.parametrize("label", ["2", "", "-1", "1.0", "yes"])
def test_label_not_0_or_1_names_lines(tmp_path, label):
    rows = _rows(6, seed=4)
    rows[1][0] = label
    rows[5][0] = label
    with pytest.raises(DataError, match="label must be 0 or 1") as err:
        convert_criteo(write_tsv(tmp_path / "train.txt", rows), tmp_path / "c.parquet")
    assert err.value.column == "label" and err.value.rows == [2, 6] and "train.txt" in str(err.value)


def test_non_integer_i5_names_column_and_lines_csv_header_is_line_1(tmp_path):
    rows = _rows(8, seed=3)
    rows[2][5] = "12x"
    rows[6][5] = "3.5"
    raw = write_csv(tmp_path / "sample.csv", rows)
    assert _lines(raw)[3].split(",")[5] == "12x.0"  # data row 2 is line 4
    with pytest.raises(DataError) as err:
        convert_criteo(raw, tmp_path / "c.parquet", chunk_rows=3)
    assert err.value.column == "I5" and err.value.rows == [4]  # first failing chunk: lines 2-4
    with pytest.raises(DataError, match="not integers") as err:
        convert_criteo(raw, tmp_path / "c.parquet", chunk_rows=100)
    assert err.value.column == "I5" and err.value.rows == [4, 8] and "sample.csv" in str(err.value)


def test_csv_header_is_checked(tmp_path):
    raw = write_csv(tmp_path / "sample.csv", _rows(3))
    raw.write_text(raw.read_text().replace("I5,", "I55,", 1))
    with pytest.raises(DataError, match="'I55', expected 'I5'") as err:
        convert_criteo(raw, tmp_path / "c.parquet", fmt="csv")
    assert err.value.rows == [1] and err.value.column == "I55"


def test_failure_in_last_chunk_leaves_the_earlier_parquet_unchanged(tmp_path):
    rows = _rows(50, seed=5)
    raw = write_tsv(tmp_path / "train.txt", rows)
    good = convert_criteo(raw, tmp_path / "c.parquet", chunk_rows=10)
    before = pq.read_table(good.path)
    rows[47][0] = "7"
    write_tsv(raw, rows)
    with pytest.raises(DataError, match=r"\[rows: 48\]"):
        convert_criteo(raw, tmp_path / "c.parquet", chunk_rows=10)
    assert pq.read_table(good.path).equals(before)
    with pytest.raises(DataError):
        convert_criteo(raw, tmp_path / "fresh.parquet", chunk_rows=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.parquet", "train.txt"]  # no temp file left


def test_rerun_replaces_the_parquet(tmp_path):
    first = convert_criteo(write_tsv(tmp_path / "a.txt", _rows(5, seed=6)), tmp_path / "c.parquet")
    second = convert_criteo(write_tsv(tmp_path / "b.txt", _rows(9, seed=7)), tmp_path / "c.parquet")
    assert first.path == second.path and pq.read_table(second.path).num_rows == 9
    assert read_criteo_metadata(second.path)["source"] == "b.txt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt", "c.parquet"]


def test_batches_cover_the_table_in_order_with_bounded_sizes(tmp_path):
    rows = _rows(95, seed=8)
    out = convert_criteo(write_tsv(tmp_path / "train.txt", rows), tmp_path / "c.parquet", chunk_rows=20)
    batches = list(iter_criteo_batches(out.path, 16))
    assert all(len(b["label"]) <= 16 for b in batches) and sum(len(b["label"]) for b in batches) == 95
    assert set(batches[0]) == set(COLUMNS)
    label = np.concatenate([b["label"] for b in batches])
    i5 = np.concatenate([b["I5"] for b in batches])
    c3 = np.concatenate([b["C3"] for b in batches])
    assert label.dtype == np.int8 and i5.dtype == np.float32 and c3.dtype == object
    expected = expected_values(rows)
    np.testing.assert_array_equal(label, expected["label"])
    np.testing.assert_array_equal(i5, np.array([np.nan if v is None else v for v in expected["I5"]], np.float32))
    assert c3.tolist() == expected["C3"]  # None where missing
    only = next(iter_criteo_batches(out.path, 1000, columns=["label", "C1"]))
    assert set(only) == {"label", "C1"} and len(only["label"]) == 95
    with pytest.raises(DataError, match="C99"):
        next(iter_criteo_batches(out.path, 10, columns=["C99"]))


def test_unknown_format_and_missing_file(tmp_path):
    raw = tmp_path / "odd.txt"
    raw.write_text("hello,world\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        convert_criteo(raw, tmp_path / "c.parquet")
    with pytest.raises(DataError, match="Criteo file not found") as err:
        convert_criteo(tmp_path / "nope.txt", tmp_path / "c.parquet")
    assert "kaggle.com" in str(err.value) and str(tmp_path / "nope.txt") in str(err.value)
    with pytest.raises(ValueError, match="raw file itself"):
        convert_criteo(write_tsv(tmp_path / "train.txt", [ROW_A]), tmp_path / "train.txt")


def test_a_file_without_data_lines_is_an_error(tmp_path):
    header_only = tmp_path / "sample.csv"
    header_only.write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(DataError, match="no data lines"):
        convert_criteo(header_only, tmp_path / "c.parquet")
    only_bad = write_tsv(tmp_path / "train.txt", [ROW_A[:-1]])
    with pytest.raises(DataError, match=r"no data lines \(1 skipped\)"):
        convert_criteo(only_bad, tmp_path / "c.parquet", on_bad_rows="skip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.csv", "train.txt"]
