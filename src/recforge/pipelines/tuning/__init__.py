"""`tuning`: one Optuna study per family, namespaced like `training`."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
