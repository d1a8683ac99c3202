"""`two_stage`: any retriever chained to any ranker trained on its candidates."""

from recforge.pipelines.two_stage.pipeline import create_pipeline

__all__ = ["create_pipeline"]
