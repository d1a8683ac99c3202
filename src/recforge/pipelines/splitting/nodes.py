"""Nodes of the `splitting` pipeline: thin wrappers over `recforge.data.filters` and `.splits`."""

from __future__ import annotations

from typing import Any

import pandas as pd

from recforge.data import filters, splits
from recforge.data.splits import SplitConfig
from recforge.data.validation import assert_validated


def filter_interactions(
    interactions: pd.DataFrame, validation_status: dict[str, Any] | None, config: SplitConfig
) -> pd.DataFrame:
    """Refuse unvalidated tables, then keep the configured events, dedupe and take the k-core."""
    assert_validated(validation_status, interactions)
    return filters.filter_interactions(interactions, config)


def split_interactions(
    interactions: pd.DataFrame, heldout_interactions: pd.DataFrame, config: SplitConfig
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Train/valid/test with `user_idx`/`item_idx`, the train-fitted id maps and the split summary."""
    result = splits.split_interactions(interactions, heldout_interactions, config)
    return (
        result.train,
        result.valid,
        result.test,
        result.user_map.to_frame(),
        result.item_map.to_frame(),
        result.summary,
    )
