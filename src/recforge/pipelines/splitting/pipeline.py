"""The `splitting` pipeline: filter the validated interactions, then split them."""

from kedro.pipeline import Node, Pipeline

from recforge.pipelines.splitting.nodes import filter_interactions, split_interactions


def create_pipeline(**kwargs) -> Pipeline:
    """filter_interactions -> split_interactions, configured by `params:splitting`."""
    return Pipeline(
        [
            Node(
                filter_interactions,
                inputs=["interactions", "validation_status", "params:splitting"],
                outputs="filtered_interactions",
                name="filter_interactions",
            ),
            Node(
                split_interactions,
                inputs=["filtered_interactions", "heldout_interactions", "params:splitting"],
                outputs=["train", "valid", "test", "user_map", "item_map", "split_summary"],
                name="split_interactions",
            ),
        ]
    )
