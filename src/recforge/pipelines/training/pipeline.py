"""`training`: one template pipeline, instantiated per registered family with its namespace.

`kedro run --pipelines training --namespaces neumf` trains one family; the model lands in the
dataset factory `{family}.model` (data/06_models/<family>/).
"""

from kedro.pipeline import Node, Pipeline

from recforge.models.registry import FAMILIES
from recforge.pipelines.training.nodes import make_fit_model

SPLIT_INPUTS = {"train", "valid", "user_map", "item_map"}


def create_family_pipeline(family: str) -> Pipeline:
    """The training template with `family`'s node, inside the `family` namespace."""
    template = Pipeline(
        [
            Node(
                make_fit_model(family),
                inputs=["train", "valid", "user_map", "item_map", "params:model", "params:training"],
                outputs="model",
                name="fit_model",
            )
        ]
    )
    return Pipeline(template, namespace=family, inputs=SPLIT_INPUTS)


def create_pipeline(**kwargs) -> Pipeline:
    return sum((create_family_pipeline(f) for f in FAMILIES), Pipeline([]))
