"""Tuned nodes: refit a family with its study's best parameters, evaluate it like the default."""

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from recforge.evaluation.report import EvaluationConfig
from recforge.pipelines.evaluation.nodes import evaluate_model
from recforge.models.registry import get_family
from recforge.pipelines.training.nodes import fit_recommender
from recforge.training.config import TrainConfig
from recforge.training.recommender import Recommender

# what the leaderboard shows beside a tuned family's test metrics
TUNING_SUMMARY = ("study_name", "metric", "best_value", "n_trials", "n_complete", "n_pruned", "n_failed",
                  "tuning_seconds", "study_seconds", "tuned_keys")  # fmt: skip


def make_fit_tuned_model(family: str, vector_tables: Sequence[str] = ()) -> Callable[..., Recommender]:
    """The `fit_tuned_model` node of one family: the best parameters' configs, validated by the
    family's config class, fitted on train with early stopping on valid (as the trials were)."""
    fam = get_family(family)

    def fit_tuned_model(
        train: pd.DataFrame,
        valid: pd.DataFrame,
        user_map: pd.DataFrame,
        item_map: pd.DataFrame,
        best_params: dict[str, Any],
        *upstream: Any,
    ) -> Recommender:
        if best_params.get("family") != family:
            raise ValueError(f"best_params of {best_params.get('family')!r} handed to {family!r}")
        model = fam.config.model_validate(best_params["model"])
        training = TrainConfig.model_validate(best_params["training"])
        return fit_recommender(family, model, training, train, valid, user_map, item_map, upstream, vector_tables)

    fit_tuned_model.__qualname__ = "fit_tuned_model"
    return fit_tuned_model


def evaluate_tuned_model(
    model: Recommender,
    train: pd.DataFrame,
    test: pd.DataFrame,
    user_map: pd.DataFrame,
    item_map: pd.DataFrame,
    evaluation: EvaluationConfig,
    best_params: dict[str, Any],
    *item_side: Any,
) -> dict[str, Any]:
    """The default evaluation's metrics of the tuned model (cold-start slices included: `item_side`
    as in the evaluation pipeline) plus the study's summary (`tuning`)."""
    metrics = evaluate_model(model, train, test, user_map, item_map, evaluation, *item_side)
    metrics["tuning"] = {k: best_params.get(k) for k in TUNING_SUMMARY}
    return metrics
