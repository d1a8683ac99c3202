"""The `splitting` pipeline: validated primary interactions -> train/valid/test, id maps, summary."""

from recforge.pipelines.splitting.pipeline import create_pipeline

__all__ = ["create_pipeline"]
