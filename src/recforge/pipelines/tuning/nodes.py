"""Tuning nodes: the train and valid splits in (never test), a study's best parameters and
its reports out. Everything else is `recforge.tuning`."""

# No `from __future__ import annotations`: Kedro validates the typed parameters before a run.
import logging
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from recforge.models.registry import get_family
from recforge.pipelines.training.nodes import fit_inputs
from recforge.training.config import TrainConfig
from recforge.training.recommender import uses_ratings
from recforge.tuning import report
from recforge.tuning.config import TuningConfig
from recforge.tuning.storage import TuningStorage
from recforge.tuning.study import plan_study, study_name, tune

logger = logging.getLogger(__name__)


def make_tune_model(family: str, vector_tables: Sequence[str] = ()) -> Callable[..., tuple]:
    """The `tune_model` node function of one family, typed with the family's config classes.

    Inputs: train, valid, user_map, item_map, the family's `model` and `training` blocks (the
    base every trial starts from), its `tuning.<family>` block, the data source's name (the
    study is `<family>.<source>`), the study storage, then the family's upstream inputs as in
    training (`recforge.pipelines.training.nodes.fit_inputs`).
    Outputs: best parameters, trials table, trials Markdown, and the history, importance,
    parallel-coordinate and Pareto figures.
    """
    config_cls = get_family(family).config

    def tune_model(
        train: pd.DataFrame,
        valid: pd.DataFrame,
        user_map: pd.DataFrame,
        item_map: pd.DataFrame,
        model: config_cls,  # type: ignore[valid-type]
        training: TrainConfig,
        tuning: TuningConfig,
        source: str,
        storage: TuningStorage,
        *upstream: Any,
    ) -> tuple[dict[str, Any], pd.DataFrame, str, Any, Any, Any, Any]:
        """Run (or resume) `family`'s study and report it."""
        plan = plan_study(family, model, training, tuning)
        ratings = uses_ratings(plan.family, model)
        inputs = fit_inputs(family, model, ratings, train, valid, user_map, item_map, upstream, vector_tables)
        result = tune(
            plan, inputs["train"], inputs["valid"], storage.choose(tuning.storage),
            name=study_name(family, source, tuning), seen=inputs["seen"],
            item_vectors=inputs["item_vectors"], warm_start=inputs["warm_start"],
        )  # fmt: skip
        table = report.trials_table(result)
        return (
            result.best_params(),
            table,
            report.trials_markdown(result, table),
            report.history_figure(result),
            report.importance_figure(result),
            report.parallel_figure(result),
            report.pareto_figure(result),
        )

    tune_model.__qualname__ = "tune_model"
    return tune_model
