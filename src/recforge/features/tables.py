"""Feature tables: every user's and every item's attribute fields, encoded once, aligned to the id maps.

The `features` pipeline fits one `FeatureEncoder` on the users table and one on the items table —
restricted to the users and items of the id maps, which are fitted on train, so no vocabulary or
scaler sees a test-only row — and writes the encoded rows (`<kind>_idx`, `index_0..`, `value_0..`)
to `data/04_feature/` with the encoders' JSON states. `FieldTables` is what the field-aware
families (`models/field_*`) receive: they look a user's and an item's rows up by index, so
ranking all items for a user stays one gather per item.

A user or item that the attribute table lacks encodes to each field's reserved index 0 (unknown);
the count is logged, never an error: the interactions decide who exists, attributes are optional.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recforge.data.errors import DataError
from recforge.features.encoder import FeatureEncoder, FieldBatch
from recforge.features.fields import FeatureConfig

logger = logging.getLogger(__name__)

SIDES = ("user", "item")


class PairCross(BaseModel):
    """A crossed field of one user field and one item field (e.g. user country × item category),
    for the wide part: hashed from the two encoded values when a (user, item) row is assembled."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    user: str
    item: str
    buckets: int = Field(4096, ge=2)


class FeatureTablesConfig(BaseModel):
    """`parameters_features.yml`'s `features` block: the fields of the users and of the items table
    (either may be null: ids only on that side)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user: FeatureConfig | None = None
    item: FeatureConfig | None = None
    crosses: list[PairCross] = Field(default_factory=list)
    # the event's own context, read off its timestamp (UTC) when a row is assembled: hour of day
    # and day of week; ranking without an event (a plain top-K list) leaves these slots empty
    context: list[Literal["hour", "weekday"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _crosses_name_fields(self) -> FeatureTablesConfig:
        for c in self.crosses:
            for side in ("user", "item"):
                config = getattr(self, side)
                names = {f.name: f for f in config.fields} if config else {}
                field = names.get(getattr(c, side))
                if field is None:
                    raise ValueError(f"cross {c.name!r}: {side} field {getattr(c, side)!r} is not declared; "
                                     f"{side} fields: {sorted(names)}")  # fmt: skip
                if field.kind not in ("categorical", "bucketised", "hashed"):
                    raise ValueError(f"cross {c.name!r}: {side} field {field.name!r} is {field.kind}; "
                                     "crosses take categorical, bucketised or hashed fields")  # fmt: skip
        return self


@dataclass(frozen=True)
class SideTable:
    """One side's encoded rows: `index`/`value` (n, S) aligned to the id map, the encoder's state,
    and its field slots."""

    index: torch.Tensor  # (n, S) int64, field-local global ids (the encoder's own offsets)
    value: torch.Tensor  # (n, S) float32
    slots: dict[str, slice]
    n_features: int
    encoder: dict[str, Any] | None  # FeatureEncoder.state(), None when the side has no fields


@dataclass(frozen=True)
class FieldTables:
    user: SideTable
    item: SideTable
    crosses: tuple[dict[str, Any], ...] = ()  # PairCross dumps
    context: tuple[str, ...] = ()  # "hour", "weekday"

    @property
    def n_users(self) -> int:
        return int(self.user.index.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item.index.shape[0])

    def encoders(self) -> dict[str, FeatureEncoder | None]:
        """The fitted encoders, to encode new users or items exactly as training did."""
        return {s: FeatureEncoder.from_state(t.encoder) if t.encoder else None for s, t in self.sides()}

    def sides(self) -> list[tuple[str, SideTable]]:
        return [("user", self.user), ("item", self.item)]


def _empty_side(n: int) -> SideTable:
    return SideTable(torch.zeros(n, 0, dtype=torch.int64), torch.zeros(n, 0), {}, 0, None)


def id_only_tables(n_users: int, n_items: int) -> FieldTables:
    """No attribute fields: the field-aware families then reduce to their id-only form."""
    return FieldTables(_empty_side(n_users), _empty_side(n_items))


def _aligned(table: pd.DataFrame, id_map: pd.DataFrame, kind: str, source: str) -> pd.DataFrame:
    """`table`'s rows in the order of `id_map` (`<kind>_id`, `<kind>_idx`); ids the table lacks get
    an all-missing row."""
    key = f"{kind}_id"
    if key not in table.columns:
        raise DataError(f"the {source} table has no {key!r} column", source=source, column=key)
    dup = table[key].duplicated(keep=False)
    if dup.any():
        rows = table.index[dup].tolist()[:10]
        raise DataError(f"repeated {key} values in the {source} table", source=source, column=key, rows=rows)
    ids = id_map[key].astype("string")
    frame = table.assign(**{key: table[key].astype("string")}).set_index(key).reindex(ids)
    missing = int(frame.isna().all(axis=1).sum()) if len(frame.columns) else 0
    if missing:
        logger.info("%d of %d %ss have no row in the %s table: their fields encode as unknown",
                    missing, len(ids), kind, source)  # fmt: skip
    return frame.reset_index()


def fit_side(
    table: pd.DataFrame, id_map: pd.DataFrame, kind: str, config: FeatureConfig | None, source: str
) -> SideTable:
    """Fit `config`'s fields on the rows of the id map's ids (train) and encode them in its order."""
    if config is None:
        return _empty_side(len(id_map))
    frame = _aligned(table, id_map, kind, source)
    encoder = FeatureEncoder(config).fit(frame, table=source)
    batch = encoder.encode(frame, table=source)
    return SideTable(batch.index, batch.value, batch.slots, batch.n_features, encoder.state())


def build_field_tables(
    users: pd.DataFrame,
    items: pd.DataFrame,
    user_map: pd.DataFrame,
    item_map: pd.DataFrame,
    config: FeatureTablesConfig | dict[str, Any],
) -> FieldTables:
    """Both sides' encoded tables (see the module docstring)."""
    config = config if isinstance(config, FeatureTablesConfig) else FeatureTablesConfig.model_validate(config)
    return FieldTables(
        user=fit_side(users, user_map, "user", config.user, "users"),
        item=fit_side(items, item_map, "item", config.item, "items"),
        crosses=tuple(c.model_dump() for c in config.crosses),
        context=tuple(config.context),
    )


