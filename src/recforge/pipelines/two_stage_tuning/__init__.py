"""`two_stage_tuning`: per declared chain, a study of N and the ranker's parameters on the
validation period."""

from recforge.pipelines.two_stage_tuning.pipeline import create_pipeline

__all__ = ["create_pipeline"]
