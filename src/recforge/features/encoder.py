"""`FeatureEncoder`: fits vocabularies, scalers and buckets on train, encodes any table the same way.

`FeatureEncoder(config).fit(train)` learns what each field needs from the training rows only;
`encode(frame)` turns rows into one `FieldBatch` (global feature index and value per slot) that
every feature-aware family reads; `state()` / `FeatureEncoder.from_state` round-trip the fitted
encoder through JSON, so it is saved with the model and serving encodes new rows identically.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from recforge.data.errors import DataError
from recforge.features.fields import (
    BucketisedField,
    CategoricalField,
    ContextField,
    CrossField,
    FeatureConfig,
    HashedField,
    MultiHotField,
    NumericField,
)

# `gap` buckets: log2 of the seconds since the user's previous event, 0..GAP_BUCKETS-1 (+ first)
GAP_BUCKETS = 32


def stable_hash(values: pd.Series) -> np.ndarray:
    """CRC32 of each value's text: the same ids in every process and on every machine (Python's
    `hash` is salted per process). Each distinct value is hashed once."""
    codes, uniques = _distinct(pd.Series(values, copy=False))
    hashed = np.fromiter((zlib.crc32(str(v).encode()) for v in uniques), dtype=np.int64, count=len(uniques))
    return hashed[codes]


def _distinct(col: pd.Series) -> tuple[np.ndarray, list[str]]:
    """(codes, distinct texts) with every row's text = texts[code]; a missing value is the text
    "nan" / "<NA>" as `str` writes it (callers mask missing rows themselves). A categorical column
    is read off its codes, without building a string per row."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy().astype(np.int64)
        texts = [str(c) for c in col.cat.categories] + ["nan"]
        return np.where(codes < 0, len(texts) - 1, codes), texts
    codes, uniques = pd.factorize(col.astype(str), use_na_sentinel=False)
    return codes, [str(u) for u in uniques]


def _vocab_index(col: pd.Series, vocab: list[str]) -> np.ndarray:
    """1 + the position of each value's text in `vocab`, 0 for a missing or unknown value; one
    dictionary lookup per distinct value, not per row."""
    present = col.notna().to_numpy()
    codes, uniques = _distinct(col)
    lookup = {v: i + 1 for i, v in enumerate(vocab)}
    per_unique = np.fromiter((lookup.get(v, 0) for v in uniques), dtype=np.int64, count=len(uniques))
    return np.where(present, per_unique[codes], 0)


def _present_text(col: pd.Series) -> np.ndarray:
    """Rows with a non-missing, non-empty value."""
    codes, uniques = _distinct(col)
    nonempty = np.fromiter((u != "" for u in uniques), dtype=bool, count=len(uniques))
    return col.notna().to_numpy() & nonempty[codes]


@dataclass
class FieldBatch:
    """Rows encoded for a feature-aware network: `index` (N, S) global feature ids, `value` (N, S)
    their values; `slots[name]` is the field's slice of the S slots."""

    index: torch.Tensor
    value: torch.Tensor
    slots: dict[str, slice]
    n_features: int
    # per categorical / multi-hot field: how many rows held a value the vocabulary lacks (mapped
    # to the unknown index 0), for the serving report
    unknown: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def take(self, rows: torch.Tensor) -> FieldBatch:
        return FieldBatch(self.index[rows], self.value[rows], self.slots, self.n_features, self.unknown)


def _text(series: pd.Series) -> np.ndarray:
    """Each value as text ('' for missing), as a numpy unicode array."""
    return np.asarray([("" if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA else str(v)) for v in series], dtype=str)


def _tokens(series: pd.Series, sep: str, levels: str | None) -> list[list[str]]:
    out = []
    for v in series:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
            out.append([])
            continue
        parts = list(v) if isinstance(v, list | tuple | np.ndarray) else str(v).split(sep)
        toks: list[str] = []
        for p in parts:
            p = str(p).strip()
            if not p:
                continue
            if levels:
                pieces = p.split(levels)
                toks.extend(levels.join(pieces[: i + 1]) for i in range(len(pieces)))
            else:
                toks.append(p)
        out.append(list(dict.fromkeys(toks)))
    return out


