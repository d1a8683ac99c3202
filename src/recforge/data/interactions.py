"""`InteractionData`: a split as the models see it — index arrays, not raw ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recforge.data.errors import DataError
from recforge.data.schema import EVENTS


@dataclass(frozen=True)
class InteractionData:
    """Interactions of one split as contiguous indices (see `IdMap`).

    Arrays are aligned: row r is user `user_idx[r]` meeting item `item_idx[r]` with `value[r]` at
    `timestamp[r]`. `n_users`/`n_items` are the sizes of the id maps fitted on train, so every
    split of a dataset shares them.
    """

    user_idx: np.ndarray  # (N,) int64
    item_idx: np.ndarray  # (N,) int64
    value: np.ndarray  # (N,) float32: rating for explicit data, weight otherwise
    timestamp: np.ndarray  # (N,) int64 unix seconds
    n_users: int
    n_items: int
    session: np.ndarray | None = field(default=None)  # (N,) int64 session index, or None
    event: np.ndarray | None = field(default=None)  # (N,) int8 code into schema.EVENTS, or None

    def __post_init__(self) -> None:
        n = len(self.user_idx)
        for name in ("item_idx", "value", "timestamp"):
            if len(getattr(self, name)) != n:
                raise DataError(f"{name} has {len(getattr(self, name))} rows, user_idx has {n}")
        if n and (self.user_idx.min() < 0 or self.user_idx.max() >= self.n_users):
            raise DataError(f"user_idx outside [0, {self.n_users})", column="user_idx")
        if n and (self.item_idx.min() < 0 or self.item_idx.max() >= self.n_items):
            raise DataError(f"item_idx outside [0, {self.n_items})", column="item_idx")

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        n_users: int,
        n_items: int,
        *,
        name: str = "split",
        events: tuple[str, ...] | None = None,
    ) -> InteractionData:
        """From a split table (`user_idx`, `item_idx`, `value`, `timestamp`).

        Rows whose user or item is unknown to the id maps (idx -1: cold start) are dropped here;
        protocols that report cold-start slices read them from the frame itself. `events` keeps
        only those event types (e.g. `("rating",)` for explicit models).
        """
        missing = [c for c in ("user_idx", "item_idx", "value", "timestamp") if c not in frame.columns]
        if missing:
            raise DataError(f"missing column(s) {missing}", source=name, column=missing[0])
        known = (frame["user_idx"].to_numpy() >= 0) & (frame["item_idx"].to_numpy() >= 0)
        if events is not None:
            known &= frame["event"].astype("string").isin(list(events)).to_numpy()
        f = frame.loc[known]
        session = None
        if "session_id" in f.columns and f["session_id"].notna().any():
            session = pd.factorize(f["session_id"].astype("string").fillna("__none__"))[0].astype(np.int64)
        event = None
        if "event" in f.columns:
            event = pd.Categorical(f["event"].astype("string"), categories=list(EVENTS)).codes.astype(np.int8)
        return cls(
            event=event,
            user_idx=f["user_idx"].to_numpy(dtype=np.int64, copy=True),
            item_idx=f["item_idx"].to_numpy(dtype=np.int64, copy=True),
            value=f["value"].to_numpy(dtype=np.float32, copy=True),
            timestamp=f["timestamp"].to_numpy(dtype=np.int64, copy=True),
            n_users=int(n_users),
            n_items=int(n_items),
            session=session,
        )

    def __len__(self) -> int:
        return len(self.user_idx)

    @cached_property
    def csr(self) -> sp.csr_matrix:
        """Binary user × item matrix (duplicates collapse to 1)."""
        m = sp.csr_matrix(
            (np.ones(len(self), dtype=np.float32), (self.user_idx, self.item_idx)),
            shape=(self.n_users, self.n_items),
        )
        m.data[:] = 1.0
        m.sort_indices()
        return m

    @cached_property
    def value_csr(self) -> sp.csr_matrix:
        """User × item matrix of values (the last value wins for repeated pairs)."""
        order = np.argsort(self.timestamp, kind="stable")
        u, i, v = self.user_idx[order], self.item_idx[order], self.value[order]
        key = u * self.n_items + i
        _, last = np.unique(key[::-1], return_index=True)
        keep = len(key) - 1 - last
        m = sp.csr_matrix((v[keep], (u[keep], i[keep])), shape=(self.n_users, self.n_items))
        m.sort_indices()
        return m

    @cached_property
    def item_popularity(self) -> np.ndarray:
        """Interactions per item, (n_items,) float64."""
        return np.bincount(self.item_idx, minlength=self.n_items).astype(np.float64)
