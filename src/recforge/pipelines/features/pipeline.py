"""`features`: the fields of `parameters_features.yml`, fitted on train's users and items and
encoded into `data/04_feature/features/` for the field-aware families (fm, nfm, wide_deep, deepfm,
deep_regression, neural_mf_v1/v2, lr)."""

from kedro.pipeline import Node, Pipeline

from recforge.pipelines.features.nodes import build_feature_tables


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            Node(
                build_feature_tables,
                inputs=["users", "items", "user_map", "item_map", "params:features"],
                outputs=["user_features", "item_features", "feature_meta"],
                name="build_feature_tables",
            )
        ]
    )
