"""The `files` adapter: column mappings, CSV and parquet, pre-split test file, media, and one test
per kind of bad input, each checking the error names the file, the file's column and the rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pydantic
import pytest

from recforge.data.errors import DataError
from recforge.data.files import FilesConfig, TableFile, load_files, read_interactions
from recforge.data.media import with_manifest
from recforge.data.schema import INTERACTION_COLUMNS

INTERACTIONS = """\
client;product;when;what;qty;visit
u1;i1;2024-03-01T09:00:00Z;view;1;s1
u1;i2;2024-03-01T09:05:00Z;purchase;2;s1
u2;i1;2024-03-02T10:00:00+01:00;click;1;s2
u3;i3;2024-03-02T12:00:00Z;add_to_cart;1;
"""
ITEMS = """\
item,name,category_path,price_eur,brand,picture
i1,Café mug,home/kitchen,12.5,Oakmere,img/i1.png
i2,Espresso cups,home/kitchen,18,Oakmere,
i3,Yoga mat,sports/yoga,35,Kinsa,
i4,Crime novel,books/fiction,,Folio,
"""
COLUMNS = {
    "user_id": "client",
    "item_id": "product",
    "timestamp": "when",
    "event": "what",
    "value": "qty",
    "session_id": "visit",
}
ITEM_MAP = {
    "item_id": "item",
    "title": "name",
    "category": "category_path",
    "price": "price_eur",
    "image_path": "picture",
}


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def _interactions(tmp_path: Path, text: str = INTERACTIONS, **kw: object) -> TableFile:
    return TableFile(path=_write(tmp_path / "events.csv", text), sep=";", columns=COLUMNS, **kw)


def test_csv_with_column_mapping(tmp_path: Path) -> None:
    data = load_files(FilesConfig(interactions=_interactions(tmp_path)))
    df = data.interactions
    assert list(df.columns) == list(INTERACTION_COLUMNS)
    assert df["user_id"].tolist() == ["u1", "u1", "u2", "u3"]
    assert df["event"].astype(str).tolist() == ["view", "purchase", "click", "add_to_cart"]
    assert df["value"].tolist() == [1.0, 2.0, 1.0, 1.0]
    # ISO-8601 with Z or an offset becomes UTC unix seconds.
    assert df["timestamp"].tolist() == [1709283600, 1709283900, 1709370000, 1709380800]
    assert df["session_id"].tolist()[:3] == ["s1", "s1", "s2"] and pd.isna(df["session_id"].iloc[3])
    # Without items/users files the tables hold the ids seen.
    assert data.items["item_id"].tolist() == ["i1", "i2", "i3"]
    assert data.users["user_id"].tolist() == ["u1", "u2", "u3"]
    assert len(data.heldout_interactions) == 0 and data.media == {}


def test_parquet_with_native_types_and_rating(tmp_path: Path) -> None:
    path = tmp_path / "ratings.parquet"
    pd.DataFrame(
        {
            "uid": [7, 8, 7],
            "iid": [1.0, 2.0, 3.0],  # integral floats, as some writers store ids
            "ts": pd.to_datetime(["2023-01-01", "2023-01-02", "2023-01-03"]),
            "stars": [4, 5, 3],
        }
    ).to_parquet(path)
    table = TableFile(path=path, columns={"user_id": "uid", "item_id": "iid", "timestamp": "ts", "rating": "stars"})
    df = load_files(FilesConfig(interactions=table)).interactions
    assert df["user_id"].tolist() == ["7", "8", "7"]
    assert df["item_id"].tolist() == ["1", "2", "3"]
    assert df["timestamp"].tolist() == [1672531200, 1672617600, 1672704000]
    assert set(df["event"]) == {"rating"} and df["value"].tolist() == [4.0, 5.0, 3.0]


def test_pre_split_test_file_inherits_options(tmp_path: Path) -> None:
    test = _write(tmp_path / "test.csv", "client;product;when;what;qty;visit\nu2;i3;2024-04-01T00:00:00Z;view;1;s9\n")
    items = TableFile(path=_write(tmp_path / "items.csv", ITEMS), columns=ITEM_MAP)
    img = tmp_path / "media" / "img"
    img.mkdir(parents=True)
    (img / "i1.png").write_bytes(b"\x89PNG fake")
    config = FilesConfig(
        interactions=_interactions(tmp_path), items=items, test=TableFile(path=test), media_dir=tmp_path / "media"
    )

    data = load_files(config)

    assert data.heldout_interactions[["user_id", "item_id"]].values.tolist() == [["u2", "i3"]]
    by_id = data.items.set_index("item_id")
    assert by_id.loc["i1", "title"] == "Café mug" and by_id.loc["i1", "image_path"] == "img/i1.png"
    assert by_id.loc["i2", "price"] == 18.0 and pd.isna(by_id.loc["i4", "price"])
    assert by_id.loc["i3", "brand"] == "Kinsa"  # unmapped columns are kept as attributes
    assert data.media == {"img/i1.png": b"\x89PNG fake"}


def test_users_table_keeps_attributes(tmp_path: Path) -> None:
    path = _write(tmp_path / "users.csv", "client,age\nu1,30\nu2,41\nu3,25\n")
    users = TableFile(path=path, columns={"user_id": "client"})
    data = load_files(FilesConfig(interactions=_interactions(tmp_path), users=users))
    assert data.users.columns.tolist() == ["user_id", "age"]
    assert data.users["age"].tolist() == ["30", "41", "25"]


# --- bad input: one case per test ------------------------------------------------------------


def _error(table: TableFile, **kw: object) -> DataError:
    with pytest.raises(DataError) as err:
        load_files(FilesConfig(interactions=table, **kw))
    return err.value


def test_renamed_column(tmp_path: Path) -> None:
    err = _error(_interactions(tmp_path, INTERACTIONS.replace("client;", "customer;")))
    assert err.source == str(tmp_path / "events.csv") and err.column == "client"
    assert "customer" in str(err)  # the columns the file does have are listed


def test_missing_required_column(tmp_path: Path) -> None:
    table = TableFile(path=_write(tmp_path / "e.csv", "user_id,item_id\nu1,i1\n"))
    err = _error(table)
    assert err.source == str(tmp_path / "e.csv") and err.column == "timestamp"


def test_wrong_type(tmp_path: Path) -> None:
    err = _error(_interactions(tmp_path, INTERACTIONS.replace(";purchase;2;", ";purchase;two;")))
    assert err.source == str(tmp_path / "events.csv")
    assert err.column == "qty" and err.rows == [1] and "not numbers" in str(err)


def test_null_ids(tmp_path: Path) -> None:
    err = _error(_interactions(tmp_path, INTERACTIONS.replace("u2;i1;", ";i1;")))
    assert err.column == "client" and err.rows == [2] and "null" in str(err)


def test_unparsable_timestamps(tmp_path: Path) -> None:
    err = _error(_interactions(tmp_path, INTERACTIONS.replace("2024-03-01T09:05:00Z", "soon")))
    assert err.column == "when" and err.rows == [1] and "unparsable" in str(err)


def test_unknown_event(tmp_path: Path) -> None:
    err = _error(_interactions(tmp_path, INTERACTIONS.replace(";click;", ";wishlist;")))
    assert err.column == "what" and err.rows == [2] and "wishlist" in str(err)


def test_empty_file(tmp_path: Path) -> None:
    err = _error(_interactions(tmp_path, ""))
    assert err.source == str(tmp_path / "events.csv") and "empty" in str(err)


def test_header_only_file(tmp_path: Path) -> None:
    err = _error(_interactions(tmp_path, INTERACTIONS.splitlines()[0] + "\n"))
    assert err.source == str(tmp_path / "events.csv") and "no interactions" in str(err)


def test_latin1_file_declared_utf8(tmp_path: Path) -> None:
    items = TableFile(path=_write(tmp_path / "items.csv", ITEMS, encoding="latin-1"), columns=ITEM_MAP)
    err = _error(_interactions(tmp_path), items=items)
    assert err.source == str(tmp_path / "items.csv")
    assert err.column == "name" and err.rows == [0] and "utf-8" in str(err)


def test_latin1_file_declared_latin1_reads(tmp_path: Path) -> None:
    items = TableFile(
        path=_write(tmp_path / "items.csv", ITEMS, encoding="latin-1"), columns=ITEM_MAP, encoding="latin-1"
    )
    data = load_files(FilesConfig(interactions=_interactions(tmp_path), items=items, media_dir=_media(tmp_path)))
    assert data.items["title"].iloc[0] == "Café mug"


def _media(tmp_path: Path) -> Path:
    (tmp_path / "m" / "img").mkdir(parents=True, exist_ok=True)
    (tmp_path / "m" / "img" / "i1.png").write_bytes(b"png")
    return tmp_path / "m"


def test_item_not_in_items_table(tmp_path: Path) -> None:
    items = TableFile(path=_write(tmp_path / "items.csv", ITEMS.replace("i3,Yoga", "i9,Yoga")), columns=ITEM_MAP)
    err = _error(_interactions(tmp_path), items=items, media_dir=_media(tmp_path))
    assert err.source == str(tmp_path / "events.csv") and err.column == "product" and err.rows == [3]


def test_duplicate_item_ids(tmp_path: Path) -> None:
    items = TableFile(path=_write(tmp_path / "items.csv", ITEMS.replace("i4,", "i2,")), columns=ITEM_MAP)
    err = _error(_interactions(tmp_path), items=items, media_dir=_media(tmp_path))
    assert err.source == str(tmp_path / "items.csv") and err.column == "item" and err.rows == [1, 3]


def test_missing_media_file(tmp_path: Path) -> None:
    items = TableFile(path=_write(tmp_path / "items.csv", ITEMS), columns=ITEM_MAP)
    (tmp_path / "empty_media").mkdir()
    err = _error(_interactions(tmp_path), items=items, media_dir=tmp_path / "empty_media")
    assert err.source == str(tmp_path / "items.csv") and err.column == "picture" and err.rows == [0]


def test_file_not_found(tmp_path: Path) -> None:
    err = _error(TableFile(path=tmp_path / "nope.csv"))
    assert err.source == str(tmp_path / "nope.csv") and "not found" in str(err)


def test_bad_test_file_is_named(tmp_path: Path) -> None:
    test = _write(tmp_path / "test.csv", "client;product;when;what;qty;visit\nu2;;2024-04-01T00:00:00Z;view;1;s9\n")
    err = _error(_interactions(tmp_path), test=TableFile(path=test))
    assert err.source == str(tmp_path / "test.csv") and err.column == "product" and err.rows == [0]


def test_unknown_canonical_name_in_mapping_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="unknown canonical name"):
        FilesConfig(interactions=TableFile(path=tmp_path / "e.csv", columns={"customer": "client"}))


def test_raw_file_is_not_modified(tmp_path: Path) -> None:
    table = _interactions(tmp_path)
    before = table.path.read_bytes()
    read_interactions(table)
    assert table.path.read_bytes() == before


def test_media_keys_must_stay_inside_the_media_root() -> None:
    assert json.loads(with_manifest({"img/a.png": b"ab"})["manifest.json"]) == [
        {"path": "img/a.png", "sha256": hashlib.sha256(b"ab").hexdigest(), "bytes": 2}
    ]
    for key in ("../a.png", "/abs/a.png", "manifest.json"):
        with pytest.raises(DataError, match="media path|reserved"):
            with_manifest({key: b""}, source="items.csv")
