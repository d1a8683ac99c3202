"""The `splitting` pipeline through Kedro: in-memory DataCatalog, SequentialRunner, real parameters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro.validation.exceptions import ParameterValidationError
from kedro.validation.parameter_validator import ParameterValidator

from recforge.data.errors import DataError
from recforge.data.idmap import UNKNOWN, IdMap
from recforge.data.schema import INTERACTION_COLUMNS, coerce_interactions, empty_interactions
from recforge.data.splits import SplitConfig
from recforge.data.validation import table_fingerprint
from recforge.pipelines.splitting import create_pipeline

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"
OUTPUTS = ["train", "valid", "test", "user_map", "item_map", "split_summary"]


@pytest.fixture(scope="module")
def interactions() -> pd.DataFrame:
    """40 users with 3..15 clicks/views/purchases each over 50 items, in file (not user) order."""
    rng = np.random.default_rng(5)
    users = np.repeat([f"u{u:02d}" for u in range(40)], rng.integers(3, 16, size=40))
    rng.shuffle(users)
    n = len(users)
    frame = pd.DataFrame(
        {
            "user_id": users,
            "item_id": [f"i{i:02d}" for i in rng.integers(0, 50, size=n)],
            "timestamp": 1_600_000_000 + rng.integers(0, 10_000, size=n) * 60,
            "event": rng.choice(["view", "click", "purchase"], size=n),
            "value": np.arange(n, dtype="float64"),
        }
    )
    return coerce_interactions(frame, source="fixture")


def params(**overrides: object) -> dict:
    raw = yaml.safe_load((CONF / "parameters_splitting.yml").read_text())
    raw["splitting"].update(overrides)
    return raw


def run_pipeline(interactions: pd.DataFrame, status: dict | None, raw_params: dict) -> dict[str, object]:
    pipeline = create_pipeline()
    # What Kedro's context does before any node runs: typed `params:` become SplitConfig.
    validated = ParameterValidator({"splitting": pipeline}).validate_raw_params(raw_params)
    catalog = DataCatalog(
        {
            "interactions": MemoryDataset(interactions),
            "heldout_interactions": MemoryDataset(empty_interactions()),
            "validation_status": MemoryDataset(status),
            "params:splitting": MemoryDataset(validated["splitting"], copy_mode="assign"),
            **{name: MemoryDataset() for name in OUTPUTS},
        }
    )
    SequentialRunner().run(pipeline, catalog)
    return {name: catalog.load(name) for name in OUTPUTS}


def test_parameters_file_validates_to_split_config() -> None:
    validated = ParameterValidator({"splitting": create_pipeline()}).validate_raw_params(params())
    assert isinstance(validated["splitting"], SplitConfig)
    assert validated["splitting"].strategy == "temporal"


def test_bad_parameters_are_rejected_before_running() -> None:
    with pytest.raises(ParameterValidationError, match="valid_fraction"):
        ParameterValidator({"splitting": create_pipeline()}).validate_raw_params(
            params(valid_fraction=0.6, test_fraction=0.5)
        )


def test_catalog_declares_every_output() -> None:
    catalog = yaml.safe_load((CONF / "catalog_splitting.yml").read_text())
    assert set(catalog) == set(OUTPUTS)
    assert all("05_model_input" in catalog[n]["filepath"] for n in OUTPUTS if n != "split_summary")
    assert "08_reporting" in catalog["split_summary"]["filepath"]


def test_node_names_are_function_names() -> None:
    nodes = create_pipeline().nodes
    assert [n.name for n in nodes] == [n.func.__name__ for n in nodes] == ["filter_interactions", "split_interactions"]


def test_pipeline_runs_end_to_end(interactions: pd.DataFrame) -> None:
    status = {"passed": True, "fingerprint": table_fingerprint(interactions)}
    out = run_pipeline(interactions, status, params(strategy="leave_last_out", events=["click", "purchase"]))
    train, valid, test = out["train"], out["valid"], out["test"]
    for part in (train, valid, test):
        assert list(part.columns) == [*INTERACTION_COLUMNS, "user_idx", "item_idx"]
        assert set(part["event"].astype(str)) <= {"click", "purchase"}
    assert not set(train["value"]) & set(test["value"]) and not set(train["value"]) & set(valid["value"])
    user_map = IdMap.from_frame(out["user_map"], "user")
    item_map = IdMap.from_frame(out["item_map"], "item")
    assert set(user_map.ids) == set(train["user_id"]) and set(item_map.ids) == set(train["item_id"])
    unknown_items = ~test["item_id"].isin(set(train["item_id"]))
    assert (test.loc[unknown_items, "item_idx"] == UNKNOWN).all()
    summary = json.loads(json.dumps(out["split_summary"]))
    assert summary["strategy"] == "leave_last_out"
    assert summary["splits"]["test"]["interactions"] == len(test)
    assert summary["parameters"]["events"] == ["click", "purchase"]


@pytest.mark.parametrize("status", [None, {"passed": False}])
def test_pipeline_refuses_unvalidated_tables(interactions: pd.DataFrame, status: dict | None) -> None:
    with pytest.raises(DataError):
        run_pipeline(interactions, status, params())


def test_pipeline_refuses_tables_changed_since_validation(interactions: pd.DataFrame) -> None:
    status = {"passed": True, "fingerprint": table_fingerprint(interactions)}
    with pytest.raises(DataError):
        run_pipeline(interactions.iloc[1:], status, params())
