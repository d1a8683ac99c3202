"""MovieLens 1M from fixture files in the real format ("::"-separated latin-1 .dat files), and its
download against a local HTTP server on 127.0.0.1 (no network)."""

from __future__ import annotations

import hashlib
import http.server
import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader

from recforge.data.errors import DataError
from recforge.data.movielens import (
    MovieLens1MConfig,
    ensure_movielens1m,
    load_movielens1m,
    read_movies_1m,
    read_ratings_1m,
    read_users_1m,
)
from recforge.data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS
from recforge.data.sources import IngestionParams, ingest
from recforge.data.validation import ValidationParams, hard_failures, validate_canonical_tables
from local_http import QuietHandler, serve

RATINGS = "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n6040::1::1::956703932\n"
MOVIES = (
    "1::Toy Story (1995)::Animation|Children's|Comedy\n"
    "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
    "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
    '3::"Misérables, Les" (1995)::Drama|Musical\n'
)
USERS = "1::F::1::10::48067\n2::M::56::16::70072\n6040::M::25::6::11106\n7::M::35::1::V3N4P\n"


@pytest.fixture
def raw_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ml-1m"
    folder.mkdir()
    (folder / "ratings.dat").write_bytes(RATINGS.encode("latin-1"))
    (folder / "movies.dat").write_bytes(MOVIES.encode("latin-1"))
    (folder / "users.dat").write_bytes(USERS.encode("latin-1"))
    return folder


