"""`serving`: a trained family's lists for every user and item, in data/07_model_output/<family>/.

One template per family in its namespace (`{family}.model` in; `{family}.recommendations`,
`{family}.similar_items` and `{family}.export_summary` out, via the dataset factories of
catalog_serving.yml). `kedro run --pipelines serving --namespaces bpr` exports one chosen model,
e.g. on a CPU machine after `dvc pull` of a model trained on a GPU (README).
"""

from kedro.pipeline import Node, Pipeline

from recforge.models.registry import FAMILIES
from recforge.pipelines.serving.nodes import export_lists

SHARED = {"user_map", "item_map"}


def create_family_pipeline(family: str) -> Pipeline:
    template = Pipeline(
        [
            Node(
                export_lists,
                inputs=["model", "user_map", "item_map", "params:serving"],
                outputs=["recommendations", "similar_items", "export_summary"],
                name="export_lists",
            )
        ]
    )
    return Pipeline(template, namespace=family, inputs={n: n for n in SHARED}, parameters={"params:serving"})


def create_pipeline(**kwargs) -> Pipeline:
    return sum((create_family_pipeline(f) for f in FAMILIES), Pipeline([]))
