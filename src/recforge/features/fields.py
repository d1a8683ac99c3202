"""Field declarations: what a feature-aware family reads from a table, as data.

Each field becomes a fixed number of *slots* of one field-aware batch (`FieldBatch`): a global
feature index and a value per slot. Index 0 of every field is reserved (unknown category, missing
value, padding), so a row never fails to encode at serving time.

| kind | slots | index | value |
|---|---|---|---|
| categorical | 1 | vocabulary fitted on train (values seen `min_count` times) | 1 |
| multi_hot | max_len | each token's vocabulary id (`sep`-split; `levels` adds path prefixes) | 1/n (mean) |
| numeric | 1 | 1 = present, 2 = missing (the flag) | standardised value, or 1 for missing |
| bucketised | 1 | quantile bucket fitted on train (+1), 0 = missing | 1 |
| hashed | 1 | 1 + stable hash mod `buckets`, 0 = missing | 1 |
| cross | 1 | 1 + stable hash of the joined values mod `buckets` (the wide part) | 1 |
| context | 1 | hour of day / weekday of `column` (unix seconds), or the log-bucket of the time since the same user's previous event | 1 |
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Field(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    column: str = Field(min_length=1)


class CategoricalField(_Field):
    kind: Literal["categorical"]
    min_count: int = Field(1, ge=1)


class MultiHotField(_Field):
    kind: Literal["multi_hot"]
    sep: str = "|"
    max_len: int = Field(8, ge=1)
    levels: str | None = None  # e.g. "/": "shoes/boots" also yields "shoes"
    min_count: int = Field(1, ge=1)


class NumericField(_Field):
    kind: Literal["numeric"]


class BucketisedField(_Field):
    kind: Literal["bucketised"]
    buckets: int = Field(10, ge=2)


class HashedField(_Field):
    kind: Literal["hashed"]
    buckets: int = Field(2**18, ge=2)


class CrossField(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    kind: Literal["cross"]
    columns: list[str] = Field(min_length=2)
    buckets: int = Field(2**16, ge=2)


class ContextField(_Field):
    kind: Literal["context"]
    part: Literal["hour", "weekday", "gap"]
    user_column: str = "user_id"  # for `gap`: time since this user's previous event


FieldSpec = Annotated[
    CategoricalField | MultiHotField | NumericField | BucketisedField | HashedField | CrossField | ContextField,
    Field(discriminator="kind"),
]


class FeatureConfig(BaseModel):
    """The fields of one feature table (a block of `parameters_features.yml`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fields: list[FieldSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> FeatureConfig:
        names = [f.name for f in self.fields]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"field names must be unique; repeated: {repeated}")
        return self

    def columns(self) -> set[str]:
        """Every table column the fields read."""
        out: set[str] = set()
        for f in self.fields:
            if isinstance(f, CrossField):
                out.update(f.columns)
            else:
                out.add(f.column)
                if isinstance(f, ContextField) and f.part == "gap":
                    out.add(f.user_column)
        return out