def _load(raw_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return load_movielens1m(MovieLens1MConfig(raw_dir=raw_dir, download=False))


def test_ratings_become_rating_events(raw_dir: Path) -> None:
    interactions, _, _ = _load(raw_dir)
    assert list(interactions.columns) == list(INTERACTION_COLUMNS)
    assert interactions["user_id"].tolist() == ["1", "1", "2", "6040"]
    assert interactions["item_id"].tolist() == ["1193", "661", "1193", "1"]
    assert interactions["value"].tolist() == [5.0, 3.0, 4.0, 1.0]
    assert set(interactions["event"]) == {"rating"}
    assert interactions["timestamp"].tolist() == [978300760, 978302109, 978298413, 956703932]


def test_movies_have_genres_year_and_latin1_titles(raw_dir: Path) -> None:
    _, items, _ = _load(raw_dir)
    assert set(ITEM_COLUMNS) <= set(items.columns)
    by_id = items.set_index("item_id")
    assert by_id.loc["661", "genres"] == "Animation|Children's|Musical"
    assert by_id.loc["661", "category"] == "movie/Animation"
    assert by_id.loc["1193", "text"] == "One Flew Over the Cuckoo's Nest (1975). Genres: Drama"
    assert by_id.loc["1", "year"] == 1995 and by_id.loc["1193", "year"] == 1975
    # latin-1 decoded, and a leading quote is part of the title (the .dat files never quote).
    assert by_id.loc["3", "title"] == '"Misérables, Les" (1995)'
    assert by_id["price"].isna().all()


def test_users_keep_demographics(raw_dir: Path) -> None:
    _, _, users = _load(raw_dir)
    by_id = users.set_index("user_id")
    assert by_id.loc["1", "gender"] == "F"
    assert by_id.loc["1", "age"] == 1 and by_id.loc["1", "age_group"] == "Under 18"
    assert by_id.loc["2", "age_group"] == "56+"
    assert by_id.loc["1", "occupation"] == "K-12 student" and by_id.loc["1", "occupation_id"] == 10
    assert by_id.loc["6040", "occupation"] == "doctor/health care"
    assert by_id.loc["7", "zip_code"] == "V3N4P"


def test_tables_pass_validation(raw_dir: Path) -> None:
    interactions, items, users = _load(raw_dir)
    params = ValidationParams(min_user_interactions=1, min_item_interactions=1)
    report = validate_canonical_tables(interactions, items, users, params, now=1_700_000_000)
    assert report["passed"], hard_failures(report)


def test_ingest_selects_movielens1m(raw_dir: Path) -> None:
    params = IngestionParams.model_validate(
        {"source": "movielens1m", "movielens1m": {"raw_dir": str(raw_dir), "download": False}}
    )
    result = ingest(params)
    assert len(result.interactions) == 4 and "age_group" in result.users.columns


def test_malformed_rating_row_is_named(raw_dir: Path) -> None:
    (raw_dir / "ratings.dat").write_bytes((RATINGS + "2::661::4::978298413::extra\n").encode("latin-1"))
    with pytest.raises(DataError, match="fields") as err:
        read_ratings_1m(raw_dir / "ratings.dat")
    assert err.value.source == str(raw_dir / "ratings.dat")
    assert err.value.column == "timestamp" and err.value.rows == [4]


def test_non_integer_rating_is_named(raw_dir: Path) -> None:
    (raw_dir / "ratings.dat").write_bytes(RATINGS.replace("::3::", "::three::").encode("latin-1"))
    with pytest.raises(DataError, match="not integers") as err:
        read_ratings_1m(raw_dir / "ratings.dat")
    assert err.value.column == "rating" and err.value.rows == [1]


def test_rating_out_of_range_is_named(raw_dir: Path) -> None:
    (raw_dir / "ratings.dat").write_bytes(RATINGS.replace("::1::956703932", "::0::956703932").encode("latin-1"))
    with pytest.raises(DataError, match="outside 1..5") as err:
        read_ratings_1m(raw_dir / "ratings.dat")
    assert err.value.rows == [3]


def test_bad_age_code_and_occupation_are_named(raw_dir: Path) -> None:
    (raw_dir / "users.dat").write_bytes(USERS.replace("2::M::56::", "2::M::57::").encode("latin-1"))
    with pytest.raises(DataError, match="age codes") as err:
        read_users_1m(raw_dir / "users.dat")
    assert err.value.source == str(raw_dir / "users.dat") and err.value.column == "age" and err.value.rows == [1]
    (raw_dir / "users.dat").write_bytes(USERS.replace("::1::V3N4P", "::21::V3N4P").encode("latin-1"))
    with pytest.raises(DataError, match="occupation codes") as err:
        read_users_1m(raw_dir / "users.dat")
    assert err.value.column == "occupation" and err.value.rows == [3]


def test_unknown_genre_and_missing_field_are_named(raw_dir: Path) -> None:
    (raw_dir / "movies.dat").write_bytes(MOVIES.replace("::Drama\n", "::Dramma\n", 1).encode("latin-1"))
    with pytest.raises(DataError, match="genres outside") as err:
        read_movies_1m(raw_dir / "movies.dat")
    assert err.value.column == "genres" and err.value.rows == [2]
    # A "|"-separated line (the 100K format) is reported, not silently shifted.
    (raw_dir / "movies.dat").write_bytes(MOVIES.replace("::", "|").encode("latin-1"))
    with pytest.raises(DataError, match="expected 3 separated by '::'") as err:
        read_movies_1m(raw_dir / "movies.dat")
    assert err.value.rows == [0, 1, 2, 3]


def test_rating_of_unknown_user_is_named(raw_dir: Path) -> None:
    (raw_dir / "ratings.dat").write_bytes((RATINGS + "99::1::4::978298413\n").encode("latin-1"))
    with pytest.raises(DataError, match="user ids missing from") as err:
        _load(raw_dir)
    assert "users.dat" in str(err.value) and err.value.column == "user_id" and err.value.rows == [4]


# ----------------------------------------------------------------------------------- download
def ml1m_zip() -> bytes:
    """A zip in the official layout: ml-1m/{ratings,movies,users}.dat (latin-1) and a README."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-1m/", b"")
        zf.writestr("ml-1m/ratings.dat", RATINGS.encode("latin-1"))
        zf.writestr("ml-1m/movies.dat", MOVIES.encode("latin-1"))
        zf.writestr("ml-1m/users.dat", USERS.encode("latin-1"))
        zf.writestr("ml-1m/README", b"MovieLens 1M test double\n")
    return buf.getvalue()


@pytest.fixture
def served_zip() -> Iterator[tuple[str, bytes, dict[str, int]]]:
    """(url, body, hits) of ml-1m.zip served on 127.0.0.1."""
    body, hits = ml1m_zip(), {"n": 0}

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            hits["n"] += 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve(Handler) as url:
        yield f"{url}/ml-1m.zip", body, hits


def test_download_extracts_and_parses(served_zip: tuple[str, bytes, dict[str, int]], tmp_path: Path) -> None:
    url, body, hits = served_zip
    raw_dir = tmp_path / "01_raw" / "ml-1m"
    config = MovieLens1MConfig(raw_dir=raw_dir, url=url, sha256=hashlib.sha256(body).hexdigest(), retries=0)

    interactions, items, users = load_movielens1m(config)

    assert hits["n"] == 1
    assert {p.name for p in raw_dir.iterdir()} == {"ratings.dat", "movies.dat", "users.dat", "README"}
    assert [p.name for p in raw_dir.parent.iterdir()] == ["ml-1m"]  # no temp folder or zip left
    assert len(interactions) == 4 and items.set_index("item_id").loc["3", "title"].startswith('"Misérables')
    assert ensure_movielens1m(config) == raw_dir and hits["n"] == 1  # present: not fetched again


def test_checksum_mismatch_leaves_nothing(served_zip: tuple[str, bytes, dict[str, int]], tmp_path: Path) -> None:
    url, _, _ = served_zip
    raw_parent = tmp_path / "01_raw"
    with pytest.raises(DataError, match="checksum mismatch"):
        ensure_movielens1m(MovieLens1MConfig(raw_dir=raw_parent / "ml-1m", url=url, sha256="0" * 64, retries=0))
    assert list(raw_parent.rglob("*")) == []


def test_offline_error_says_where_to_put_files(tmp_path: Path) -> None:
    with http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler) as dead:
        port = dead.server_address[1]  # closed on exit: nothing listens there any more
    raw_dir = tmp_path / "01_raw" / "ml-1m"
    config = MovieLens1MConfig(
        raw_dir=raw_dir, url=f"http://127.0.0.1:{port}/ml-1m.zip", timeout_s=2, retries=1, backoff_s=0.01
    )
    with pytest.raises(DataError, match="download failed") as err:
        ensure_movielens1m(config)
    msg = str(err.value)
    assert "after 2 attempt(s)" in msg
    assert str(raw_dir / "ratings.dat") in msg and str(raw_dir / "users.dat") in msg
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip" in msg and "unzip" in msg
    assert "ingestion.movielens1m.download" in msg
    assert list((tmp_path / "01_raw").rglob("*")) == []


def test_download_off_and_missing_says_where_to_put_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="MovieLens 1M .* download is off") as err:
        ensure_movielens1m(MovieLens1MConfig(raw_dir=tmp_path / "ml-1m", download=False))
    assert str(tmp_path / "ml-1m" / "movies.dat") in str(err.value)


def test_short_line_and_blank_line_are_named(raw_dir: Path) -> None:
    # zip_code may be empty, so a line that lacks the field must be caught by its field count.
    (raw_dir / "users.dat").write_bytes(USERS.replace("::70072\n", "\n").encode("latin-1"))
    with pytest.raises(DataError, match="wrong number of fields") as err:
        read_users_1m(raw_dir / "users.dat")
    assert err.value.column == "zip_code" and err.value.rows == [1]
    (raw_dir / "ratings.dat").write_bytes(RATINGS.replace("\n", "\n\n", 1).encode("latin-1"))
    with pytest.raises(DataError, match="the first has 1") as err:
        read_ratings_1m(raw_dir / "ratings.dat")
    assert err.value.rows == [1]


def test_crlf_line_ends_are_read(raw_dir: Path) -> None:
    (raw_dir / "movies.dat").write_bytes(MOVIES.replace("\n", "\r\n").encode("latin-1"))
    items = read_movies_1m(raw_dir / "movies.dat")
    assert items.set_index("item_id").loc["1193", "genres"] == "Drama"


def test_movielens1m_env_parameters_ingest(raw_dir: Path) -> None:
    """`kedro run --env movielens1m`'s parameters, pointed at the fixture, ingest it."""
    conf = Path(__file__).resolve().parents[2] / "conf"
    loader = OmegaConfigLoader(conf_source=str(conf), base_env="base", default_run_env="movielens1m")
    raw = dict(loader["parameters"]["ingestion"])
    assert raw["source"] == "movielens1m" and raw["movielens1m"]["sha256"] == MovieLens1MConfig().sha256
    raw["movielens1m"] = {**raw["movielens1m"], "raw_dir": str(raw_dir)}
    assert len(ingest(IngestionParams.model_validate(raw)).interactions) == 4


def test_colons_in_titles_and_stray_control_characters(raw_dir: Path) -> None:
    text = "260::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Sci-Fi\n2::Title: (1995)::Drama\n"
    (raw_dir / "movies.dat").write_bytes(text.encode("latin-1"))
    items = read_movies_1m(raw_dir / "movies.dat").set_index("item_id")
    assert items.loc["260", "title"] == "Star Wars: Episode IV - A New Hope (1977)"
    assert items.loc["2", "title"] == "Title: (1995)" and items.loc["260", "year"] == 1977
    (raw_dir / "movies.dat").write_bytes(text.replace("Drama", "Dra\x1fma").encode("latin-1"))
    with pytest.raises(DataError, match="control character") as err:
        read_movies_1m(raw_dir / "movies.dat")
    assert err.value.rows == [1]
