"""The `serving` pipeline through Kedro: one template per family, the lists of two trained
families (one with item vectors, one without) written on an in-memory catalog."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro.validation.parameter_validator import ParameterValidator

from recforge.data.interactions import InteractionData
from recforge.evaluation.export import SIMILAR_COLUMNS
from recforge.models.registry import FAMILIES
from recforge.pipelines.serving.pipeline import create_pipeline
from recforge.training.recommender import Recommender

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf" / "base"
RUN = ("bpr", "popularity")


def test_every_family_has_a_serving_template_and_a_dvc_stage():
    pipeline = create_pipeline()
    assert {n.namespace for n in pipeline.nodes} == set(FAMILIES)
    assert pipeline.only_nodes_with_namespaces(["bpr"]).inputs() == {
        "bpr.model", "user_map", "item_map", "params:serving"}  # fmt: skip
    assert pipeline.only_nodes_with_namespaces(["bpr"]).outputs() == {
        "bpr.recommendations", "bpr.similar_items", "bpr.export_summary"}  # fmt: skip
    catalog = yaml.safe_load((CONF / "catalog_serving.yml").read_text())
    assert catalog["{family}.recommendations"]["filepath"] == "data/07_model_output/{family}/recommendations.parquet"
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["serving"]
    assert sorted(stage["foreach"]) == sorted(FAMILIES)
    assert stage["do"]["outs"] == ["data/07_model_output/${item}"]
    assert all(e["filepath"].startswith("data/07_model_output/{family}/") for e in catalog.values())
    # only serving writes the lists
    from recforge.pipelines.evaluation.pipeline import create_pipeline as evaluation

    assert not any(o.endswith(".recommendations") for o in evaluation().all_outputs())


class _Kept(MemoryDataset):
    def _release(self) -> None:
        pass


def test_serving_exports_two_families_through_kedro():
    n_users, n_items = 30, 12
    rng = np.random.default_rng(1)
    u = np.repeat(np.arange(n_users), 3)
    frame = pd.DataFrame({"user_idx": u, "item_idx": rng.integers(0, n_items, len(u)), "value": 1.0,
                          "timestamp": np.arange(len(u))}).drop_duplicates(["user_idx", "item_idx"])  # fmt: skip
    train = InteractionData.from_frame(frame, n_users, n_items, name="train")
    models = {}
    for family, model in (("bpr", {"dim": 4}), ("popularity", {})):
        models[family] = Recommender(family, model, {"epochs": 1, "batch_size": 32, "device": "cpu"})
        models[family].fit(train)
    raw = {"serving": {**yaml.safe_load((CONF / "parameters_serving.yml").read_text())["serving"], "batch_size": 7}}
    pipeline = create_pipeline().only_nodes_with_namespaces(list(RUN))
    validated = ParameterValidator({"run": pipeline}).validate_raw_params(raw)
    user_map = pd.DataFrame({"user_id": [f"u{i}" for i in range(n_users)], "user_idx": range(n_users)})
    item_map = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "item_idx": range(n_items)})
    catalog = DataCatalog({
        "user_map": MemoryDataset(user_map),
        "item_map": MemoryDataset(item_map),
        "params:serving": MemoryDataset(validated["serving"], copy_mode="assign"),
        **{f"{f}.model": MemoryDataset(models[f], copy_mode="assign") for f in RUN},
    })  # fmt: skip
    outputs = [f"{f}.{o}" for f in RUN for o in ("recommendations", "similar_items", "export_summary")]
    for name in outputs:
        catalog[name] = _Kept(copy_mode="assign")
    SequentialRunner().run(pipeline, catalog)

    for family in RUN:
        recs, summary = catalog.load(f"{family}.recommendations"), catalog.load(f"{family}.export_summary")
        assert list(recs.columns) == ["user_id", "rank", "item_id", "score"]
        assert recs["rank"].max() == 10 and summary["recommendations"]["n_queries"] == n_users
        assert json.loads(json.dumps(summary)) == summary  # what JSONDataset writes to export.json
        seen = set(zip("u" + frame["user_idx"].astype(str), "i" + frame["item_idx"].astype(str)))
        assert not seen & set(zip(recs["user_id"], recs["item_id"]))
    bpr_similar = catalog.load("bpr.similar_items")
    assert len(bpr_similar) == n_items * 10 and catalog.load("bpr.export_summary")["similar_items"]["skipped"] is None
    pop_similar = catalog.load("popularity.similar_items")
    assert pop_similar.empty and dict(pop_similar.dtypes.astype(str)) == SIMILAR_COLUMNS
    assert catalog.load("popularity.export_summary")["similar_items"]["skipped"] == "popularity has no item vectors"
