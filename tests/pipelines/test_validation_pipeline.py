"""The `validation` pipeline through Kedro: in-memory DataCatalog, SequentialRunner, the project's
own parameters validated as Kedro does, both reports written even when the run is stopped."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, DatasetError, MemoryDataset
from kedro.runner import SequentialRunner
from kedro.validation.parameter_validator import ParameterValidator

from recforge.data.schema import coerce_interactions, items_from_interactions, users_from_interactions
from recforge.data.validation import ValidationFailed, ValidationParams, assert_validated, table_fingerprint
from recforge.pipelines.validation import create_pipeline

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ["validation_report", "validation_report_md", "validation_status"]


@pytest.fixture
def tables() -> dict[str, pd.DataFrame]:
    """Two users rating and viewing two items in 2021, as canonical tables."""
    raw = pd.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2"],
            "item_id": ["i1", "i2", "i1", "i2"],
            "timestamp": [1_610_000_000, 1_610_000_100, 1_610_000_200, 1_610_000_300],
            "event": ["rating", "view", "rating", "view"],
            "value": [5.0, 1.0, 2.0, 1.0],
        }
    )
    interactions = coerce_interactions(raw, source="fixture")
    return {
        "interactions": interactions,
        "items": items_from_interactions(interactions),
        "users": users_from_interactions(interactions),
    }


def base_params() -> ValidationParams:
    """`params:validation` as Kedro hands it to the node: conf/base loaded, then typed."""
    loader = OmegaConfigLoader(conf_source=str(ROOT / "conf"), base_env="base", default_run_env="local")
    raw = {"validation": copy.deepcopy(loader["parameters"]["validation"])}
    validated = ParameterValidator({"validation": create_pipeline()}).validate_raw_params(raw)
    assert isinstance(validated["validation"], ValidationParams)
    return validated["validation"]


def make_catalog(tables: dict[str, pd.DataFrame], root: Path) -> DataCatalog:
    """The tables in memory; the outputs are the project's own catalog entries, moved under `root`."""
    conf = yaml.safe_load((ROOT / "conf/base/catalog_validation.yml").read_text())
    for entry in conf.values():
        entry["filepath"] = str(root / entry["filepath"])
    catalog = DataCatalog.from_config(conf)
    for name, df in tables.items():
        catalog[name] = MemoryDataset(df)
    catalog["params:validation"] = MemoryDataset(base_params(), copy_mode="assign")
    return catalog


def test_pipeline_shape() -> None:
    pipeline = create_pipeline()
    assert [n.name for n in pipeline.nodes] == ["validate_tables", "check_validation"]
    assert pipeline.inputs() == {"interactions", "items", "users", "params:validation"}
    assert pipeline.outputs() == {"validation_report_md", "validation_status"}


def test_parameters_file_matches_the_defaults() -> None:
    assert base_params() == ValidationParams()


def test_catalog_entries() -> None:
    conf = yaml.safe_load((ROOT / "conf/base/catalog_validation.yml").read_text())
    assert {name: (entry["type"], entry["filepath"]) for name, entry in conf.items()} == {
        "validation_report": ("json.JSONDataset", "data/08_reporting/validation_report.json"),
        "validation_report_md": ("text.TextDataset", "data/08_reporting/validation_report.md"),
        "validation_status": ("json.JSONDataset", "data/03_primary/validation_status.json"),
    }


def test_clean_tables_give_both_reports_and_a_passing_status(tables, tmp_path) -> None:
    catalog = make_catalog(tables, tmp_path)
    SequentialRunner().run(create_pipeline(), catalog)

    report = catalog.load("validation_report")
    assert report["passed"] is True
    assert report["summary"]["failed_warnings"] > 0  # two users, two items: below the minimum counts
    assert catalog.load("validation_report_md").startswith("# Validation report")
    assert (tmp_path / "data/08_reporting/validation_report.json").is_file()
    status = catalog.load("validation_status")
    assert status == {"passed": True, "fingerprint": table_fingerprint(tables["interactions"])}
    assert_validated(status, tables["interactions"])


def test_hard_failure_stops_the_run_after_the_reports_are_saved(tables, tmp_path) -> None:
    tables["interactions"].loc[2, "value"] = 9.0  # a rating of 9 on a 1..5 scale
    catalog = make_catalog(tables, tmp_path)

    expected = r"table 'interactions', column 'value'.*rating_scale.*row 2 \("
    with pytest.raises(ValidationFailed, match=expected):
        SequentialRunner().run(create_pipeline(), catalog)

    assert catalog.load("validation_report")["passed"] is False
    assert "| FAIL | rating_scale | value |" in catalog.load("validation_report_md")
    assert not (tmp_path / "data/03_primary/validation_status.json").exists()
    with pytest.raises(DatasetError):
        catalog.load("validation_status")
