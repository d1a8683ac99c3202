"""`tuned`: per tunable family, refit with `{family}.best_params` and evaluate on the test split.

`kedro run --pipelines tuning,tuned --namespaces bpr` tunes bpr, then trains and evaluates it
with the best parameters: the model lands in `{family}.tuned_model`
(data/06_models/tuning/<family>/model), its metrics in `{family}.tuned_metrics`
(data/08_reporting/tuning/<family>/metrics.json), which the leaderboard shows beside the
default row. `--pipelines tuned` alone reuses the best parameters of an earlier study.
"""

from kedro.pipeline import Node, Pipeline

from recforge.pipelines.evaluation.nodes import item_side_inputs
from recforge.pipelines.training.pipeline import ITEM_VECTORS, SPLIT_INPUTS, upstream
from recforge.pipelines.tuned.nodes import evaluate_tuned_model, make_fit_tuned_model
from recforge.pipelines.tuning.pipeline import TUNABLE

SHARED = SPLIT_INPUTS | {"test"}


def create_family_pipeline(family: str) -> Pipeline:
    extra = upstream(family)
    template = Pipeline(
        [
            Node(
                make_fit_tuned_model(family, vector_tables=ITEM_VECTORS.get(family, ())),
                inputs=["train", "valid", "user_map", "item_map", "best_params", *extra],
                outputs="tuned_model",
                name="fit_tuned_model",
            ),
            Node(
                evaluate_tuned_model,
                inputs=["tuned_model", "train", "test", "user_map", "item_map", "params:evaluation", "best_params",
                        *item_side_inputs(family)],
                outputs="tuned_metrics",
                name="evaluate_tuned_model",
            ),
        ]
    )
    return Pipeline(
        template,
        namespace=family,
        inputs={**{name: name for name in SHARED}, **extra},
        parameters={"params:evaluation"},
    )


def create_pipeline(**kwargs) -> Pipeline:
    return sum((create_family_pipeline(f) for f in TUNABLE), Pipeline([]))
