"""`evaluation`: every trained family on the same split and protocols, then one leaderboard.

The per-family template runs in each family's namespace (`{family}.metrics`,
`{family}.recommendations` via dataset factories); `report_leaderboard` gathers them all.
"""

import warnings

from kedro.pipeline import Node, Pipeline

from recforge.models.registry import FAMILIES
from recforge.pipelines.evaluation.nodes import (
    TUNED_PREFIX,
    evaluate_model,
    evaluate_session_model,
    recommend_items,
    report_context_leaderboard,
    report_leaderboard,
    report_rating_leaderboard,
    report_session_leaderboard,
    report_tasks,
)
from recforge.pipelines.ctr.pipeline import CTR_FAMILIES
from recforge.pipelines.tuning.pipeline import TUNABLE

SHARED = {"train", "test", "user_map", "item_map"}


def create_family_pipeline(family: str) -> Pipeline:
    template = Pipeline(
        [
            Node(
                evaluate_model,
                inputs=["model", "train", "test", "user_map", "item_map", "params:evaluation"],
                outputs="metrics",
                name="evaluate_model",
            ),
            Node(
                evaluate_session_model,
                inputs=["model", "train", "test", "user_map", "item_map", "params:evaluation"],
                outputs="session_metrics",
                name="evaluate_session_model",
            ),
            Node(
                recommend_items,
                inputs=["model", "user_map", "item_map", "params:evaluation"],
                outputs="recommendations",
                name="recommend_items",
            ),
        ]
    )
    return Pipeline(template, namespace=family, inputs=SHARED, parameters={"params:evaluation"})


def create_pipeline(**kwargs) -> Pipeline:
    per_family = sum((create_family_pipeline(f) for f in FAMILIES), Pipeline([]))
    with warnings.catch_warnings():
        # The leaderboard reads every namespace's `{family}.metrics` by its namespaced name on
        # purpose; Kedro's warning about dots in dataset names targets hand-written names.
        warnings.filterwarnings("ignore", message="One or more dataset names contain")
        leaderboard = Pipeline(
            [
                Node(
                    report_leaderboard,
                    inputs={
                        "evaluation": "params:evaluation",
                        **{f: f"{f}.metrics" for f in FAMILIES},
                        # absent (None) for a family never tuned
                        **{f"{TUNED_PREFIX}{f}": f"{f}.tuned_metrics" for f in TUNABLE},
                    },
                    outputs=["leaderboard", "leaderboard_md", "leaderboard_plot", "metrics"],
                    name="report_leaderboard",
                ),
                Node(
                    report_rating_leaderboard,
                    inputs={"train": "train", "test": "test", **{f: f"{f}.metrics" for f in FAMILIES}},
                    outputs=["rating_leaderboard", "rating_leaderboard_md"],
                    name="report_rating_leaderboard",
                ),
                Node(
                    report_context_leaderboard,
                    inputs={"train": "train", "test": "test", "user_map": "user_map", "item_map": "item_map",
                            **{f: f"{f}.metrics" for f in FAMILIES}},
                    outputs=["context_leaderboard", "context_leaderboard_md"],
                    name="report_context_leaderboard",
                ),
                Node(
                    report_tasks,
                    inputs={"rating_md": "rating_leaderboard_md", "context_md": "context_leaderboard_md",
                            # absent (None) until `kedro run --pipelines ctr` has run
                            **{f: f"{f}.ctr_metrics" for f in CTR_FAMILIES}},
                    outputs="tasks_leaderboard_md",
                    name="report_tasks",
                ),
                Node(
                    report_session_leaderboard,
                    inputs={f: f"{f}.session_metrics" for f in FAMILIES},
                    outputs=["session_leaderboard", "session_leaderboard_md"],
                    name="report_session_leaderboard",
                ),
            ]
        )
    return per_family + leaderboard
