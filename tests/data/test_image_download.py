"""Fetching item images against a local HTTP server on 127.0.0.1 (no network): good images, refused
URLs, redirect loops, a 2 GB body cut off while streaming, non-images, timeouts and retries,
atomic writes and the offline stop."""

from __future__ import annotations

import http.server
import io
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from PIL import Image

from recforge.data.image_download import (
    ImageFetchConfig,
    ImageFetchError,
    OfflineError,
    download_images,
    fetch_image,
    sniff_image,
)
from local_http import QuietHandler, serve

TWO_GB = 2 * 1024**3
FAST = ImageFetchConfig(timeout_s=2, retries=2, backoff_s=0.01, max_bytes=1024 * 1024, max_redirects=3, workers=2)


def png(size: int = 4, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "PNG")
    return buf.getvalue()


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 120, 30)).save(buf, "JPEG")
    return buf.getvalue()


Route = Callable[[http.server.BaseHTTPRequestHandler], None]


@dataclass
class Server:
    """`routes` maps a path to a function that answers the request; `hits` and `sent` count."""

    url: str = ""
    routes: dict[str, Route] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)

    def body(self, path: str, data: bytes, ctype: str = "image/png", status: int = 200, delay_s: float = 0.0) -> str:
        def route(h: http.server.BaseHTTPRequestHandler) -> None:
            time.sleep(delay_s)
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)

        self.routes[path] = route
        return self.url + path

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        def route(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(status)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()

        self.routes[path] = route
        return self.url + path

    def stream(self, path: str, claim: int | None, head: bytes = b"") -> str:
        """An endless image/png body (`head` then zeros) that claims `claim` bytes (None: no length)."""

        def route(h: http.server.BaseHTTPRequestHandler) -> None:
            h.send_response(200)
            h.send_header("Content-Type", "image/png")
            if claim is not None:
                h.send_header("Content-Length", str(claim))
            h.end_headers()
            chunk = b"\0" * 65536
            sent = 0
            try:
                h.wfile.write(head)
                while sent < TWO_GB:
                    h.wfile.write(chunk)
                    sent += len(chunk)
                    self.sent[path] = sent
            except OSError:  # the client hung up: what a size cap should do
                pass

        self.routes[path] = route
        return self.url + path


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server()

    class Handler(QuietHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            state.hits[self.path] = state.hits.get(self.path, 0) + 1
            route = state.routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            try:
                route(self)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up first: expected here
                pass

    with serve(Handler) as url:
        state.url = url
        yield state


def closed_port() -> int:
    with http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler) as dead:
        return dead.server_address[1]  # closed on exit: nothing listens there any more


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_png_and_jpeg_are_written_under_the_item_id_with_their_suffix(server: Server, tmp_path: Path) -> None:
    data = png()
    path = fetch_image(server.body("/a.png", data), tmp_path, "B000123", FAST)
    assert path == tmp_path / "B000123.png" and path.read_bytes() == data
    # The suffix comes from the bytes, not from the URL or the header.
    path = fetch_image(server.body("/photo", jpeg(), ctype="image/jpeg"), tmp_path, "B000456", FAST)
    assert path.name == "B000456.jpg"
    assert files(tmp_path) == ["B000123.png", "B000456.jpg"]


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/x.png",
        "javascript:alert(1)",
        "data:image/png;base64,iVBORw0KGgo=",
        "//127.0.0.1/x.png",
        "http:///x.png",
        "/images/x.png",
        "",
    ],
)
def test_non_http_urls_are_refused_without_a_request(url: str, tmp_path: Path) -> None:
    with pytest.raises(ImageFetchError, match="not an http\\(s\\) URL"):
        fetch_image(url, tmp_path, "B1", FAST)
    assert files(tmp_path) == []


def test_unsafe_item_ids_are_refused(server: Server, tmp_path: Path) -> None:
    url = server.body("/a.png", png())
    for stem in ("../escape", "a/b", ".hidden", "x y", ""):
        with pytest.raises(ImageFetchError, match="safe file name"):
            fetch_image(url, tmp_path / "images", stem, FAST)
    assert server.hits == {} and files(tmp_path) == []


def test_one_redirect_is_followed(server: Server, tmp_path: Path) -> None:
    server.body("/real.png", png())
    path = fetch_image(server.redirect("/old", "/real.png", status=301), tmp_path, "B1", FAST)
    assert path.name == "B1.png" and server.hits == {"/old": 1, "/real.png": 1}


