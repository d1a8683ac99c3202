"""Fetching item images from URLs in a source's metadata, defensively.

Metadata URLs point anywhere, so every fetch is bounded: http(s) only (redirects included), at most
`max_redirects` redirects and none back to a URL already visited, a connect/read timeout, a size
cap enforced while streaming (a claimed or real 2 GB body is refused after at most `max_bytes` + 1
bytes, never held in memory), a `Content-Type: image/*` check and a check that the bytes are a
JPEG, PNG, GIF or WebP that Pillow can parse. Bytes go to a temp file beside the destination and
are renamed into place only when every check passed, so a failure leaves no partial file.

Transient failures (connection errors, timeouts, HTTP 5xx / 408 / 425 / 429, truncated bodies) are
retried with exponential backoff; the rest fail at once. A failed image is skipped and reported
(`{item_id, url, reason}`), never fatal, except when the network is plainly unreachable: when the
first attempts all fail to connect and none has succeeded, the batch stops with `OfflineError`
instead of spending minutes on retries that cannot work.
"""

from __future__ import annotations

import email.message
import errno
import http.client
import logging
import os
import re
import secrets
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from recforge.data.download import RETRYABLE_HTTP, DownloadError

logger = logging.getLogger(__name__)

_CHUNK = 64 * 1024
_SCHEMES = ("http", "https")
# The formats the image encoder decodes, by their leading bytes; the value is the file suffix.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", ".jpg"),
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"GIF87a", ".gif"),
    (b"GIF89a", ".gif"),
)
IMAGE_SUFFIXES = (".jpg", ".png", ".gif", ".webp")
_PIL_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp"}
# Item ids become file names: anything else (a "/", "..", a space) is refused, not rewritten.
_SAFE_STEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
# How many connection failures, with no success before them, mean "offline".
OFFLINE_AFTER = 3
USER_AGENT = "recforge-image-fetch/1"


class ImageFetchError(Exception):
    """One image could not be fetched; `retry` says whether trying again may help.

    Not an `OSError`, so no generic network handler (urllib's included) can swallow it.
    """

    def __init__(self, reason: str, *, retry: bool = False, offline: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry
        self.offline = offline

    def __str__(self) -> str:  # `reason` gains the attempt count after retries
        return self.reason


class OfflineError(DownloadError):
    """The network is unreachable: the first attempts all failed to connect."""


@dataclass(frozen=True)
class ImageFetchConfig:
    """Limits of one fetch; `workers` downloads run at once."""

    timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 1.0
    max_bytes: int = 5 * 1024 * 1024
    max_redirects: int = 5
    max_pixels: int = 40_000_000  # decompression bombs: a 1 MB PNG can claim 100k x 100k pixels
    deadline_s: float = 60.0  # one attempt in all: a server dripping a byte per `timeout_s` is cut off
    workers: int = 8


@dataclass(frozen=True)
class ImageDownloads:
    """What `download_images` did: the files written and one record per failure."""

    paths: dict[str, Path]  # item_id -> the image file written
    failures: list[dict[str, str]] = field(default_factory=list)  # {item_id, url, reason}


def check_url(url: str) -> None:
    """Raise `ImageFetchError` unless `url` is an absolute http(s) URL with a host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in _SCHEMES or not parts.hostname:
        raise ImageFetchError(f"refused: not an http(s) URL ({url[:80]!r})")


class _Redirects(urllib.request.HTTPRedirectHandler):
    """urllib's redirect handler with a hard cap, loop detection and http(s)-only targets."""

    def __init__(self, max_redirects: int) -> None:
        self.max_redirects = max_redirects

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201 - urllib's signature
        chain: list[str] = getattr(req, "recforge_chain", [req.full_url])
        try:
            check_url(newurl)
            if newurl in chain:
                raise ImageFetchError(f"redirect loop: {newurl} was already visited ({len(chain)} hops)")
            if len(chain) > self.max_redirects:
                raise ImageFetchError(f"more than {self.max_redirects} redirects")
        except ImageFetchError:
            fp.close()
            raise
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None:
            new.recforge_chain = [*chain, newurl]
        return new


def _opener(config: ImageFetchConfig) -> urllib.request.OpenerDirector:
    # Only what http(s) needs: no file://, ftp:// or data: handlers for a redirect to reach.
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
        _Redirects(config.max_redirects),
    ):
        opener.add_handler(handler)
    return opener


