"""The `pretraining` pipeline through Kedro: in-memory DataCatalog, SequentialRunner, the project's
own parameters (shrunk for speed), validated as Kedro does before any node runs. The content
namespaces read the media through the catalog's own `media` PartitionedDataset."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro_datasets.partitions import PartitionedDataset
from kedro.runner import SequentialRunner
from kedro.validation.exceptions import ParameterValidationError
from kedro.validation.parameter_validator import ParameterValidator
from matplotlib.figure import Figure

from recforge.data.media import with_manifest
from recforge.data.schema import STRING
from recforge.data.splits import SplitConfig, split_interactions
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.encoders.audio import AudioEncoderConfig
from recforge.encoders.diagnostics import DiagnosticsConfig
from recforge.encoders.image import ImageEncoderConfig
from recforge.encoders.media_io import MediaError
from recforge.encoders.meta_prod2vec import MetaProd2VecConfig
from recforge.encoders.prod2vec import Prod2VecConfig
from recforge.encoders.text import TextEncoderConfig
from recforge.encoders.user2vec import User2VecConfig
from recforge.encoders.vectors import align_item_vectors
from recforge.pipelines.pretraining import create_pipeline
from recforge.pipelines.pretraining.pipeline import ENCODERS

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"
BEHAVIOUR = ("prod2vec", "meta_prod2vec", "user2vec")
CONTENT = ("image", "text", "audio")
CONFIGS = {"prod2vec": Prod2VecConfig, "meta_prod2vec": MetaProd2VecConfig, "user2vec": User2VecConfig,
           "image": ImageEncoderConfig, "text": TextEncoderConfig, "audio": AudioEncoderConfig}
# small networks, few epochs: the tiny shop plants the category in every modality
SMALL_CONTENT = {
    "image": {"image_size": 16, "widths": [8, 16, 32]},
    "text": {"embedding_dim": 32, "n_filters": 16, "word2vec_epochs": 5},
    "audio": {"channels": [16, 32], "dim": 32, "n_mels": 32},
}



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
        for name in CONTENT:
            raw[name]["encoder"].update(SMALL_CONTENT[name])
            raw[name]["training"].update(epochs=8, device="cpu")
        raw["vector_diagnostics"].update(max_points=100)
    return raw


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, object]:
    shop = generate_shop(ShopConfig(preset="tiny", n_users=300, n_items=200, n_sessions=3000, image_size=16))
    split = split_interactions(shop.interactions, None, SplitConfig(strategy="temporal"))
    return {"train": split.train, "valid": split.valid, "test": split.test, "items": shop.items,
            "user_map": split.user_map.to_frame(), "item_map": split.item_map.to_frame(),
            "media": media_on_disk(shop.media, tmp_path_factory.mktemp("media"))}


def media_on_disk(files: dict[str, bytes], root: Path) -> PartitionedDataset:
    """The catalog's own `media` entry (PartitionedDataset of BinaryFileDataset) under `root`,
    holding `files` as ingestion writes them: the content nodes get what `kedro run` gives them."""
    entry = yaml.safe_load((CONF / "catalog.yml").read_text())["media"]
    entry = {k: v for k, v in entry.items() if k != "type"} | {"path": str(root)}
    dataset = PartitionedDataset(**entry)
    dataset.save(with_manifest(files))
    return PartitionedDataset(**entry)


def run_pipeline(pipeline, inputs: dict, raw_params: dict) -> DataCatalog:
    # What Kedro's context does before any node runs: typed `params:` become pydantic configs.
    validated = ParameterValidator({"pretraining": pipeline}).validate_raw_params(raw_params)
    datasets = {name: inputs[name] if name == "media" else MemoryDataset(inputs[name])
                for name in pipeline.inputs() if not name.startswith("params:")}
    for name in ENCODERS:
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
    assert free == {"train", "user_map", "item_map", "items", "media"}
    one = pipeline.only_nodes_with_namespaces(["prod2vec"])
    assert {n.name.split(".")[0] for n in one.nodes} == {"prod2vec"} and len(one.nodes) == 4
    # content encoders read the catalogue (and its media), never interactions
    for name, media in (("image", True), ("text", False), ("audio", True)):
        inputs = pipeline.only_nodes_with_namespaces([name]).inputs()
        assert {i for i in inputs if not i.startswith("params:")} == {"items"} | ({"media"} if media else set())


def test_namespaces_flag_selects_only_that_encoder() -> None:
    # `kedro run --namespaces image` is this filter (KedroSession.run -> Pipeline.filter(node_namespaces=...))
    image = create_pipeline().filter(node_namespaces=["image"])
    assert sorted(n.name for n in image.nodes) == [
        "image.encode_images", "image.list_neighbours", "image.measure_purity", "image.plot_projection"]
    assert image.inputs() == {"items", "media", "params:image.encoder", "params:image.training",
                              "params:vector_diagnostics"}
    assert image.all_outputs() == {f"image.{o}" for o in
                               ("vectors", "encoder_config", "neighbours", "purity", "projection")}


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
    catalog = run_pipeline(create_pipeline().only_nodes_with_namespaces(list(BEHAVIOUR)), inputs, params())
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


# ----------------------------------------------------------------------------- content encoders
@pytest.mark.parametrize("name", CONTENT)
def test_content_namespace_runs_on_the_tiny_shop(inputs, name) -> None:
    catalog = run_pipeline(create_pipeline().only_nodes_with_namespaces([name]), inputs, params())
    vectors = catalog.load(f"{name}.vectors")
    record = json.loads(json.dumps(catalog.load(f"{name}.encoder_config")))
    dim = record["report"]["dim"]
    assert list(vectors.columns) == ["item_id"] + [f"v{j}" for j in range(dim)]
    # raw ids, as in item_map: every mapped item has a vector (cold-start catalogue items too)
    item_map = inputs["item_map"]
    assert set(item_map["item_id"]) <= set(vectors["item_id"]) <= set(inputs["items"]["item_id"])
    assert len(vectors) == len(inputs["items"])
    aligned = align_item_vectors(vectors, item_map)
    expected = vectors.set_index("item_id").loc[item_map.sort_values("item_idx")["item_id"]].to_numpy()
    assert aligned.shape == (len(item_map), dim) and (aligned.numpy() == expected).all()

    assert record["encoder"] == name and "skipped" not in record
    assert record["training"]["epochs"] == 8 and "train" not in record["config"]
    report = record["report"]
    assert report["n_vectors"] == len(vectors) and report["n_skipped"] == 0 and report["skipped"] == []
    proxy = report["proxy"]
    assert proxy["epochs"] == 8 and proxy["heldout_accuracy"] > 3 * proxy["chance_accuracy"], proxy
    assert report["timings"]["items_per_s"] > 0 and report["timings"]["total_s"] > 0

    purity = catalog.load(f"{name}.purity")
    assert purity["n_items"] == len(vectors)
    for level in ("category", "top_category"):
        assert purity[level]["purity"] > 3 * purity[level]["chance"], (name, purity)
    assert len(catalog.load(f"{name}.neighbours")) > 0
    assert isinstance(catalog.load(f"{name}.projection"), Figure)


def _with_broken_image(inputs: dict, root: Path) -> tuple[dict, str, str]:
    items = inputs["items"]
    item_id, path = items["item_id"].iloc[3], items["image_path"].iloc[3]
    files = {k: v() for k, v in inputs["media"].load().items() if k != "manifest.json"}
    files[path] = b"not a png"
    return {**inputs, "media": media_on_disk(files, root)}, item_id, path


def test_bad_media_is_an_error_naming_the_file(inputs, tmp_path) -> None:
    broken, item_id, path = _with_broken_image(inputs, tmp_path)
    with pytest.raises(MediaError, match=re.escape(path)) as err:
        run_pipeline(create_pipeline().only_nodes_with_namespaces(["image"]), broken, params())
    assert item_id in str(err.value) and "on_bad_media: skip" in str(err.value)


def test_skipped_media_are_reported_in_encoder_config(inputs, tmp_path) -> None:
    broken, item_id, path = _with_broken_image(inputs, tmp_path)
    raw = params()
    raw["image"]["encoder"]["on_bad_media"] = "skip"
    raw["image"]["training"]["epochs"] = 1
    catalog = run_pipeline(create_pipeline().only_nodes_with_namespaces(["image"]), broken, raw)
    report = catalog.load("image.encoder_config")["report"]
    assert report["n_skipped"] == 1 and report["skipped"][0]["item_id"] == item_id
    assert report["skipped"][0]["path"] == path and report["skipped"][0]["reason"]
    vectors = catalog.load("image.vectors")
    assert item_id not in set(vectors["item_id"]) and len(vectors) == len(inputs["items"]) - 1


def test_sources_without_content_skip_the_content_namespaces(inputs, tmp_path) -> None:
    # what MovieLens / YooChoose look like: no image or audio paths, titles that are the ids, no text
    items = inputs["items"].assign(
        title=inputs["items"]["item_id"], text=pd.Series(pd.NA, index=inputs["items"].index, dtype=STRING),
        image_path=pd.Series(pd.NA, index=inputs["items"].index, dtype=STRING),
        audio_path=pd.Series(pd.NA, index=inputs["items"].index, dtype=STRING),
    )
    bare = {**inputs, "items": items, "media": media_on_disk({}, tmp_path)}
    catalog = run_pipeline(create_pipeline().only_nodes_with_namespaces(list(CONTENT)), bare, params())
    for name in CONTENT:
        assert list(catalog.load(f"{name}.vectors").columns) == ["item_id"] and len(catalog.load(f"{name}.vectors")) == 0
        record = catalog.load(f"{name}.encoder_config")
        assert "no item has a value" in record["skipped"] and record["report"]["n_vectors"] == 0
        assert "no vectors" in catalog.load(f"{name}.purity")["skipped"]
        assert len(catalog.load(f"{name}.neighbours")) == 0
        assert isinstance(catalog.load(f"{name}.projection"), Figure)


def test_training_goes_under_training_not_encoder_train(inputs) -> None:
    raw = params()
    raw["text"]["encoder"]["train"] = {"epochs": 1}
    with pytest.raises(ValueError, match=r"text\.training"):
        run_pipeline(create_pipeline().only_nodes_with_namespaces(["text"]), inputs, raw)


# What each source's items table holds besides the canonical columns (recforge.data.movielens,
# session_sources, files): meta-prod2vec's metadata must come from these.
SOURCE_ITEM_COLUMNS = {
    "movielens100k": {"category", "genres"},
    "files_example": {"category", "brand"},
    "yoochoose": {"category"},
    "diginetica": {"category"},
    "retailrocket": {"category"},
}


@pytest.mark.parametrize("env", sorted(SOURCE_ITEM_COLUMNS))
def test_every_env_runs_the_pretraining_parameters_it_can(env) -> None:
    loader = OmegaConfigLoader(conf_source=str(CONF.parent), base_env="base", default_run_env=env)
    names = set(ENCODERS) | {"vector_diagnostics"}
    raw = {k: v for k, v in loader["parameters"].items() if k in names}
    assert set(raw) == names
    validated = ParameterValidator({"pretraining": create_pipeline()}).validate_raw_params(raw)
    assert set(validated["meta_prod2vec"]["encoder"].metadata) <= SOURCE_ITEM_COLUMNS[env]
