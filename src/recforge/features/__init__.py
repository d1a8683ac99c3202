"""Feature tables for feature-aware families: field declarations and the train-fitted encoder."""

from recforge.features.encoder import FeatureEncoder, FieldBatch, stable_hash
from recforge.features.fields import FeatureConfig

__all__ = ["FeatureConfig", "FeatureEncoder", "FieldBatch", "stable_hash"]