def sniff_image(head: bytes) -> str | None:
    """The file suffix of a JPEG, PNG, GIF or WebP from its first bytes, else None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ".webp"
    return next((suffix for magic, suffix in _MAGIC if head.startswith(magic)), None)


def _check_image(path: Path, config: ImageFetchConfig) -> str:
    """The suffix of the image in `path`, or `ImageFetchError` saying why it is not one."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    suffix = sniff_image(head)
    if suffix is None:
        raise ImageFetchError(f"not an image: the file starts with {head[:8]!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                fmt = img.format
                if width * height > config.max_pixels:  # checked from the header, before decoding
                    raise ImageFetchError(f"image of {width} x {height} pixels exceeds {config.max_pixels} pixels")
                img.load()  # decode it all, as the image encoder will: a truncated file fails here
    except ImageFetchError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a bad file
        raise ImageFetchError(f"not a readable image ({type(exc).__name__}: {exc})") from exc
    if _PIL_FORMATS.get(fmt or "") != suffix:
        raise ImageFetchError(f"the bytes say {suffix} but Pillow reads {fmt}")
    return suffix


def _unreachable(reason: object) -> bool:
    """Whether a connection error means no route to the host at all (DNS, refused, no network)."""
    if isinstance(reason, socket.gaierror | ConnectionRefusedError):
        return True
    return isinstance(reason, OSError) and reason.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN)


