"""The `ctr` pipeline: impression log -> click models per field-aware family -> CTR leaderboard."""

from recforge.pipelines.ctr.pipeline import create_pipeline

__all__ = ["create_pipeline"]
