"""The `features` pipeline: users and items tables -> encoded attribute fields (04_feature)."""

from recforge.pipelines.features.pipeline import create_pipeline

__all__ = ["create_pipeline"]