def test_redirect_loop_is_detected(server: Server, tmp_path: Path) -> None:
    server.redirect("/b", "/a")
    url = server.redirect("/a", "/b")
    with pytest.raises(ImageFetchError, match="redirect loop"):
        fetch_image(url, tmp_path, "B1", FAST)
    assert server.hits == {"/a": 1, "/b": 1}  # not retried either
    assert files(tmp_path) == []


def test_redirects_are_capped(server: Server, tmp_path: Path) -> None:
    for i in range(10):
        server.redirect(f"/r{i}", f"/r{i + 1}")
    with pytest.raises(ImageFetchError, match="more than 3 redirects"):
        fetch_image(server.url + "/r0", tmp_path, "B1", FAST)
    assert sum(server.hits.values()) == 4


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/x.png"])
def test_redirect_to_another_scheme_is_refused(server: Server, tmp_path: Path, target: str) -> None:
    with pytest.raises(ImageFetchError, match="redirect|not an http"):
        fetch_image(server.redirect("/evil", target), tmp_path, "B1", FAST)
    assert files(tmp_path) == []


def test_a_claimed_2gb_body_is_refused_before_reading(server: Server, tmp_path: Path) -> None:
    url = server.stream("/huge.png", claim=TWO_GB, head=png()[:16])
    tracemalloc.start()
    try:
        with pytest.raises(ImageFetchError, match="too large: Content-Length 2147483648"):
            fetch_image(url, tmp_path, "B1", FAST)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024
    assert files(tmp_path) == []


def test_a_streamed_2gb_body_without_length_is_cut_off_at_the_cap(server: Server, tmp_path: Path) -> None:
    url = server.stream("/endless.png", claim=None, head=png()[:16])
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ImageFetchError, match="too large: more than max_bytes 1048576"):
            fetch_image(url, tmp_path, "B1", FAST)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 10
    # Bounded chunks: the 2 GB never sits in memory, and the client stopped reading at the cap
    # (the server got ahead only by what the socket buffers hold).
    assert peak < 4 * 1024 * 1024
    time.sleep(0.2)
    assert server.sent.get("/endless.png", 0) < 64 * 1024 * 1024
    assert server.hits["/endless.png"] == 1  # too large is not retried
    assert files(tmp_path) == []  # no partial file


@pytest.mark.parametrize(
    ("body", "ctype", "match"),
    [
        (b"<html><body>Sorry, no image</body></html>", "text/html; charset=utf-8", "content type 'text/html'"),
        (b"<html><body>Sorry, no image</body></html>", "image/png", "not an image: the file starts with b'<html><b'"),
        (png()[:40] + b"\0" * 40, "image/png", "not a readable image"),  # right magic bytes, broken file
        (jpeg()[:-40], "image/jpeg", "not a readable image"),  # a JPEG cut short
        (b"", "image/png", "empty body"),
    ],
)
def test_non_images_are_refused_and_leave_no_file(
    server: Server, tmp_path: Path, body: bytes, ctype: str, match: str
) -> None:
    with pytest.raises(ImageFetchError, match=match):
        fetch_image(server.body("/x", body, ctype=ctype), tmp_path, "B1", FAST)
    assert server.hits["/x"] == 1 and files(tmp_path) == []


def test_decompression_bomb_is_refused(server: Server, tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buf, "PNG")  # 64 Mpx in a few kB
    with pytest.raises(ImageFetchError, match="pixels|DecompressionBomb"):
        fetch_image(server.body("/bomb.png", buf.getvalue()), tmp_path, "B1", FAST)
    assert files(tmp_path) == []


def test_slow_server_times_out_after_bounded_retries(server: Server, tmp_path: Path) -> None:
    url = server.body("/slow.png", png(), delay_s=0.6)
    config = ImageFetchConfig(timeout_s=0.2, retries=1, backoff_s=0.01)
    with pytest.raises(ImageFetchError, match="timed out after 0.2s.*after 2 attempts"):
        fetch_image(url, tmp_path, "B1", config)
    time.sleep(0.5)
    assert server.hits["/slow.png"] == 2 and files(tmp_path) == []


