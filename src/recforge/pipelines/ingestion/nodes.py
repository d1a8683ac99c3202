"""Ingestion nodes: thin wrappers over `recforge.data.sources`."""

from __future__ import annotations

from typing import Any

from recforge.data.sources import IngestionParams, ingest

OUTPUTS = (
    "interactions",
    "items",
    "users",
    "heldout_interactions",
    "media",
    "ground_truth_items",
    "ground_truth_users",
    "impressions",
    "ground_truth_impressions",
)


def ingest_source(params: IngestionParams) -> dict[str, Any]:
    """Canonical tables, media (with manifest.json) and ground truth of the configured source."""
    # Kedro hands over a validated model; a plain dict (e.g. from a bare catalog) is validated here.
    params = IngestionParams.model_validate(params)
    result = ingest(params)
    return {name: getattr(result, name) for name in OUTPUTS}
