"""MovieLens 100K parsing from fixture files in the real formats (no download)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recforge.data.errors import DataError
from recforge.data.movielens import MovieLensConfig, load_movielens100k, read_items, read_ratings, read_users
from recforge.data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS


def _flags(*genres: int) -> str:
    return "|".join("1" if i in genres else "0" for i in range(19))


U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t242\t1\t878887116\n196\t267\t5\t875692955\n"
U_ITEM = (
    f"242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|{_flags(5)}\n"
    f"302|L.A. Confidential (1997)|01-Jan-1997||http://us.imdb.com/M/title-exact?L%2EA%2E|{_flags(6, 10, 13, 16)}\n"
    f"267|unknown||||{_flags(0)}\n"
    f"1|Misérables, Les (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Mis%E9rables|{_flags(8, 17)}\n"
)
U_USER = "196|49|M|writer|55105\n186|39|F|executive|00000\n22|25|M|writer|40206\n7|57|M|administrator|V3N4P\n"


@pytest.fixture
def raw_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text(U_DATA, encoding="ascii")
    (folder / "u.item").write_bytes(U_ITEM.encode("latin-1"))
    (folder / "u.user").write_bytes(U_USER.encode("latin-1"))
    return folder


def _load(raw_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return load_movielens100k(MovieLensConfig(raw_dir=raw_dir, download=False))


def test_ratings_become_rating_events(raw_dir: Path) -> None:
    interactions, _, _ = _load(raw_dir)
    assert list(interactions.columns) == list(INTERACTION_COLUMNS)
    assert interactions["user_id"].tolist() == ["196", "186", "22", "196"]
    assert interactions["value"].tolist() == [3.0, 3.0, 1.0, 5.0]
    assert set(interactions["event"]) == {"rating"}
    # 1997-98 timestamps are kept exactly (unix seconds in, unix seconds out).
    assert interactions["timestamp"].tolist() == [881250949, 891717742, 878887116, 875692955]
    assert interactions["session_id"].isna().all()


def test_items_have_title_text_category_and_genres(raw_dir: Path) -> None:
    _, items, _ = _load(raw_dir)
    assert set(ITEM_COLUMNS) <= set(items.columns)
    by_id = items.set_index("item_id")
    assert by_id.loc["302", "category"] == "movie/Crime"
    assert by_id.loc["302", "genres"] == "Crime|Film-Noir|Mystery|Thriller"
    assert by_id.loc["302", "text"] == "L.A. Confidential (1997). Genres: Crime, Film-Noir, Mystery, Thriller"
    assert by_id.loc["1", "title"] == "Misérables, Les (1995)"  # latin-1 decoded
    assert by_id.loc["1", "category"] == "movie/Drama"
    assert by_id.loc["267", "category"] == "movie/unknown"
    assert pd.isna(by_id.loc["267", "release_date"])
    assert by_id["price"].isna().all()


def test_users_keep_demographics(raw_dir: Path) -> None:
    _, _, users = _load(raw_dir)
    by_id = users.set_index("user_id")
    assert by_id.loc["196", "age"] == 49
    assert by_id.loc["186", "gender"] == "F"
    assert by_id.loc["22", "occupation"] == "writer"
    assert by_id.loc["186", "zip_code"] == "00000"  # leading zeros survive
    assert by_id.loc["7", "zip_code"] == "V3N4P"


def test_rating_out_of_range_names_file_column_rows(raw_dir: Path) -> None:
    (raw_dir / "u.data").write_text(U_DATA + "22\t302\t7\t878887116\n", encoding="ascii")
    with pytest.raises(DataError, match="ratings outside 1..5") as err:
        read_ratings(raw_dir / "u.data")
    assert err.value.source == str(raw_dir / "u.data")
    assert err.value.column == "rating" and err.value.rows == [4]


def test_non_integer_timestamp_is_reported(raw_dir: Path) -> None:
    (raw_dir / "u.data").write_text(U_DATA.replace("891717742", "yesterday"), encoding="ascii")
    with pytest.raises(DataError) as err:
        read_ratings(raw_dir / "u.data")
    assert err.value.column == "timestamp" and err.value.rows == [1]


def test_bad_genre_flag_is_reported(raw_dir: Path) -> None:
    (raw_dir / "u.item").write_bytes(U_ITEM.replace(_flags(5), _flags(5).replace("1", "2")).encode("latin-1"))
    with pytest.raises(DataError, match="genre flags") as err:
        read_items(raw_dir / "u.item")
    assert err.value.column == "Comedy" and err.value.rows == [0]


def test_empty_file_is_reported(raw_dir: Path) -> None:
    (raw_dir / "u.user").write_bytes(b"")
    with pytest.raises(DataError, match="empty file") as err:
        read_users(raw_dir / "u.user")
    assert err.value.source == str(raw_dir / "u.user")


def test_rating_of_unknown_item_is_reported(raw_dir: Path) -> None:
    (raw_dir / "u.data").write_text(U_DATA + "22\t999\t4\t878887116\n", encoding="ascii")
    with pytest.raises(DataError, match="item ids missing") as err:
        _load(raw_dir)
    assert err.value.column == "item_id" and err.value.rows == [4]


def test_raw_files_are_not_modified(raw_dir: Path) -> None:
    before = {p.name: p.read_bytes() for p in raw_dir.iterdir()}
    _load(raw_dir)
    assert {p.name: p.read_bytes() for p in raw_dir.iterdir()} == before


def test_wrong_separator_is_reported(raw_dir: Path) -> None:
    (raw_dir / "u.data").write_text(U_DATA.replace("\t", ","), encoding="ascii")
    with pytest.raises(DataError, match="expected 4 separated by") as err:
        read_ratings(raw_dir / "u.data")
    assert err.value.source == str(raw_dir / "u.data") and err.value.rows == [0, 1, 2, 3]
