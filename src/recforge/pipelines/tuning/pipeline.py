"""`tuning`: the tuning template, instantiated per tunable family with its namespace.

`kedro run --pipelines tuning --namespaces bpr` runs (or resumes) bpr's study; `--pipelines
tuning,tuned --namespaces bpr` then refits bpr with the best parameters and evaluates it. A node
reads the family's `training` parameters as the base of every trial, `tuning.<family>` from
parameters_tuning.yml, the data source's name (the study is `<family>.<source>`) and the study
storage `{family}.tuning_storage` (credentials `tuning_storage`, else an SQLite file). It reads
the train and valid splits and the same upstream inputs as the family's training node; the test
split is not an input.
"""

from kedro.pipeline import Node, Pipeline

from recforge.models.registry import FAMILIES
from recforge.pipelines.training.pipeline import ITEM_VECTORS, SPLIT_INPUTS, upstream
from recforge.pipelines.tuning.nodes import make_tune_model

# random and popularity have no parameters worth a study
UNTUNABLE = ("random", "popularity")
TUNABLE: tuple[str, ...] = tuple(f for f in FAMILIES if f not in UNTUNABLE)
# the families the default `kedro run` (and `dvc repro evaluation`) tunes, with small budgets
DEFAULT_TUNED: tuple[str, ...] = ("bpr", "mf")

REPORTS = ["best_params", "tuning_trials", "tuning_trials_md", "tuning_history", "tuning_importance",
           "tuning_parallel", "tuning_pareto"]  # fmt: skip


def create_family_pipeline(family: str) -> Pipeline:
    """The tuning template with `family`'s node, inside the `family` namespace."""
    extra = upstream(family)
    template = Pipeline(
        [
            Node(
                make_tune_model(family, vector_tables=ITEM_VECTORS.get(family, ())),
                inputs=["train", "valid", "user_map", "item_map", "params:model", "params:training",
                        "params:tuning", "params:source", "tuning_storage", *extra],
                outputs=REPORTS,
                name="tune_model",
            )
        ]
    )  # fmt: skip
    return Pipeline(
        template,
        namespace=family,
        inputs={**{name: name for name in SPLIT_INPUTS}, **extra},
        parameters={"params:tuning": f"params:tuning.{family}", "params:source": "params:ingestion.source"},
    )


def create_pipeline(**kwargs) -> Pipeline:
    return sum((create_family_pipeline(f) for f in TUNABLE), Pipeline([]))
