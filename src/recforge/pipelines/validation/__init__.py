"""The `validation` pipeline: check the canonical tables before anything is built from them."""

from recforge.pipelines.validation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
