"""The `pretraining` pipeline through Kedro: in-memory DataCatalog, SequentialRunner, the project's
own parameters (shrunk for speed), validated as Kedro does before any node runs."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro.validation.exceptions import ParameterValidationError
from kedro.validation.parameter_validator import ParameterValidator
from matplotlib.figure import Figure

from recforge.data.splits import SplitConfig, split_interactions
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.encoders.diagnostics import DiagnosticsConfig
from recforge.encoders.meta_prod2vec import MetaProd2VecConfig
from recforge.encoders.prod2vec import Prod2VecConfig
from recforge.encoders.user2vec import User2VecConfig
from recforge.encoders.vectors import align_item_vectors
from recforge.pipelines.pretraining import create_pipeline
from recforge.pipelines.pretraining.pipeline import ENCODERS

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"
BEHAVIOUR = ("prod2vec", "meta_prod2vec", "user2vec")
CONFIGS = {"prod2vec": Prod2VecConfig, "meta_prod2vec": MetaProd2VecConfig, "user2vec": User2VecConfig}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner does not empty after its last reader, so tests can inspect
    intermediate datasets (the vector tables feed the diagnostics)."""

    def _release(self) -> None:
        pass


def params(small: bool = True) -> dict:
    raw = yaml.safe_load((CONF / "parameters_pretraining.yml").read_text())
    if small:
        for name in BEHAVIOUR:
            raw[name]["encoder"].update(dim=16, negative_group=128)
            raw[name]["training"].update(epochs=6, batch_size=1024, device="cpu")
        raw["vector_diagnostics"].update(max_points=100)
    return raw


@pytest.fixture(scope="module")
def inputs() -> dict[str, pd.DataFrame]:
    shop = generate_shop(ShopConfig(preset="tiny", n_users=300, n_items=200, n_sessions=3000, with_media=False))
    split = split_interactions(shop.interactions, None, SplitConfig(strategy="temporal"))
    return {"train": split.train, "valid": split.valid, "test": split.test, "items": shop.items,
            "user_map": split.user_map.to_frame(), "item_map": split.item_map.to_frame()}


def run_pipeline(pipeline, inputs: dict, raw_params: dict) -> DataCatalog:
    # What Kedro's context does before any node runs: typed `params:` become pydantic configs.
    validated = ParameterValidator({"pretraining": pipeline}).validate_raw_params(raw_params)
    datasets = {name: MemoryDataset(inputs[name]) for name in pipeline.inputs() if not name.startswith("params:")}
    for name in BEHAVIOUR:
        for key in ("encoder", "training"):
            datasets[f"params:{name}.{key}"] = MemoryDataset(validated[name][key], copy_mode="assign")
    datasets["params:vector_diagnostics"] = MemoryDataset(validated["vector_diagnostics"], copy_mode="assign")
    produced = {o for n in pipeline.nodes for o in n.outputs}
    datasets.update({name: KeptDataset(copy_mode="assign") for name in produced})
    catalog = DataCatalog(datasets)
    SequentialRunner().run(pipeline, catalog)
    return catalog


def test_parameters_file_validates_to_typed_configs() -> None:
    validated = ParameterValidator({"pretraining": create_pipeline()}).validate_raw_params(params(small=False))
    for name, cls in CONFIGS.items():
        assert isinstance(validated[name]["encoder"], cls)
    assert isinstance(validated["vector_diagnostics"], DiagnosticsConfig)
    assert validated["prod2vec"]["encoder"].engine == "torch"
    assert validated["user2vec"]["encoder"].sequences.by == "user"


def test_bad_parameters_are_rejected_before_running() -> None:
    raw = params()
    raw["prod2vec"]["encoder"]["window"] = 0
    raw["meta_prod2vec"]["encoder"]["colour"] = "red"
    with pytest.raises(ParameterValidationError) as err:
        ParameterValidator({"pretraining": create_pipeline()}).validate_raw_params(raw)
    assert "'prod2vec.encoder'" in str(err.value) and "window" in str(err.value)
    assert "'meta_prod2vec.encoder'" in str(err.value) and "colour" in str(err.value)


def test_namespaces_nodes_and_inputs() -> None:
    pipeline = create_pipeline()
    assert set(ENCODERS) >= set(BEHAVIOUR)
    for node in pipeline.nodes:
        namespace, name = node.name.split(".")
        assert namespace in ENCODERS and name == node.func.__name__
    # vectors come from the TRAIN split only: valid and test are no input of any namespace
    free = {i for i in pipeline.inputs() if not i.startswith("params:")}
    assert free == {"train", "user_map", "item_map", "items"}
    one = pipeline.only_nodes_with_namespaces(["prod2vec"])
    assert {n.name.split(".")[0] for n in one.nodes} == {"prod2vec"} and len(one.nodes) == 4


def test_catalog_factories_cover_every_output() -> None:
    catalog = yaml.safe_load((CONF / "catalog_pretraining.yml").read_text())
    patterns = {re.compile("^" + re.escape(p).replace(r"\{namespace\}", r"(\w+)") + "$"): v
                for p, v in catalog.items()}
    for output in create_pipeline().outputs():
        matches = [v for p, v in patterns.items() if p.match(output)]
        assert len(matches) == 1, output
        layer = "04_feature" if output.split(".")[1] in ("vectors", "user_vectors", "encoder_config") else "08_reporting"
        assert layer in matches[0]["filepath"]
    assert catalog["{namespace}.projection"]["type"] == "matplotlib.MatplotlibDataset"


def test_pipeline_runs_end_to_end(inputs) -> None:
    catalog = run_pipeline(create_pipeline(), inputs, params())
    item_ids = set(inputs["item_map"]["item_id"])
    for name in BEHAVIOUR:
        vectors = catalog.load(f"{name}.vectors")
        assert list(vectors.columns) == ["item_id"] + [f"v{j}" for j in range(16)]
        assert set(vectors["item_id"]) <= item_ids and len(vectors) > 0.8 * len(item_ids)
        record = json.loads(json.dumps(catalog.load(f"{name}.encoder_config")))
        assert record["encoder"] == name and record["config"]["dim"] == 16 and record["training"]["epochs"] == 6
        assert record["report"]["words_per_s"] > 0
        purity = catalog.load(f"{name}.purity")
        assert purity["category"]["purity"] > 3 * purity["category"]["chance"], (name, purity)
        neighbours = catalog.load(f"{name}.neighbours")
        assert {"item_id", "title", "neighbour_id", "neighbour_title", "cosine"} <= set(neighbours.columns)
        assert isinstance(catalog.load(f"{name}.projection"), Figure)
        assert align_item_vectors(vectors, inputs["item_map"]).shape == (len(item_ids), 16)
    users = catalog.load("user2vec.user_vectors")
    assert list(users.columns)[:2] == ["user_id", "v0"] and set(users["user_id"]) <= set(inputs["user_map"]["user_id"])


def test_one_namespace_runs_alone(inputs) -> None:
    pipeline = create_pipeline().only_nodes_with_namespaces(["prod2vec"])
    raw = copy.deepcopy(params())
    catalog = run_pipeline(pipeline, inputs, raw)
    assert catalog.load("prod2vec.vectors").shape[1] == 17
    assert "meta_prod2vec.vectors" not in catalog
