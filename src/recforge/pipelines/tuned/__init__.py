"""`tuned`: refit a family with its tuned parameters and evaluate it on the test split."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
