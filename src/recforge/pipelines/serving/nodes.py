"""Serving nodes: a trained model and the id maps in, its lists for data/07_model_output out."""

from typing import Any

import pandas as pd

from recforge.evaluation.export import ServingConfig, export_recommendations, export_similar_items


def export_lists(
    model: Any, user_map: pd.DataFrame, item_map: pd.DataFrame, serving: ServingConfig
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Top-`k` unseen items for every user, top-`similar_k` similar items for every item (an
    empty table when the family has no item vectors), and a summary of both exports."""
    recs = export_recommendations(model, user_map, item_map, serving.k, serving.batch_size, serving.index)
    similar = export_similar_items(model, item_map, serving.similar_k, serving.batch_size, serving.index)
    summary = {"recommendations": recs.summary.to_dict(), "similar_items": similar.summary.to_dict()}
    return recs.table, similar.table, summary
