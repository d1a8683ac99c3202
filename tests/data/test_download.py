"""Downloading MovieLens 100K against a local HTTP server (no network): success, checksum
mismatch, server down / 404 / 5xx with bounded retries, slow server, files already present."""

from __future__ import annotations

import hashlib
import http.server
import io
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from recforge.data.download import DownloadError, download_file, extract_zip, sha256_file
from recforge.data.errors import DataError
from recforge.data.movielens import MovieLensConfig, ensure_movielens100k, load_movielens100k
from local_http import QuietHandler, serve

U_DATA = "1\t10\t5\t881250949\n2\t10\t3\t891717742\n1\t20\t1\t878887116\n"
U_ITEM = (
    "10|Misérables, Les (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Mis%E9rables|"
    + "|".join(["0", "0", "0", "0", "0", "0", "0", "0", "1", "0", "0", "0", "0", "0", "1", "0", "0", "0", "0"])
    + "\n20|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story|"
    + "|".join(["0", "0", "0", "1", "1", "1", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0", "0"])
    + "\n"
)
U_USER = "1|24|M|technician|85711\n2|53|F|other|T8H1N\n"


def ml100k_zip() -> bytes:
    """A zip in the official layout: ml-100k/u.data, u.item (latin-1), u.user, plus a README."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-100k/", b"")
        zf.writestr("ml-100k/u.data", U_DATA.encode("ascii"))
        zf.writestr("ml-100k/u.item", U_ITEM.encode("latin-1"))
        zf.writestr("ml-100k/u.user", U_USER.encode("latin-1"))
        zf.writestr("ml-100k/README", b"MovieLens 100K test double\n")
    return buf.getvalue()


@dataclass
class Server:
    """A local HTTP server: `routes` maps a path to (status, body); `hits` counts requests."""

    url: str
    routes: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    delay_s: float = 0.0


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(url="")

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            state.hits[self.path] = state.hits.get(self.path, 0) + 1
            if state.delay_s:
                time.sleep(state.delay_s)
            status, body = state.routes.get(self.path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve(Handler) as url:
        state.url = url
        yield state


def _config(raw_dir: Path, url: str, sha256: str | None, **kw: object) -> MovieLensConfig:
    return MovieLensConfig(raw_dir=raw_dir, url=url, sha256=sha256, timeout_s=2, retries=2, backoff_s=0.01, **kw)


def _leftovers(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if folder.exists() else []


def test_download_extracts_and_parses(server: Server, tmp_path: Path) -> None:
    body = ml100k_zip()
    server.routes["/ml-100k.zip"] = (200, body)
    raw_dir = tmp_path / "01_raw" / "ml-100k"
    config = _config(raw_dir, f"{server.url}/ml-100k.zip", hashlib.sha256(body).hexdigest())

    interactions, items, users = load_movielens100k(config)

    assert server.hits["/ml-100k.zip"] == 1
    assert {p.name for p in raw_dir.iterdir()} == {"u.data", "u.item", "u.user", "README"}
    # Only raw_dir is left: the temp download folder and the zip are gone.
    assert [p.name for p in raw_dir.parent.iterdir()] == ["ml-100k"]
    assert len(interactions) == 3 and set(interactions["event"]) == {"rating"}
    assert items.set_index("item_id").loc["10", "title"] == "Misérables, Les (1995)"
    assert users.set_index("user_id").loc["2", "zip_code"] == "T8H1N"


def test_checksum_mismatch_leaves_nothing(server: Server, tmp_path: Path) -> None:
    server.routes["/ml-100k.zip"] = (200, ml100k_zip())
    raw_parent = tmp_path / "01_raw"
    config = _config(raw_parent / "ml-100k", f"{server.url}/ml-100k.zip", "0" * 64)

    with pytest.raises(DataError, match="checksum mismatch") as err:
        ensure_movielens100k(config)

    assert "u.data" in str(err.value)
    assert _leftovers(raw_parent) == []
    assert server.hits["/ml-100k.zip"] == 1  # a complete but wrong file is not fetched again


def test_server_down_gives_offline_instructions(tmp_path: Path) -> None:
    with http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler) as dead:
        port = dead.server_address[1]  # closed on exit: nothing listens there any more
    raw_dir = tmp_path / "01_raw" / "ml-100k"
    config = _config(raw_dir, f"http://127.0.0.1:{port}/ml-100k.zip", None)

    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        ensure_movielens100k(config)

    assert time.perf_counter() - start < 5
    msg = str(err.value)
    assert "after 3 attempt(s)" in msg
    assert str(raw_dir / "u.data") in msg and "files.grouplens.org" in msg and "unzip" in msg
    assert _leftovers(tmp_path / "01_raw") == []


def test_404_is_not_retried(server: Server, tmp_path: Path) -> None:
    config = _config(tmp_path / "ml-100k", f"{server.url}/missing.zip", None)

    with pytest.raises(DataError, match="HTTP 404") as err:
        ensure_movielens100k(config)

    assert server.hits["/missing.zip"] == 1
    assert "Put the MovieLens 100K files at" in str(err.value)


def test_server_errors_are_retried_a_bounded_number_of_times(server: Server, tmp_path: Path) -> None:
    server.routes["/ml-100k.zip"] = (503, b"busy")
    config = _config(tmp_path / "ml-100k", f"{server.url}/ml-100k.zip", None)

    with pytest.raises(DataError, match="after 3 attempt"):
        ensure_movielens100k(config)

    assert server.hits["/ml-100k.zip"] == 3  # 1 + retries


def test_slow_server_times_out(server: Server, tmp_path: Path) -> None:
    server.routes["/ml-100k.zip"] = (200, ml100k_zip())
    server.delay_s = 1.0
    config = MovieLensConfig(
        raw_dir=tmp_path / "ml-100k", url=f"{server.url}/ml-100k.zip", sha256=None, timeout_s=0.2, retries=0
    )

    with pytest.raises(DataError, match="download failed"):
        ensure_movielens100k(config)


def test_files_present_means_no_download(tmp_path: Path) -> None:
    raw_dir = tmp_path / "ml-100k"
    raw_dir.mkdir()
    (raw_dir / "u.data").write_text(U_DATA, encoding="ascii")
    (raw_dir / "u.item").write_bytes(U_ITEM.encode("latin-1"))
    (raw_dir / "u.user").write_text(U_USER, encoding="latin-1")
    # An unreachable URL: any download attempt would raise.
    config = _config(raw_dir, "http://127.0.0.1:9/ml-100k.zip", None)

    assert ensure_movielens100k(config) == raw_dir
    interactions, _, _ = load_movielens100k(config)
    assert len(interactions) == 3


def test_partial_folder_is_completed_without_touching_existing_files(server: Server, tmp_path: Path) -> None:
    body = ml100k_zip()
    server.routes["/ml-100k.zip"] = (200, body)
    raw_dir = tmp_path / "ml-100k"
    raw_dir.mkdir()
    mine = U_DATA + "3\t20\t4\t881250950\n"
    (raw_dir / "u.data").write_text(mine, encoding="ascii")

    ensure_movielens100k(_config(raw_dir, f"{server.url}/ml-100k.zip", hashlib.sha256(body).hexdigest()))

    assert (raw_dir / "u.data").read_text(encoding="ascii") == mine
    assert (raw_dir / "u.item").read_bytes() == U_ITEM.encode("latin-1")


def test_download_off_and_missing_says_where_to_put_files(tmp_path: Path) -> None:
    raw_dir = tmp_path / "ml-100k"
    with pytest.raises(DataError, match="download is off") as err:
        ensure_movielens100k(MovieLensConfig(raw_dir=raw_dir, download=False))
    assert str(raw_dir / "u.item") in str(err.value)


def test_download_file_and_sha256(server: Server, tmp_path: Path) -> None:
    server.routes["/f.bin"] = (200, b"hello")
    dest = download_file(f"{server.url}/f.bin", tmp_path / "f.bin", sha256=hashlib.sha256(b"hello").hexdigest())
    assert dest.read_bytes() == b"hello"
    assert sha256_file(dest) == hashlib.sha256(b"hello").hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_extract_zip_refuses_paths_outside(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escape.txt", b"x")
    with pytest.raises(DownloadError, match="unsafe member"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()
