"""`ctr`: click-through-rate prediction on the impression log (issue #11's CTR task).

impressions (+ users, items attributes) -> `prepare_impressions` (time split) ->
`fit_feature_encoder` (train rows only) -> one `fit_ctr` per family in `CTR_FAMILIES`, namespaced
by the family (`<family>.ctr_model`, data/06_models/ctr/<family>/), each evaluated on the test
impressions (`<family>.ctr_metrics`) -> `report_ctr`: data/08_reporting/ctr/leaderboard.{parquet,md}
with AUC, log loss and RelaImpr over `lr`.

`kedro run --pipelines ctr` runs it; the fields are `ctr.data` in parameters_ctr.yml and each
family's parameters `ctr.families.<family>`.
"""

from kedro.pipeline import Node, Pipeline

from recforge.pipelines.ctr.nodes import (
    evaluate_ctr_model,
    fit_feature_encoder,
    make_fit_ctr,
    prepare_impressions,
    report_ctr,
)

# the field-aware families whose core reads a row of any fields; neural_mf_v1/v2 are deck 002's
# rating models (two towers over the user's and the item's fields), judged on ratings
CTR_FAMILIES = ("lr", "fm", "nfm", "wide_deep", "deepfm", "deep_regression")


def create_family_pipeline(family: str) -> Pipeline:
    template = Pipeline([
        Node(make_fit_ctr(family), inputs=["ctr_train", "ctr_valid", "ctr_encoder", "params:ctr.data",
                                           "params:ctr_model", "params:ctr_training"],
             outputs="ctr_model", name="fit_ctr"),
        Node(evaluate_ctr_model, inputs=["ctr_model", "ctr_test", "ctr_encoder", "params:ctr.data"],
             outputs="ctr_metrics", name="evaluate_ctr_model"),
    ])  # fmt: skip
    return Pipeline(
        template, namespace=family, inputs={"ctr_train", "ctr_valid", "ctr_test", "ctr_encoder"},
        parameters={"params:ctr.data": "params:ctr.data",
                    "params:ctr_model": f"params:ctr.families.{family}.model",
                    "params:ctr_training": f"params:ctr.families.{family}.training"},
    )  # fmt: skip


def create_pipeline(**kwargs: object) -> Pipeline:
    shared = Pipeline([
        Node(prepare_impressions, inputs=["impressions", "users", "items", "params:ctr.data"],
             outputs=["ctr_train", "ctr_valid", "ctr_test"], name="prepare_impressions"),
        Node(fit_feature_encoder, inputs=["ctr_train", "params:ctr.data"], outputs="ctr_encoder",
             name="fit_feature_encoder"),
    ])  # fmt: skip
    families = sum((create_family_pipeline(f) for f in CTR_FAMILIES), Pipeline([]))
    # every family's metrics, None for one a run left out (`--namespaces fm,lr`)
    report = Pipeline([
        Node(report_ctr, inputs={f: f"{f}.ctr_metrics" for f in CTR_FAMILIES},
             outputs=["ctr_leaderboard", "ctr_leaderboard_md"], name="report_ctr"),
    ])  # fmt: skip
    return shared + families + report
