"""Fetching source archives: bounded retries, checksum check, atomic placement.

Nothing half-downloaded or unverified is ever left where a later run would take it for real data:
bytes go to a temp file beside the destination, are checked, and only then renamed into place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
# Client errors other than these will not heal on a retry (404, 403, ...), so they fail at once.
RETRYABLE_HTTP = frozenset({408, 425, 429})


class DownloadError(OSError):
    """A file could not be fetched, or what was fetched is not what was expected."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large archives do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_once(url: str, tmp: Path, timeout_s: float) -> None:
    tmp.unlink(missing_ok=True)  # a failed earlier attempt may have left bytes
    with urllib.request.urlopen(url, timeout=timeout_s) as resp, open(tmp, "xb") as out:
        expected = resp.headers.get("Content-Length")
        written = 0
        for chunk in iter(lambda: resp.read(_CHUNK), b""):
            out.write(chunk)
            written += len(chunk)
    # A dropped connection can end the body early without an exception.
    if expected is not None and written != int(expected):
        raise DownloadError(f"truncated download from {url}: got {written} of {expected} bytes")


def download_file(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    timeout_s: float = 30.0,
    retries: int = 3,
    backoff_s: float = 1.0,
) -> Path:
    """Download `url` to `dest` atomically, retrying transient failures with exponential backoff.

    At most `1 + retries` attempts are made, sleeping `backoff_s * 2**k` between them. When
    `sha256` is given the file must match it, or `DownloadError` is raised and nothing is kept.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would stick to the final file; "xb" below honours the umask.
    tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(8)}.part")
    try:
        last: Exception | None = None
        for attempt in range(retries + 1):
            if attempt:
                delay = backoff_s * 2 ** (attempt - 1)
                logger.warning("download of %s failed (%s); retry %d/%d in %.1fs", url, last, attempt, retries, delay)
                time.sleep(delay)
            try:
                _fetch_once(url, tmp, timeout_s)
                break
            except urllib.error.HTTPError as exc:
                last = exc
                if 400 <= exc.code < 500 and exc.code not in RETRYABLE_HTTP:
                    raise DownloadError(f"{url} answered HTTP {exc.code} {exc.reason}") from exc
            except (urllib.error.URLError, TimeoutError, ConnectionError, DownloadError, OSError) as exc:
                last = exc
        else:
            raise DownloadError(f"could not download {url} after {retries + 1} attempt(s): {last}") from last
        if sha256 is not None:
            got = sha256_file(tmp)
            if got.lower() != sha256.lower():
                raise DownloadError(
                    f"checksum mismatch for {url}: expected sha256 {sha256.lower()}, got {got}"
                )
        os.replace(tmp, dest)
        logger.info("downloaded %s to %s (%d bytes)", url, dest, dest.stat().st_size)
        return dest
    finally:
        tmp.unlink(missing_ok=True)


def extract_zip(archive: Path, dest_dir: Path) -> list[Path]:
    """Extract `archive` into `dest_dir` and return the files written.

    Members with absolute paths or `..` are refused, so an archive cannot write outside `dest_dir`.
    """
    dest_dir = Path(dest_dir)
    written: list[Path] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                name = PurePosixPath(info.filename)
                if name.is_absolute() or ".." in name.parts:
                    raise DownloadError(f"unsafe member {info.filename!r} in {archive}")
                if info.is_dir():
                    continue
                target = dest_dir.joinpath(*name.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                written.append(target)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive} is not a valid zip archive: {exc}") from exc
    return written