def test_transient_errors_are_retried_then_succeed(server: Server, tmp_path: Path) -> None:
    data = png()
    answers = iter([503, 429, 200])

    def flaky(h: http.server.BaseHTTPRequestHandler) -> None:
        status = next(answers)
        body = data if status == 200 else b"busy"
        h.send_response(status)
        h.send_header("Content-Type", "image/png" if status == 200 else "text/plain")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    server.routes["/flaky.png"] = flaky
    path = fetch_image(server.url + "/flaky.png", tmp_path, "B1", FAST)
    assert path.read_bytes() == data and server.hits["/flaky.png"] == 3


def test_404_is_not_retried(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ImageFetchError, match="HTTP 404"):
        fetch_image(server.url + "/gone.png", tmp_path, "B1", FAST)
    assert server.hits["/gone.png"] == 1


def test_truncated_body_is_retried_and_leaves_no_partial_file(server: Server, tmp_path: Path) -> None:
    data = png(64)

    def short(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "image/png")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data[: len(data) // 2])
        h.close_connection = True

    server.routes["/short.png"] = short
    with pytest.raises(ImageFetchError, match="truncated|connection lost"):
        fetch_image(server.url + "/short.png", tmp_path, "B1", FAST)
    assert server.hits["/short.png"] == 3 and files(tmp_path) == []


def test_a_failed_fetch_keeps_the_earlier_file(server: Server, tmp_path: Path) -> None:
    old = png(colour=(1, 2, 3))
    (tmp_path / "B1.png").write_bytes(old)
    with pytest.raises(ImageFetchError):
        fetch_image(server.body("/x", b"<html/>", ctype="image/png"), tmp_path, "B1", FAST)
    assert (tmp_path / "B1.png").read_bytes() == old and files(tmp_path) == ["B1.png"]


def test_batch_skips_and_reports_failures(server: Server, tmp_path: Path) -> None:
    wanted = [
        ("B1", server.body("/1.png", png())),
        ("B2", server.body("/2", b"<html/>", ctype="text/html")),
        ("B3", "file:///etc/passwd"),
        ("B4", server.url + "/missing.png"),
        ("B5", server.body("/5.jpg", jpeg(), ctype="image/jpeg")),
    ]
    result = download_images(wanted, tmp_path / "images", FAST)
    assert {k: p.name for k, p in result.paths.items()} == {"B1": "B1.png", "B5": "B5.jpg"}
    reasons = {f["item_id"]: (f["url"], f["reason"]) for f in result.failures}
    assert set(reasons) == {"B2", "B3", "B4"}
    assert reasons["B3"] == ("file:///etc/passwd", "refused: not an http(s) URL ('file:///etc/passwd')")
    assert "content type" in reasons["B2"][1] and "HTTP 404" in reasons["B4"][1]
    assert files(tmp_path / "images") == ["B1.png", "B5.jpg"]


def test_offline_stops_early_with_a_clear_message(tmp_path: Path) -> None:
    port = closed_port()
    wanted = [(f"B{i}", f"http://127.0.0.1:{port}/{i}.png") for i in range(200)]
    config = ImageFetchConfig(timeout_s=1, retries=1, backoff_s=0.05, workers=2)
    start = time.perf_counter()
    with pytest.raises(OfflineError, match=r"no network: the first \d+ image download\(s\) could not connect") as err:
        download_images(wanted, tmp_path, config)
    assert time.perf_counter() - start < 5  # 200 x (1 + retries) attempts would take far longer
    assert "Connection refused" in str(err.value) and files(tmp_path) == []


def test_one_dead_url_among_good_ones_is_not_offline(server: Server, tmp_path: Path) -> None:
    port = closed_port()
    wanted = [("B0", server.body("/0.png", png()))] + [(f"B{i}", f"http://127.0.0.1:{port}/{i}") for i in range(1, 5)]
    result = download_images(wanted, tmp_path, ImageFetchConfig(retries=0, workers=1))
    assert list(result.paths) == ["B0"] and len(result.failures) == 4
    assert all("cannot connect" in f["reason"] for f in result.failures)


def test_sniff_image() -> None:
    assert sniff_image(png()) == ".png" and sniff_image(jpeg()) == ".jpg"
    assert sniff_image(b"GIF89a....") == ".gif" and sniff_image(b"RIFF\0\0\0\0WEBPVP8 ") == ".webp"
    assert sniff_image(b"<!DOCTYPE html>") is None and sniff_image(b"") is None
