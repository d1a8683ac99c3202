"""One node whatever the source: a Kedro env changes parameters, never a pipeline's shape."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from recforge.pipelines.ingestion.nodes import OUTPUTS, ingest_source


def create_pipeline(**kwargs: object) -> Pipeline:
    """The ingestion pipeline: `params:ingestion` -> the 03_primary datasets."""
    return Pipeline(
        [
            Node(
                func=ingest_source,
                inputs="params:ingestion",
                outputs={name: name for name in OUTPUTS},
                name="ingest_source",
            )
        ]
    )
