"""`ingestion`: a source (synthetic shop, MovieLens 100K, your own files) -> 03_primary tables."""

from recforge.pipelines.ingestion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
