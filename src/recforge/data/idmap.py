"""Raw id <-> contiguous index, fitted on training data (LightFM's `Dataset` idea).

Raw ids are `*_id` (strings), indices are `*_idx` (int64 in [0, n)). Only an `IdMap` converts
between them; an id it has not seen raises `UnknownIdError` naming it, unless the caller asks for
a sentinel explicitly (used by splits to mark cold-start rows).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from recforge.data.errors import DataError, UnknownIdError

UNKNOWN = -1


class IdMap:
    """A fitted, immutable mapping between raw ids of one kind ("user" or "item") and indices."""

    def __init__(self, ids: Iterable[str], kind: str) -> None:
        values = ids if isinstance(ids, pd.Series | pd.Index | np.ndarray) else list(ids)
        arr = pd.Index(pd.array(values, dtype=pd.StringDtype()))
        if arr.has_duplicates:
            raise DataError(f"duplicate {kind} ids in id map", column=f"{kind}_id")
        if arr.isna().any():
            raise DataError(f"null {kind} id in id map", column=f"{kind}_id")
        self.kind = kind
        self._index = arr

    @classmethod
    def fit(cls, ids: Iterable[str], kind: str) -> IdMap:
        """Indices in order of first appearance are not stable across runs; sorted ids are."""
        values = ids if isinstance(ids, pd.Series) else pd.Series(list(ids))
        uniq = pd.Series(pd.unique(values.astype(pd.StringDtype()).dropna()), dtype=pd.StringDtype())
        return cls(uniq.sort_values(kind="stable").reset_index(drop=True), kind)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, raw_id: object) -> bool:
        return raw_id in self._index

    @property
    def ids(self) -> np.ndarray:
        return self._index.to_numpy(dtype=object)

    def to_index(self, ids: Iterable[str] | pd.Series, unknown: int | None = None) -> np.ndarray:
        """Indices of `ids`; unknown ids raise, or become `unknown` when it is given (e.g. -1)."""
        values = ids if isinstance(ids, pd.Series) else pd.Series(list(ids), dtype=pd.StringDtype())
        idx = self._index.get_indexer(values.astype(pd.StringDtype()))
        missing = idx < 0
        if missing.any():
            if unknown is None:
                raise UnknownIdError(self.kind, pd.unique(values[missing]).tolist())
            idx = np.where(missing, unknown, idx)
        return idx.astype(np.int64)

    def to_id(self, idx: Iterable[int] | np.ndarray) -> np.ndarray:
        """Raw ids of indices; an index outside [0, n) raises."""
        arr = np.asarray(list(idx) if not isinstance(idx, np.ndarray) else idx, dtype=np.int64)
        bad = (arr < 0) | (arr >= len(self))
        if bad.any():
            raise UnknownIdError(f"{self.kind} index", arr[bad].tolist())
        return self.ids[arr]

    def to_frame(self) -> pd.DataFrame:
        """The map as a table (`<kind>_id`, `<kind>_idx`), for the catalog."""
        return pd.DataFrame(
            {f"{self.kind}_id": self._index.array, f"{self.kind}_idx": np.arange(len(self), dtype=np.int64)}
        )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, kind: str) -> IdMap:
        """Inverse of `to_frame`; checks the indices are 0..n-1 in order."""
        idx = frame[f"{kind}_idx"].to_numpy()
        if not np.array_equal(idx, np.arange(len(frame))):
            raise DataError(f"{kind}_idx is not 0..n-1 in order", column=f"{kind}_idx")
        return cls(frame[f"{kind}_id"], kind)

    def __repr__(self) -> str:
        return f"IdMap(kind={self.kind!r}, n={len(self)})"
