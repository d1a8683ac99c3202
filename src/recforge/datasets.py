"""Kedro datasets of our own (Kedro-facing glue, not library code)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError


class BinaryFileDataset(AbstractDataset[bytes, bytes]):
    """One file's raw bytes, written atomically (temp file + rename), so a crash leaves no
    half-written file. Used under `partitions.PartitionedDataset` for the media root (PNG, WAV)."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def _load(self) -> bytes:
        try:
            return Path(self._filepath).read_bytes()
        except OSError as exc:
            raise DatasetError(f"cannot read media file {self._filepath}: {exc}") from exc

    def _save(self, data: bytes) -> None:
        path = Path(self._filepath)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}
