"""One entry point for every source: `IngestionParams` says which, `ingest` returns the
canonical 03_primary tables. A Kedro env picks the source by changing parameters only, so the
ingestion pipeline keeps one shape whatever the source.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recforge.data.amazon import AmazonConfig, load_amazon
from recforge.data.files import FilesConfig, load_files
from recforge.data.foursquare import FoursquareConfig, load_foursquare
from recforge.data.media import with_manifest
from recforge.data.movielens import MovieLens1MConfig, MovieLensConfig, load_movielens1m, load_movielens100k
from recforge.data.schema import STRING, empty_interactions
from recforge.data.session_sources import (
    DigineticaConfig,
    RetailRocketConfig,
    YooChooseConfig,
    load_diginetica,
    load_retailrocket,
    load_yoochoose,
)
from recforge.data.synthetic import ShopConfig, generate_shop

logger = logging.getLogger(__name__)


class IngestionParams(BaseModel):
    """`params:ingestion`: the source to read and one sub-config per source."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Literal[
        "synthetic", "movielens100k", "movielens1m", "files", "yoochoose", "diginetica", "retailrocket", "foursquare",
        "amazon",
    ] = "synthetic"
    synthetic: ShopConfig = Field(default_factory=ShopConfig)
    movielens100k: MovieLensConfig = Field(default_factory=MovieLensConfig)
    movielens1m: MovieLens1MConfig = Field(default_factory=MovieLens1MConfig)
    files: FilesConfig | None = None
    yoochoose: YooChooseConfig = Field(default_factory=YooChooseConfig)
    diginetica: DigineticaConfig = Field(default_factory=DigineticaConfig)
    retailrocket: RetailRocketConfig = Field(default_factory=RetailRocketConfig)
    foursquare: FoursquareConfig = Field(default_factory=FoursquareConfig)
    amazon: AmazonConfig = Field(default_factory=AmazonConfig)

    @model_validator(mode="after")
    def _files_configured(self) -> IngestionParams:
        if self.source == "files" and self.files is None:
            raise ValueError("source is 'files' but `ingestion.files` is not set (interactions path, columns, ...)")
        return self


# Published datasets: each reads its own sub-config of the same name and returns an object with
# `interactions`, `items` and `users`.
LOADERS = {
    "yoochoose": load_yoochoose,
    "diginetica": load_diginetica,
    "retailrocket": load_retailrocket,
    "foursquare": load_foursquare,
}
MOVIELENS_LOADERS = {"movielens100k": load_movielens100k, "movielens1m": load_movielens1m}


@dataclass(frozen=True)
class Ingested:
    """The 03_primary outputs of a source. `media` already holds `manifest.json`."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    heldout_interactions: pd.DataFrame
    media: dict[str, bytes]
    ground_truth_items: pd.DataFrame
    ground_truth_users: pd.DataFrame
    # items shown in lists with a click label (the CTR task); only the synthetic shop has one
    impressions: pd.DataFrame = field(default_factory=lambda: empty_impressions())
    ground_truth_impressions: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({"p_click": pd.Series(dtype="float32"), "affinity": pd.Series(dtype="float32")})
    )


def empty_impressions() -> pd.DataFrame:
    """The impression log's columns with no rows (sources without one)."""
    return pd.DataFrame({
        "user_id": pd.Series(dtype=STRING), "item_id": pd.Series(dtype=STRING),
        "timestamp": pd.Series(dtype="int64"), "list_id": pd.Series(dtype=STRING),
        "position": pd.Series(dtype="int16"), "page": pd.Series(dtype=STRING),
        "device": pd.Series(dtype=STRING), "label": pd.Series(dtype="int8"),
    })  # fmt: skip


def _no_ground_truth() -> tuple[pd.DataFrame, pd.DataFrame]:
    # Real data has no hidden factors; empty tables keyed like the synthetic ones keep the
    # catalog's outputs present for every source.
    return (
        pd.DataFrame({"item_id": pd.Series(dtype=STRING)}),
        pd.DataFrame({"user_id": pd.Series(dtype=STRING)}),
    )


def ingest(params: IngestionParams) -> Ingested:
    """Read `params.source` into canonical tables (ground truth only for the synthetic shop)."""
    logger.info("ingesting source %r", params.source)
    if params.source == "synthetic":
        shop = generate_shop(params.synthetic)
        return Ingested(
            interactions=shop.interactions,
            items=shop.items,
            users=shop.users,
            heldout_interactions=empty_interactions(),
            media=with_manifest(shop.media, source="synthetic shop"),
            ground_truth_items=shop.ground_truth_items,
            ground_truth_users=shop.ground_truth_users,
            impressions=shop.impressions,
            ground_truth_impressions=shop.ground_truth_impressions,
        )
    if params.source in MOVIELENS_LOADERS:
        interactions, items, users = MOVIELENS_LOADERS[params.source](getattr(params, params.source))
        return Ingested(
            interactions, items, users, empty_interactions(), with_manifest({}), *_no_ground_truth()
        )
    if params.source == "amazon":
        amazon = load_amazon(params.amazon)
        return Ingested(
            amazon.interactions,
            amazon.items,
            amazon.users,
            empty_interactions(),
            with_manifest(amazon.media, source=str(params.amazon.images.dir)),
            *_no_ground_truth(),
        )
    if params.source in LOADERS:
        data = LOADERS[params.source](getattr(params, params.source))
        return Ingested(
            data.interactions, data.items, data.users, empty_interactions(), with_manifest({}), *_no_ground_truth()
        )
    assert params.files is not None  # noqa: S101 - guaranteed by IngestionParams' validator
    data = load_files(params.files)
    return Ingested(
        data.interactions,
        data.items,
        data.users,
        data.heldout_interactions,
        with_manifest(data.media, source=str(params.files.media_dir or "files")),
        *_no_ground_truth(),
    )
