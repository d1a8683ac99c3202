"""Impression tables for click-through-rate models: attributes joined on, split by time.

`impression_table(impressions, users, items)` adds each row's user attributes (`user_<column>`)
and item attributes (`item_<column>`) to the impression log, so one `FeatureEncoder` reads user,
item and context fields from one row; `split_by_time` cuts it into train / valid / test by
timestamp (the last rows are the future: valid and test), or by row order when there is no
timestamp (Criteo's rows are in time order).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recforge.data.errors import DataError
from recforge.features.fields import FeatureConfig


class CTRData(BaseModel):
    """`parameters_ctr.yml`'s `ctr` block without the per-family ones: the fields of a row, which
    fields are the user's and which the item's (for two-tower families), the label column and
    the time split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fields: FeatureConfig
    sides: dict[str, str] = Field(default_factory=dict)
    label: str = "label"
    valid_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, gt=0, lt=1)
    max_rows: int | None = Field(None, gt=0)  # keep the last max_rows rows (a quick run on a big log)

    @model_validator(mode="after")
    def _check(self) -> CTRData:
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("valid_fraction + test_fraction must leave rows for train")
        names = {f.name for f in self.fields.fields}
        unknown = sorted(set(self.sides) - names)
        if unknown:
            raise ValueError(f"sides names field(s) {unknown} that `fields` does not declare")
        bad = sorted({v for v in self.sides.values()} - {"user", "item"})
        if bad:
            raise ValueError(f"a side is 'user' or 'item'; got {bad}")
        return self


def impression_table(
    impressions: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, columns: set[str] | None = None
) -> pd.DataFrame:
    """The impressions with `user_<col>` and `item_<col>` attribute columns joined on their ids
    (an id without attributes gets nulls, which encode as missing / unknown); with `columns`, only
    the attributes named there (what the fields read: a 10M-row log need not carry every title)."""
    out = impressions.reset_index(drop=True)
    for kind, table in (("user", users), ("item", items)):
        key = f"{kind}_id"
        if key not in out.columns or table is None or key not in table.columns or len(table.columns) == 1:
            continue
        attrs = table.drop_duplicates(key).set_index(key)
        attrs = attrs.rename(columns={c: f"{kind}_{c}" for c in attrs.columns})
        if columns is not None:
            attrs = attrs[[c for c in attrs.columns if c in columns]]
            if not len(attrs.columns):
                continue
        ids = out[key]
        if isinstance(ids.dtype, pd.CategoricalDtype):  # one lookup per category, then by code
            per_cat = attrs.reindex(pd.Index(ids.cat.categories.astype(str))).reset_index(drop=True)
            joined = per_cat.reindex(ids.cat.codes.to_numpy()).reset_index(drop=True)  # code -1 (missing): nulls
        else:
            joined = attrs.reindex(ids.astype(str)).reset_index(drop=True)
        out = pd.concat([out, joined], axis=1)
    return out


def split_by_time(table: pd.DataFrame, data: CTRData, name: str = "impressions") -> tuple[pd.DataFrame, ...]:
    """(train, valid, test): the earliest rows train, then valid, then the latest test."""
    if data.label not in table.columns:
        raise DataError(f"no label column {data.label!r}", source=name, column=data.label)
    if "timestamp" in table.columns:
        table = table.sort_values("timestamp", kind="stable")
    if data.max_rows is not None:
        table = table.tail(data.max_rows)
    n = len(table)
    n_test = int(round(n * data.test_fraction))
    n_valid = int(round(n * data.valid_fraction))
    if n - n_test - n_valid < 1 or n_test < 1:
        raise DataError(f"{n} impression rows are too few to split", source=name)
    cut = np.cumsum([n - n_test - n_valid, n_valid])
    parts = np.split(np.arange(n), cut)
    return tuple(table.iloc[p].reset_index(drop=True) for p in parts)
