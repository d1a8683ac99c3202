"""Features nodes: the canonical users / items tables in, their encoded feature tables out."""

import logging
from typing import Any

import pandas as pd

from recforge.features.tables import FeatureTablesConfig, build_field_tables, side_frame, tables_meta

logger = logging.getLogger(__name__)


def build_feature_tables(
    users: pd.DataFrame,
    items: pd.DataFrame,
    user_map: pd.DataFrame,
    item_map: pd.DataFrame,
    features: FeatureTablesConfig,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Fit the declared fields on the id maps' (train's) users and items and encode them, aligned
    to the maps: (user_features, item_features, feature_meta)."""
    tables = build_field_tables(users, items, user_map, item_map, features)
    for kind, side in tables.sides():
        logger.info("%s features: %d fields in %d slots over %d feature ids", kind, len(side.slots),
                    side.index.shape[1], side.n_features)  # fmt: skip
    return side_frame(tables.user, "user"), side_frame(tables.item, "item"), tables_meta(tables)
