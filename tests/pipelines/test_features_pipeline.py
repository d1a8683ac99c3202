"""The `features` pipeline through Kedro, and a field-aware family trained from its tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from recforge.data.errors import DataError
from recforge.features.tables import FeatureTablesConfig, encode_new, tables_from_frames
from recforge.pipelines.features.pipeline import create_pipeline as features_pipeline
from recforge.pipelines.training.pipeline import create_pipeline as training_pipeline
from recforge.training.recommender import Recommender

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    """40 users in two countries over 20 items of two brands; each country buys its own brand,
    so the country x brand cross alone explains the data."""
    rng = np.random.default_rng(0)
    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(40)], "country": ["fr", "de"] * 20,
                          "age": rng.integers(18, 70, 40).astype(float)})  # fmt: skip
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(20)], "brand": ["a", "b"] * 10,
                          "price": rng.uniform(1, 100, 20)})  # fmt: skip
    rows = [(u, i) for u in range(40) for i in range(20) if (u % 2 == i % 2) and rng.random() < 0.5]
    frame = pd.DataFrame(rows, columns=["user_idx", "item_idx"])
    frame["timestamp"] = 1_700_000_000 + np.arange(len(frame))
    frame["event"], frame["value"] = "view", 1.0
    frame["user_id"] = "u" + frame["user_idx"].astype(str)
    frame["item_id"] = "i" + frame["item_idx"].astype(str)
    valid = frame.groupby("user_idx").tail(1)
    user_map = pd.DataFrame({"user_id": users["user_id"], "user_idx": np.arange(40)})
    item_map = pd.DataFrame({"item_id": items["item_id"], "item_idx": np.arange(20)})
    return {"users": users, "items": items, "user_map": user_map, "item_map": item_map,
            "train": frame.drop(valid.index).reset_index(drop=True), "valid": valid.reset_index(drop=True)}


FEATURES = {
    "user": {"fields": [{"name": "country", "kind": "categorical", "column": "country"},
                        {"name": "age", "kind": "bucketised", "column": "age", "buckets": 4}]},
    "item": {"fields": [{"name": "brand", "kind": "categorical", "column": "brand"},
                        {"name": "price", "kind": "numeric", "column": "price"}]},
    "crosses": [{"name": "country_x_brand", "user": "country", "item": "brand", "buckets": 16}],
}  # fmt: skip


def _run(pipeline, datasets: dict) -> DataCatalog:
    catalog = DataCatalog({k: MemoryDataset(v) for k, v in datasets.items()})
    for name in pipeline.all_outputs():
        catalog[name] = MemoryDataset()
    SequentialRunner().run(pipeline, catalog)
    return catalog


def test_the_base_parameters_declare_valid_fields():
    params = yaml.safe_load((CONF / "parameters_features.yml").read_text())["features"]
    config = FeatureTablesConfig.model_validate(params)
    assert config.user and config.item and config.crosses


def test_features_then_training_fits_a_field_family_that_saves_its_encoders(tables, tmp_path):
    from recforge.models.registry import FAMILIES

    features = {k: tables[k] for k in ("users", "items", "user_map", "item_map")}
    out = _run(features_pipeline(), {**features, "params:features": FeatureTablesConfig.model_validate(FEATURES)})
    user_features, item_features, meta = (out.load(n) for n in ("user_features", "item_features", "feature_meta"))
    assert list(user_features["user_idx"]) == list(range(40)) and len(item_features) == 20
    assert set(meta) == {"user", "item", "crosses", "context"} and meta["user"]["encoder"]["config"]["fields"][0]["name"] == "country"

    train_pipe = training_pipeline().only_nodes_with_namespaces(["wide_deep"])
    params = {"params:wide_deep.model": FAMILIES["wide_deep"].config.model_validate({"dim": 8, "layers": [16]}),
              "params:wide_deep.training": {"epochs": 15, "batch_size": 64, "lr": 0.02, "device": "cpu"}}
    from recforge.training.config import TrainConfig

    params["params:wide_deep.training"] = TrainConfig.model_validate(params["params:wide_deep.training"])
    datasets = {k: tables[k] for k in ("train", "valid", "user_map", "item_map")}
    datasets |= {"user_features": user_features, "item_features": item_features, "feature_meta": meta, **params}
    rec = _run(train_pipe, datasets).load("wide_deep.model")
    # the brand the user's country buys ranks first
    top, _ = rec.recommend(np.arange(40), k=3, filter_already_liked_items=False)
    assert ((top % 2) == (np.arange(40) % 2)[:, None]).mean() > 0.9
    rec.save(tmp_path / "wd")
    loaded = Recommender.load(tmp_path / "wd")
    np.testing.assert_allclose(loaded.score(np.arange(5)), rec.score(np.arange(5)), rtol=1e-5, atol=1e-6)
    # serving: new users encode with the training encoders; an unseen country is counted, not fatal
    saved = tables_from_frames(user_features, item_features, meta)
    batch = encode_new(saved, "user", pd.DataFrame({"country": ["fr", "jp"], "age": [30.0, np.nan]}))
    assert batch.unknown == {"country": 1}
    assert batch.index[1, batch.slots["country"]].item() == 0  # the reserved unknown row


def test_a_field_the_table_lacks_names_the_field_and_the_table(tables):
    bad = {**FEATURES, "user": {"fields": [{"name": "home", "kind": "categorical", "column": "city"}]}}
    features = {k: tables[k] for k in ("users", "items", "user_map", "item_map")}
    with pytest.raises(Exception, match=r"'users'.*'city'|field 'home' reads column 'city'") as info:
        _run(features_pipeline(), {**features, "params:features": FeatureTablesConfig.model_validate(
            {**bad, "crosses": []})})  # fmt: skip
    assert isinstance(info.value, DataError) or isinstance(info.value.__cause__, DataError)


def test_a_cross_of_an_undeclared_field_is_refused_before_a_run():
    with pytest.raises(ValueError, match="cross 'x': item field 'colour' is not declared"):
        FeatureTablesConfig.model_validate({**FEATURES, "crosses": [{"name": "x", "user": "country", "item": "colour"}]})