class FeatureEncoder:
    """Encodes a table's fields; fit on train only."""

    def __init__(self, config: FeatureConfig | dict[str, Any]) -> None:
        self.config = config if isinstance(config, FeatureConfig) else FeatureConfig.model_validate(config)
        self._state: dict[str, dict[str, Any]] | None = None

    # ------------------------------------------------------------------ fitting
    def _check_columns(self, frame: pd.DataFrame, table: str) -> None:
        for f in self.config.fields:
            wanted = f.columns if isinstance(f, CrossField) else [f.column]
            if isinstance(f, ContextField) and f.part == "gap":
                wanted = [f.column, f.user_column]
            for col in wanted:
                if col not in frame.columns:
                    raise DataError(
                        f"field {f.name!r} reads column {col!r}, which the table lacks "
                        f"(columns: {sorted(map(str, frame.columns))})",
                        source=table, column=col,
                    )  # fmt: skip

    def _check_values(self, frame: pd.DataFrame, table: str, fitting: bool) -> None:
        """Numeric columns hold numbers (text names its rows); at fit, no field is all-null and no
        categorical vocabulary is a single value."""
        for f in self.config.fields:
            cols = f.columns if isinstance(f, CrossField) else [f.column]
            if isinstance(f, NumericField | BucketisedField | ContextField) and not pd.api.types.is_numeric_dtype(
                frame[f.column]
            ):
                raw = frame[f.column]
                num = pd.to_numeric(raw, errors="coerce")
                bad = num.isna() & raw.notna() & (raw.astype("string").str.strip() != "")
                if bad.any():
                    rows = frame.index[bad.to_numpy()].tolist()
                    shown = [repr(v) for v in raw[bad].head(3)]
                    raise DataError(
                        f"field {f.name!r} is {f.kind} but the column holds non-numbers ({', '.join(shown)})",
                        source=table, column=f.column, rows=rows,
                    )  # fmt: skip
            if not fitting or not len(frame):
                continue
            for col in cols:
                if frame[col].isna().all():
                    raise DataError(
                        f"field {f.name!r}: every value is null in the training rows, so it cannot be "
                        "fitted; fill the column or remove the field from the parameters",
                        source=table, column=col,
                    )  # fmt: skip
            if isinstance(f, CategoricalField):
                values = frame[f.column].dropna().unique().astype(str)
                if len(values) == 1:
                    raise DataError(
                        f"field {f.name!r}: the training rows hold one value only ({values[0]!r}), so the "
                        "field carries no signal; remove it from the parameters",
                        source=table, column=f.column,
                    )  # fmt: skip

    def fit(self, train: pd.DataFrame, table: str = "train") -> FeatureEncoder:
        self._check_columns(train, table)
        self._check_values(train, table, fitting=True)
        state: dict[str, dict[str, Any]] = {}
        for f in self.config.fields:
            if isinstance(f, CategoricalField):
                counts = train[f.column].value_counts(dropna=True)
                counts.index = counts.index.astype(str)
                counts = counts.groupby(level=0).sum()
                vocab = sorted(counts[counts >= f.min_count].index)
                state[f.name] = {"vocab": vocab, "size": len(vocab) + 1, "slots": 1}
            elif isinstance(f, MultiHotField):
                counts: dict[str, int] = {}
                for toks in _tokens(train[f.column], f.sep, f.levels):
                    for t in toks:
                        counts[t] = counts.get(t, 0) + 1
                vocab = sorted(t for t, c in counts.items() if c >= f.min_count)
                state[f.name] = {"vocab": vocab, "size": len(vocab) + 1, "slots": f.max_len}
            elif isinstance(f, NumericField):
                x = pd.to_numeric(train[f.column], errors="coerce").astype(float)
                mean = float(x.mean()) if x.notna().any() else 0.0
                std = float(x.std(ddof=0)) if x.notna().sum() > 1 else 1.0
                state[f.name] = {"mean": mean, "std": std if std > 0 else 1.0, "size": 3, "slots": 1}
            elif isinstance(f, BucketisedField):
                x = pd.to_numeric(train[f.column], errors="coerce").dropna().astype(float)
                qs = np.quantile(x, np.linspace(0, 1, f.buckets + 1)[1:-1]) if len(x) else np.array([])
                edges = sorted(set(float(q) for q in qs))
                state[f.name] = {"edges": edges, "size": len(edges) + 2, "slots": 1}
            elif isinstance(f, HashedField | CrossField):
                state[f.name] = {"size": f.buckets + 1, "slots": 1}
            elif isinstance(f, ContextField):
                size = {"hour": 24, "weekday": 7, "gap": GAP_BUCKETS + 1}[f.part] + 1
                state[f.name] = {"size": size, "slots": 1}
        offset = 0
        for f in self.config.fields:
            state[f.name]["offset"] = offset
            offset += state[f.name]["size"]
        self._state = state
        return self

    @property
    def fitted(self) -> bool:
        return self._state is not None

    @property
    def n_features(self) -> int:
        """Rows of the one embedding table every slot indexes."""
        return sum(s["size"] for s in self._fitted().values())

    @property
    def n_slots(self) -> int:
        return sum(s["slots"] for s in self._fitted().values())

    def _fitted(self) -> dict[str, dict[str, Any]]:
        if self._state is None:
            raise RuntimeError("FeatureEncoder: call fit(train) before encode")
        return self._state

    # ------------------------------------------------------------------ encoding
    def encode(self, frame: pd.DataFrame, table: str = "rows") -> FieldBatch:
        state = self._fitted()
        self._check_columns(frame, table)
        self._check_values(frame, table, fitting=False)
        n = len(frame)
        index_parts, value_parts, slots, at = [], [], {}, 0
        unknown: dict[str, int] = {}
        for f in self.config.fields:
            s = state[f.name]
            idx, val = self._encode_field(f, s, frame, n)
            if isinstance(f, CategoricalField | MultiHotField):
                unknown[f.name] = self._unknown_rows(f, frame, idx)
            idx = np.where(idx > 0, idx + s["offset"], s["offset"])  # 0 stays the field's reserved row
            index_parts.append(idx.reshape(n, -1))
            value_parts.append(val.reshape(n, -1))
            slots[f.name] = slice(at, at + s["slots"])
            at += s["slots"]
        index = torch.from_numpy(np.concatenate(index_parts, axis=1).astype(np.int64))
        value = torch.from_numpy(np.concatenate(value_parts, axis=1).astype(np.float32))
        return FieldBatch(index, value, slots, self.n_features, unknown)

    @staticmethod
    def _unknown_rows(f: Any, frame: pd.DataFrame, idx: np.ndarray) -> int:
        """Rows with a value that encoded to the unknown index (a null is missing, not unknown)."""
        present = frame[f.column].notna().to_numpy()
        if isinstance(f, MultiHotField):
            present = present & (_text(frame[f.column]) != "")
            return int((present & (idx.reshape(len(frame), -1) == 0).all(axis=1)).sum())
        return int((present & (idx == 0)).sum())

    def _encode_field(self, f: Any, s: dict[str, Any], frame: pd.DataFrame, n: int) -> tuple[np.ndarray, np.ndarray]:
        ones = np.ones(n, dtype=np.float32)
        if isinstance(f, CategoricalField):
            return _vocab_index(frame[f.column], s["vocab"]), ones
        if isinstance(f, MultiHotField):
            lookup = {v: i + 1 for i, v in enumerate(s["vocab"])}
            idx = np.zeros((n, f.max_len), dtype=np.int64)
            val = np.zeros((n, f.max_len), dtype=np.float32)
            for r, toks in enumerate(_tokens(frame[f.column], f.sep, f.levels)):
                ids = [lookup[t] for t in toks if t in lookup][: f.max_len]
                if ids:
                    idx[r, : len(ids)] = ids
                    val[r, : len(ids)] = 1.0 / len(ids)
            return idx, val
        if isinstance(f, NumericField):
            x = pd.to_numeric(frame[f.column], errors="coerce").to_numpy(dtype=float)
            missing = ~np.isfinite(x)
            z = np.where(missing, 1.0, (np.nan_to_num(x) - s["mean"]) / s["std"])
            return np.where(missing, 2, 1).astype(np.int64), z.astype(np.float32)
        if isinstance(f, BucketisedField):
            x = pd.to_numeric(frame[f.column], errors="coerce").to_numpy(dtype=float)
            b = np.searchsorted(np.asarray(s["edges"], dtype=float), np.nan_to_num(x), side="right") + 1
            return np.where(np.isfinite(x), b, 0).astype(np.int64), ones
        if isinstance(f, HashedField):
            col = frame[f.column]
            return np.where(_present_text(col), 1 + stable_hash(col) % f.buckets, 0), ones
        if isinstance(f, CrossField):
            joined = pd.Series(["\x1f".join(t) for t in zip(*(_text(frame[c]) for c in f.columns), strict=True)])
            present = frame[f.columns].notna().all(axis=1).to_numpy()
            return np.where(present, 1 + stable_hash(joined) % f.buckets, 0), ones
        # context
        ts = pd.to_numeric(frame[f.column], errors="coerce")
        if f.part in ("hour", "weekday"):
            when = pd.to_datetime(ts, unit="s", utc=True)
            part = when.dt.hour if f.part == "hour" else when.dt.day_of_week
            return np.where(ts.notna(), part.fillna(0).astype(int) + 1, 0).astype(np.int64), ones
        users = _text(frame[f.user_column])
        order = np.lexsort((ts.to_numpy(dtype=float), users))
        users = users[order]
        t = ts.to_numpy(dtype=float)[order]
        gap = np.full(n, np.nan)
        same = np.r_[False, users[1:] == users[:-1]]
        gap[1:][same[1:]] = (t[1:] - t[:-1])[same[1:]]
        known = np.isfinite(gap)
        logs = np.zeros(n, dtype=np.int64)
        logs[known] = np.minimum(np.log2(np.maximum(gap[known], 0) + 1).astype(np.int64), GAP_BUCKETS - 1)
        bucket = np.where(known, 2 + logs, 1)  # 1 = the user's first event
        out = np.empty(n, dtype=np.int64)
        out[order] = bucket
        return out, ones

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        """JSON-safe: the field declarations and everything fitted."""
        return {"config": self.config.model_dump(mode="json"), "fitted": self._fitted()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> FeatureEncoder:
        enc = cls(state["config"])
        enc._state = {k: dict(v) for k, v in state["fitted"].items()}
        return enc
