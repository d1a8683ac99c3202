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
            os.chmod(tmp, 0o644)  # mkstemp creates 0600 files
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class RecommenderDataset(AbstractDataset):
    """A trained `Recommender` as a folder: state_dict + validated config + training matrix.

    Saved atomically by `Recommender.save`; loaded with `torch.load(weights_only=True)`.
    """

    def __init__(self, path: str, map_location: str = "cpu", metadata: dict[str, Any] | None = None) -> None:
        self._path = Path(path)
        self._map_location = map_location
        self.metadata = metadata

    def _load(self):
        from recforge.training.recommender import Recommender

        if not (self._path / "config.json").is_file():
            raise DatasetError(
                f"no trained model at {self._path}: run `kedro run --pipelines training "
                f"--namespaces {self._path.name}` first"
            )
        return Recommender.load(self._path, map_location=self._map_location)

    def _save(self, data) -> None:
        data.save(self._path)

    def _exists(self) -> bool:
        return (self._path / "config.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
