"""`training`: one template pipeline, instantiated per registered family with its namespace.

`kedro run --pipelines training --namespaces neumf` trains one family; the model lands in the
dataset factory `{family}.model` (data/06_models/<family>/).

Two kinds of upstream input, both fixed here so the pipeline's shape never depends on parameters:

- `ITEM_VECTORS`: a family listed here reads `pretraining` vector tables (`<namespace>.vectors`,
  data/04_feature/<namespace>/): lstm starts its item embeddings from prod2vec's (frozen or not:
  its `freeze_item_vectors` parameter); content families read every content table and their
  `vectors` parameter picks which (vbpr: `[image]`; `[text, audio]` side by side). To start
  another family from, say, the `text` encoder's vectors, add `"bpr": ("text",)` (and the
  table's folder to its `dvc.yaml` deps).
- `Family.fields`: a field-aware family (fm, deepfm, wide_deep …) reads the `features`
  pipeline's tables (`FEATURE_TABLES`, data/04_feature/features/).
- `Family.item_content`: a family that reads item content itself (cnn3d: the characters of
  each item's id, text and category) gets the catalog datasets of `Family.content_inputs`
  (the canonical `items` table; the `media` root too for one that reads the files).
- `VECTOR_OUTPUTS`: a family whose trained item embeddings are themselves a vector table
  (content2vec) also writes `<family>.vectors` (data/04_feature/<family>/), which any family can
  then read through `ITEM_VECTORS`.
- `Family.warm_start_from`: a family that starts from other trained families reads their
  `<family>.model` (neumf from gmf and mlp, He et al. 2017 §3.4.1, when its `pretrain` parameter
  is true), so Kedro orders it after them.
"""

from kedro.pipeline import Node, Pipeline

from recforge.models.content.content2vec import export_item_vectors
from recforge.models.registry import FAMILIES, get_family
from recforge.pipelines.training.nodes import make_fit_model

SPLIT_INPUTS = {"train", "valid", "user_map", "item_map"}
# what a field-aware family (`Family.fields`) reads from the `features` pipeline
FEATURE_TABLES = ("user_features", "item_features", "feature_meta")

# The pretraining tables of item content (data/04_feature/<name>/vectors.parquet).
CONTENT_TABLES = ("image", "text", "audio")
# family -> the pretraining namespaces whose vector tables it reads, in this order
ITEM_VECTORS: dict[str, tuple[str, ...]] = {
    "lstm": ("prod2vec",),
    # content2vec's fine-tuned table too: vbpr and hybrid then train after content2vec
    "vbpr": (*CONTENT_TABLES, "content2vec"),
    "hybrid": (*CONTENT_TABLES, "content2vec"),
    # Content2Vec keeps one module per table (`Family.vector_blocks`)
    "content2vec": ("image", "text", "prod2vec", "meta_prod2vec"),
    # mv_dnn's content-vector view, beside its text and category views from the items table
    "mv_dnn": CONTENT_TABLES,
}
# family -> a node function (trained model, item_map) -> vector table, written to
# `<family>.vectors` (data/04_feature/<family>/) so that any family can start from it
VECTOR_OUTPUTS = {"content2vec": export_item_vectors}


def upstream(family: str) -> dict[str, str]:
    """Inputs from outside `family`'s namespace that its node reads after the split and the
    parameters, in order: {name inside the template: dataset name in the catalog}."""
    fam = get_family(family)
    if family in ITEM_VECTORS:
        item_side = {f"{name}_vectors": f"{name}.vectors" for name in ITEM_VECTORS[family]}
        if fam.item_content is not None:  # content and vectors (mv_dnn): vector tables first
            item_side |= {name: name for name in fam.content_inputs}
    elif fam.fields is not None:
        item_side = {name: name for name in FEATURE_TABLES}
    else:
        item_side = {name: name for name in fam.content_inputs} if fam.item_content is not None else {}
    models = {f"{name}_model": f"{name}.model" for name in fam.warm_start_from}
    return item_side | models


def upstream_inputs(family: str) -> list[str]:
    """The catalog names of `upstream(family)`, in the node's order."""
    return list(upstream(family).values())


def create_family_pipeline(family: str) -> Pipeline:
    """The training template with `family`'s node, inside the `family` namespace."""
    extra = upstream(family)
    nodes = [
        Node(
            make_fit_model(family, vector_tables=ITEM_VECTORS.get(family, ())),
            inputs=["train", "valid", "user_map", "item_map", "params:model", "params:training", *extra],
            outputs="model",
            name="fit_model",
        )
    ]
    if family in VECTOR_OUTPUTS:
        export = VECTOR_OUTPUTS[family]
        nodes.append(Node(export, inputs=["model", "item_map"], outputs="vectors", name=export.__name__))
    template = Pipeline(nodes)
    return Pipeline(template, namespace=family, inputs={**{name: name for name in SPLIT_INPUTS}, **extra})


def create_pipeline(**kwargs) -> Pipeline:
    return sum((create_family_pipeline(f) for f in FAMILIES), Pipeline([]))
