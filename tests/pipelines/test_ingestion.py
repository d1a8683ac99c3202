"""The `ingestion` pipeline through Kedro: in-memory DataCatalog, SequentialRunner, the project's
own parameters (base and the movielens100k / files_example envs), validated as Kedro does."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro.validation.exceptions import ParameterValidationError
from kedro.validation.parameter_validator import ParameterValidator

from recforge.data.schema import INTERACTION_COLUMNS, ITEM_COLUMNS
from recforge.data.sources import IngestionParams
from recforge.pipelines.ingestion import create_pipeline
from recforge.pipelines.ingestion.nodes import OUTPUTS

ROOT = Path(__file__).resolve().parents[2]


def env_params(env: str) -> dict:
    """`parameters` as Kedro loads them for `kedro run --env <env>` (base merged with the env)."""
    loader = OmegaConfigLoader(conf_source=str(ROOT / "conf"), base_env="base", default_run_env=env)
    return {"ingestion": copy.deepcopy(loader["parameters"]["ingestion"])}


def run_ingestion(raw_params: dict) -> dict[str, object]:
    pipeline = create_pipeline()
    # What Kedro's context does before any node runs: typed `params:` become IngestionParams.
    validated = ParameterValidator({"ingestion": pipeline}).validate_raw_params(raw_params)
    assert isinstance(validated["ingestion"], IngestionParams)
    catalog = DataCatalog({"params:ingestion": MemoryDataset(validated["ingestion"])})
    SequentialRunner().run(pipeline, catalog)
    return {name: catalog.load(name) for name in OUTPUTS}


def check_manifest(media: dict[str, bytes]) -> list[dict]:
    manifest = json.loads(media["manifest.json"])
    files = {k: v for k, v in media.items() if k != "manifest.json"}
    assert [m["path"] for m in manifest] == sorted(files)
    for entry in manifest:
        data = files[entry["path"]]
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
    return manifest


def test_pipeline_shape() -> None:
    pipeline = create_pipeline()
    assert [n.name for n in pipeline.nodes] == ["ingest_source"]
    assert pipeline.inputs() == {"params:ingestion"}
    assert pipeline.outputs() == set(OUTPUTS)


def test_synthetic_tiny(tmp_path: Path) -> None:
    pytest.importorskip("recforge.data.synthetic")
    raw = yaml.safe_load((ROOT / "conf" / "base" / "parameters_ingestion.yml").read_text())
    assert raw["ingestion"]["source"] == "synthetic"
    raw["ingestion"]["synthetic"] = {"preset": "tiny", "seed": 3, "image_size": 8, "audio_seconds": 0.05}

    out = run_ingestion(raw)

    interactions, items, users = out["interactions"], out["items"], out["users"]
    assert list(interactions.columns) == list(INTERACTION_COLUMNS)
    assert len(interactions) > 1000
    assert interactions["user_id"].isin(users["user_id"]).all()
    assert interactions["item_id"].isin(items["item_id"]).all()
    assert set(ITEM_COLUMNS) <= set(items.columns)
    assert len(out["heldout_interactions"]) == 0
    assert list(out["heldout_interactions"].columns) == list(INTERACTION_COLUMNS)
    manifest = check_manifest(out["media"])
    assert {m["path"] for m in manifest} >= set(items["image_path"].dropna())
    assert len(out["ground_truth_items"]) == len(items) and len(out["ground_truth_users"]) == len(users)


def test_files_example_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(ROOT)  # the example's paths are relative to the project root, as in `kedro run`
    raw = env_params("files_example")
    assert raw["ingestion"]["source"] == "files"
    committed = {p: p.read_bytes() for p in (ROOT / "examples" / "files_example").iterdir()}

    out = run_ingestion(raw)

    assert len(out["interactions"]) == 48 and len(out["heldout_interactions"]) == 12
    assert set(out["interactions"]["event"].astype(str)) <= {"view", "click", "add_to_cart", "purchase"}
    assert out["interactions"]["session_id"].notna().all()
    assert len(out["items"]) == 12 and "brand" in out["items"].columns
    assert out["items"].set_index("item_id").loc["SKU-001", "title"] == "Café au lait mug"
    assert len(out["users"]) == 8 and {"age_band", "country"} <= set(out["users"].columns)
    assert check_manifest(out["media"]) == []
    assert len(out["ground_truth_items"]) == 0
    assert {p: p.read_bytes() for p in (ROOT / "examples" / "files_example").iterdir()} == committed

    # Every output can be written by the dataset types conf/base/catalog.yml declares.
    conf = yaml.safe_load((ROOT / "conf" / "base" / "catalog.yml").read_text())
    for name, entry in conf.items():
        key = "path" if "path" in entry else "filepath"
        entry[key] = str(tmp_path / Path(entry[key]).relative_to("data"))
    disk = DataCatalog.from_config(conf)
    for name in OUTPUTS:
        disk.save(name, out[name])
    assert json.loads((tmp_path / "03_primary" / "media" / "manifest.json").read_text()) == []
    back = pd.read_parquet(tmp_path / "03_primary" / "interactions.parquet")
    assert back["timestamp"].tolist() == out["interactions"]["timestamp"].tolist()


def test_movielens100k_env(tmp_path: Path) -> None:
    raw = env_params("movielens100k")
    assert raw["ingestion"]["source"] == "movielens100k"
    assert raw["ingestion"]["movielens100k"]["sha256"] == (
        "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c9a9b2d"
    )
    raw_dir = tmp_path / "ml-100k"
    raw_dir.mkdir()
    (raw_dir / "u.data").write_text("1\t5\t4\t881250949\n2\t5\t2\t881250950\n", encoding="ascii")
    (raw_dir / "u.item").write_bytes(
        ("5|Copycat (1995)|01-Jan-1995||http://x|" + "|".join(["0"] * 6 + ["1"] + ["0"] * 12) + "\n").encode("latin-1")
    )
    (raw_dir / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n", encoding="latin-1")
    raw["ingestion"]["movielens100k"].update(raw_dir=str(raw_dir), download=False)

    out = run_ingestion(raw)

    assert out["interactions"]["value"].tolist() == [4.0, 2.0]
    assert out["items"]["category"].tolist() == ["movie/Crime"]
    assert out["users"]["occupation"].tolist() == ["technician", "other"]
    assert check_manifest(out["media"]) == []


def test_params_are_validated_before_any_node_runs() -> None:
    pipeline = create_pipeline()
    with pytest.raises(ParameterValidationError, match="files"):
        ParameterValidator({"ingestion": pipeline}).validate_raw_params({"ingestion": {"source": "files"}})
    with pytest.raises(ParameterValidationError):
        ParameterValidator({"ingestion": pipeline}).validate_raw_params({"ingestion": {"source": "kaggle"}})