def _fetch_once(opener: urllib.request.OpenerDirector, url: str, tmp: Path, config: ImageFetchConfig) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept": "image/*"})
    try:
        resp = opener.open(request, timeout=config.timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        if 300 <= exc.code < 400:
            raise ImageFetchError(f"redirect refused: HTTP {exc.code} {exc.reason}") from exc
        retry = exc.code >= 500 or exc.code in RETRYABLE_HTTP
        raise ImageFetchError(f"HTTP {exc.code} {exc.reason}", retry=retry) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError | socket.timeout):
            raise ImageFetchError(f"timed out after {config.timeout_s:g}s", retry=True) from exc
        raise ImageFetchError(f"cannot connect: {reason}", retry=True, offline=_unreachable(reason)) from exc
    with resp:
        headers: email.message.Message = resp.headers
        ctype = headers.get_content_type()
        if not ctype.startswith("image/"):
            raise ImageFetchError(f"content type {ctype!r} is not image/*")
        claimed = headers.get("Content-Length")
        if claimed is not None and claimed.isdigit() and int(claimed) > config.max_bytes:
            raise ImageFetchError(f"too large: Content-Length {int(claimed)} > max_bytes {config.max_bytes}")
        written = 0
        deadline = time.monotonic() + config.deadline_s
        try:
            with open(tmp, "xb") as out:
                # Read at most max_bytes + 1 bytes in bounded chunks: one byte over the cap proves it.
                while chunk := resp.read(min(_CHUNK, config.max_bytes + 1 - written)):
                    written += len(chunk)
                    if written > config.max_bytes:
                        raise ImageFetchError(f"too large: more than max_bytes {config.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise ImageFetchError(f"too slow: not done after {config.deadline_s:g}s")
                    out.write(chunk)
        except (TimeoutError, socket.timeout) as exc:
            raise ImageFetchError(f"timed out reading the body after {config.timeout_s:g}s", retry=True) from exc
        except (ConnectionError, http.client.HTTPException) as exc:
            raise ImageFetchError(f"connection lost after {written} bytes: {exc}", retry=True) from exc
    if claimed is not None and claimed.isdigit() and written != int(claimed):
        raise ImageFetchError(f"truncated: got {written} of {claimed} bytes", retry=True)
    if written == 0:
        raise ImageFetchError("empty body")


def fetch_image(
    url: str, dest_dir: Path, stem: str, config: ImageFetchConfig = ImageFetchConfig(), *, opener: Any = None
) -> Path:
    """Download the image at `url` to `dest_dir/<stem><suffix>` (suffix from its bytes) atomically.

    Raises `ImageFetchError` with the reason when the URL is refused or the result is not an image
    within the limits, after `config.retries` retries of transient failures.
    """
    check_url(url)
    if not _SAFE_STEM.match(stem):
        raise ImageFetchError(f"refused: item id {stem!r} is not a safe file name")
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    opener = opener or _opener(config)
    tmp = dest_dir / f".{stem}.{secrets.token_hex(6)}.part"
    try:
        for attempt in range(config.retries + 1):
            tmp.unlink(missing_ok=True)  # bytes of a failed earlier attempt
            try:
                _fetch_once(opener, url, tmp, config)
                break
            except ImageFetchError as exc:
                if not exc.retry or attempt == config.retries:
                    if attempt:
                        exc.reason = f"{exc.reason} (after {attempt + 1} attempts)"
                    raise
                delay = config.backoff_s * 2**attempt
                logger.debug("image %s: %s; retry %d/%d in %.1fs", url, exc.reason, attempt + 1, config.retries, delay)
                time.sleep(delay)
        suffix = _check_image(tmp, config)
        dest = dest_dir / f"{stem}{suffix}"
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def download_images(
    wanted: Sequence[tuple[str, str]], dest_dir: Path, config: ImageFetchConfig = ImageFetchConfig()
) -> ImageDownloads:
    """Fetch `(item_id, url)` pairs into `dest_dir/<item_id>.<ext>`, `config.workers` at a time.

    Failures are skipped and reported; raises `OfflineError` when the first `OFFLINE_AFTER`
    finished attempts all failed to connect and none succeeded (the rest are not attempted).
    """
    dest_dir = Path(dest_dir)
    opener = _opener(config)
    lock = threading.Lock()
    offline = threading.Event()
    state = {"ok": 0, "unreachable": 0}
    first_error: list[str] = []

    def one(item_id: str, url: str) -> tuple[str, str, Path | None, str | None]:
        if offline.is_set():
            return item_id, url, None, "not attempted: the network is unreachable"
        try:
            path = fetch_image(url, dest_dir, item_id, config, opener=opener)
        except ImageFetchError as exc:
            with lock:
                if exc.offline and state["ok"] == 0:
                    state["unreachable"] += 1
                    first_error.append(exc.reason)
                    if state["unreachable"] >= min(OFFLINE_AFTER, len(wanted)):
                        offline.set()
            return item_id, url, None, exc.reason
        with lock:
            state["ok"] += 1
        return item_id, url, path, None

    with ThreadPoolExecutor(max_workers=max(1, config.workers), thread_name_prefix="image-fetch") as pool:
        results = list(pool.map(lambda pair: one(*pair), wanted))
    if offline.is_set():
        raise OfflineError(
            f"no network: the first {state['unreachable']} image download(s) could not connect "
            f"(e.g. {first_error[0]}) and none succeeded"
        )
    paths = {item_id: path for item_id, _, path, _ in results if path is not None}
    failures = [{"item_id": i, "url": u, "reason": r} for i, u, p, r in results if p is None and r is not None]
    if failures:
        logger.warning("%d of %d image(s) skipped, e.g. %s", len(failures), len(wanted), failures[0])
    logger.info("downloaded %d image(s) into %s", len(paths), dest_dir)
    return ImageDownloads(paths, failures)

