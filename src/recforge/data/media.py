"""The media root: image and audio files keyed by their path relative to it, plus a manifest.

`manifest.json` is always present (a JSON list of {path, sha256, bytes}, sorted by path), so the
folder exists for DVC even for sources without media, and a reader can verify every file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from recforge.data.errors import DataError

MANIFEST = "manifest.json"


def _check_key(key: str, source: str) -> None:
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts or "\\" in key:
        raise DataError(f"media path {key!r} is not a relative POSIX path inside the media root", source=source)
    if key == MANIFEST:
        raise DataError(f"{MANIFEST!r} is reserved for the manifest", source=source)


def build_manifest(files: Mapping[str, bytes]) -> list[dict[str, object]]:
    """One {path, sha256, bytes} record per file, sorted by path."""
    return [
        {"path": key, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        for key, data in sorted(files.items())
    ]


def with_manifest(files: Mapping[str, bytes], source: str = "media") -> dict[str, bytes]:
    """`files` plus `manifest.json`, ready for the `media` PartitionedDataset."""
    for key in files:
        _check_key(key, source)
    out = dict(files)
    out[MANIFEST] = (json.dumps(build_manifest(files), indent=2) + "\n").encode("utf-8")
    return out


def read_media_dir(root: Path) -> dict[str, bytes]:
    """Every file under `root` keyed by its relative POSIX path (hidden files and a manifest skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("media folder not found", source=str(root))
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {
        p.relative_to(root).as_posix(): p.read_bytes() for p in files if p.relative_to(root).as_posix() != MANIFEST
    }
