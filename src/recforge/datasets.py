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
    """A trained `Recommender` (or `training.ctr.CTRModel`) as a folder: state_dict + validated
    config (+ the training matrix, or the row encoder).

    Saved atomically by `Recommender.save`; loaded with `torch.load(weights_only=True)`.
    """

    def __init__(
        self, path: str, map_location: str = "cpu", metadata: dict[str, Any] | None = None, missing_hint: str | None = None
    ) -> None:
        self._path = Path(path)
        self._map_location = map_location
        self.metadata = metadata
        self._missing_hint = missing_hint

    def _load(self):
        import json

        from recforge.training.ctr import CTRModel
        from recforge.training.recommender import Recommender

        if not (self._path / "config.json").is_file():
            hint = self._missing_hint or f"kedro run --pipelines training --namespaces {self._path.name}"
            raise DatasetError(f"no trained model at {self._path}: run `{hint}` first")
        kind = json.loads((self._path / "config.json").read_text()).get("kind")
        estimator = CTRModel if kind == "ctr" else Recommender  # a click model or a recommender
        return estimator.load(self._path, map_location=self._map_location)

    def _save(self, data) -> None:
        data.save(self._path)

    def _exists(self) -> bool:
        return (self._path / "config.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class OptionalJSONDataset(AbstractDataset[dict, dict]):
    """A JSON file that may not exist yet: loads None when absent (a family that was never
    tuned), saves atomically. The leaderboard reads the tuned metrics of every family this way."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = Path(filepath)
        self.metadata = metadata

    def _load(self) -> dict | None:
        import json

        if not self._filepath.is_file():
            return None
        try:
            return json.loads(self._filepath.read_text())
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read {self._filepath}: {exc}") from exc

    def _save(self, data: dict) -> None:
        import json

        BinaryFileDataset(str(self._filepath))._save(json.dumps(data, indent=2).encode())

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class TuningStorageDataset(AbstractDataset[None, Any]):
    """Where a family's Optuna study lives, as a `recforge.tuning.storage.TuningStorage` (read-only).

    With `credentials` holding a `url` (Kedro credentials, e.g. `tuning_storage` in
    `conf/local/credentials.yml`: a PostgreSQL database that many workers share) that URL;
    otherwise the embedded SQLite file `filepath`. The URL is never shown: `_describe` and every
    message use the redacted form.
    """

    def __init__(
        self, filepath: str, credentials: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
    ) -> None:
        self._filepath = Path(filepath)
        self._url = (credentials or {}).get("url") or None
        self.metadata = metadata

    def _load(self):
        from recforge.tuning.storage import TuningStorage, sqlite_url

        if self._url:
            return TuningStorage(str(self._url), from_credentials=True)
        return TuningStorage(sqlite_url(self._filepath))

    def _save(self, data: None) -> None:
        raise DatasetError("TuningStorageDataset is read-only: Optuna writes the study itself")

    def _exists(self) -> bool:
        return bool(self._url) or self._filepath.is_file()

    def _describe(self) -> dict[str, Any]:
        from recforge.tuning.storage import redact

        return {"storage": redact(self._url) if self._url else str(self._filepath)}


class CriteoDataset(AbstractDataset[None, Any]):
    """The Criteo click log as the `ctr` pipeline's impression table (read-only).

    Converts the raw file (`recforge.data.criteo.convert_criteo`: streamed in chunks, bad lines
    named or skipped) to `parquet_path` when the parquet is missing or older than the raw file,
    then loads the last `max_rows` rows (all when None) by row groups. The raw file is never
    modified."""

    def __init__(self, raw_path: str, parquet_path: str, on_bad_rows: str = "error", chunk_rows: int = 250_000,
                 max_rows: int | None = None, metadata: dict[str, Any] | None = None) -> None:  # fmt: skip
        self._raw, self._parquet = Path(raw_path), Path(parquet_path)
        self._on_bad_rows, self._chunk_rows, self._max_rows = on_bad_rows, chunk_rows, max_rows
        self.metadata = metadata

    def _load(self):
        import pyarrow as pa
        import pyarrow.parquet as pq

        from recforge.data.criteo import convert_criteo

        stale = not self._parquet.is_file() or (
            self._raw.is_file() and self._raw.stat().st_mtime > self._parquet.stat().st_mtime
        )
        if stale:
            convert_criteo(self._raw, self._parquet, chunk_rows=self._chunk_rows, on_bad_rows=self._on_bad_rows)
        f = pq.ParquetFile(self._parquet)
        groups, rows = [], 0
        for g in reversed(range(f.num_row_groups)):  # the latest rows: a time-ordered log's future
            groups.insert(0, g)
            rows += f.metadata.row_group(g).num_rows
            if self._max_rows is not None and rows >= self._max_rows:
                break
        table = pa.concat_tables([f.read_row_group(g) for g in groups]) if groups else f.schema_arrow.empty_table()
        frame = table.to_pandas()
        return frame.tail(self._max_rows).reset_index(drop=True) if self._max_rows is not None else frame

    def _save(self, data) -> None:
        raise DatasetError("the Criteo log is read-only: put the raw file at its raw_path")

    def _exists(self) -> bool:
        return self._parquet.is_file() or self._raw.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"raw_path": str(self._raw), "parquet_path": str(self._parquet), "max_rows": self._max_rows}


class EmptyTableDataset(AbstractDataset[None, Any]):
    """An empty table (a source without users or items, e.g. Criteo): loads a DataFrame with no rows."""

    def __init__(self, columns: list[str] | None = None, metadata: dict[str, Any] | None = None) -> None:
        self._columns = list(columns or [])
        self.metadata = metadata

    def _load(self):
        import pandas as pd

        return pd.DataFrame({c: pd.Series(dtype="string") for c in self._columns})

    def _save(self, data) -> None:
        raise DatasetError("an EmptyTableDataset holds nothing")

    def _describe(self) -> dict[str, Any]:
        return {"columns": self._columns}
