"""The `pretraining` pipeline: one namespace per encoder, each writing an item vector table
(04_feature) and its diagnostics (08_reporting)."""

from recforge.pipelines.pretraining.pipeline import create_pipeline

__all__ = ["create_pipeline"]