# ---------------------------------------------------------------------------- storage
def side_frame(side: SideTable, kind: str) -> pd.DataFrame:
    """The feature table of one side as stored in data/04_feature/: `<kind>_idx`, `index_<s>`,
    `value_<s>` for each slot s."""
    n, s = side.index.shape
    cols: dict[str, Any] = {f"{kind}_idx": np.arange(n, dtype=np.int64)}
    for j in range(s):
        cols[f"index_{j}"] = side.index[:, j].numpy()
    for j in range(s):
        cols[f"value_{j}"] = side.value[:, j].numpy()
    return pd.DataFrame(cols)


def tables_meta(tables: FieldTables) -> dict[str, Any]:
    """The JSON stored beside the feature tables: each side's encoder state and field slots."""
    meta: dict[str, Any] = {
        kind: {
            "encoder": side.encoder,
            "slots": {name: [sl.start, sl.stop] for name, sl in side.slots.items()},
            "n_features": side.n_features,
        }
        for kind, side in tables.sides()
    }
    meta["crosses"] = list(tables.crosses)
    meta["context"] = list(tables.context)
    return meta


def tables_from_frames(user_frame: pd.DataFrame, item_frame: pd.DataFrame, meta: dict[str, Any]) -> FieldTables:
    """Inverse of `side_frame` + `tables_meta` (what the training pipeline reads)."""

    def side(frame: pd.DataFrame, kind: str) -> SideTable:
        m = meta[kind]
        idx = frame[f"{kind}_idx"].to_numpy()
        if not np.array_equal(idx, np.arange(len(frame))):
            raise DataError(f"{kind}_idx of the {kind} feature table is not 0..n-1 in order", column=f"{kind}_idx")
        s = sum(sl[1] - sl[0] for sl in m["slots"].values())
        index = np.stack([frame[f"index_{j}"].to_numpy(np.int64) for j in range(s)], axis=1) if s else np.zeros((len(frame), 0), np.int64)
        value = np.stack([frame[f"value_{j}"].to_numpy(np.float32) for j in range(s)], axis=1) if s else np.zeros((len(frame), 0), np.float32)
        slots = {name: slice(a, b) for name, (a, b) in m["slots"].items()}
        return SideTable(torch.from_numpy(index), torch.from_numpy(value), slots, int(m["n_features"]), m["encoder"])

    return FieldTables(side(user_frame, "user"), side(item_frame, "item"), tuple(meta.get("crosses", ())),
                       tuple(meta.get("context", ())))


def encode_new(tables: FieldTables, kind: str, frame: pd.DataFrame) -> FieldBatch:
    """Encode new users' or items' attribute rows with the encoder fitted in training (serving):
    unseen categories map to the reserved unknown index."""
    state = getattr(tables, kind).encoder
    if state is None:
        raise ValueError(f"the {kind} side has no attribute fields to encode")
    return FeatureEncoder.from_state(state).encode(frame, table=f"new {kind}s")


def dumps(meta: dict[str, Any]) -> str:
    return json.dumps(meta, sort_keys=True)
