"""`evaluation`: every trained family on the same split and protocols, then one leaderboard.

The per-family template runs in each family's namespace (`{family}.metrics` via dataset
factories); `report_leaderboard` gathers them all. The lists in data/07_model_output come from the
`serving` pipeline.
`evaluate_model` also reads the family's item side as training does (`item_side_inputs`: its
vector tables, feature tables or items table), to score the test split's cold items from content.
"""

import warnings

from kedro.pipeline import Node, Pipeline

from recforge.models.registry import FAMILIES
from recforge.pipelines.evaluation.nodes import (
    TUNED_PREFIX,
    evaluate_model,
    evaluate_session_model,
    item_side_inputs,
    report_cold_start_leaderboard,
    report_context_leaderboard,
    report_leaderboard,
    report_rating_leaderboard,
    report_session_leaderboard,
    report_tasks,
    evaluate_tag_model,
)
from recforge.pipelines.ctr.pipeline import CTR_FAMILIES
from recforge.pipelines.tuning.pipeline import TUNABLE

SHARED = {"train", "test", "user_map", "item_map"}


def create_family_pipeline(family: str) -> Pipeline:
    side = item_side_inputs(family)
    template = Pipeline(
        [
            Node(
                evaluate_model,
                inputs=["model", "train", "test", "user_map", "item_map", "params:evaluation", *side],
                outputs="metrics",
                name="evaluate_model",
            ),
            Node(
                evaluate_session_model,
                inputs=["model", "train", "test", "user_map", "item_map", "params:evaluation"],
                outputs="session_metrics",
                name="evaluate_session_model",
            ),
        ]
    )
    return Pipeline(template, namespace=family, inputs={**{n: n for n in SHARED}, **side},
                    parameters={"params:evaluation"})  # fmt: skip


def create_pipeline(**kwargs) -> Pipeline:
    with warnings.catch_warnings():
        # The leaderboard reads every namespace's `{family}.metrics` (and a family its item side,
        # e.g. `image.vectors`) by its namespaced name on purpose; Kedro's warning about dots in
        # dataset names targets hand-written names.
        warnings.filterwarnings("ignore", message="One or more dataset names contain")
        per_family = sum((create_family_pipeline(f) for f in FAMILIES), Pipeline([]))
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
                    evaluate_tag_model,
                    inputs=["tag_attention_cnn.model", "items", "test", "item_map", "params:evaluation"],
                    outputs="tag_metrics",
                    name="evaluate_tags",
                ),
                Node(
                    report_tasks,
                    inputs={"rating_md": "rating_leaderboard_md", "context_md": "context_leaderboard_md",
                            "tags": "tag_metrics",
                            # absent (None) until `kedro run --pipelines ctr` has run
                            **{f: f"{f}.ctr_metrics" for f in CTR_FAMILIES}},
                    outputs="tasks_leaderboard_md",
                    name="report_tasks",
                ),
                Node(
                    report_cold_start_leaderboard,
                    inputs={"evaluation": "params:evaluation", **{f: f"{f}.metrics" for f in FAMILIES}},
                    outputs=["cold_start_leaderboard", "cold_start_leaderboard_md"],
                    name="report_cold_start_leaderboard",
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
