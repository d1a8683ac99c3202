"""The `evaluation` pipeline through Kedro: each family's evaluation reads its item side as
training does, and the cold-start section comes out of a splitting -> training -> evaluation run
on an in-memory catalog."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro.validation.parameter_validator import ParameterValidator
from shop_content import content_tables

from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.data.validation import table_fingerprint
from recforge.models.registry import FAMILIES
from recforge.pipelines.evaluation.nodes import item_side_inputs
from recforge.pipelines.evaluation.pipeline import create_pipeline as evaluation
from recforge.pipelines.splitting.pipeline import create_pipeline as splitting
from recforge.pipelines.training.pipeline import CONTENT_TABLES, ITEM_VECTORS, upstream
from recforge.pipelines.training.pipeline import create_pipeline as training

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf" / "base"


def test_each_family_is_evaluated_with_the_item_side_it_was_trained_on():
    pipeline = evaluation()
    for family in FAMILIES:
        node = pipeline.only_nodes_with_namespaces([family]).only_nodes(f"{family}.evaluate_model")
        trained_models = {f"{name}.model" for name in FAMILIES[family].warm_start_from}
        expected = set(upstream(family).values()) - trained_models
        assert set(item_side_inputs(family).values()) == expected, family
        assert expected <= node.inputs(), family
        assert not trained_models & node.inputs(), family  # the warm-start models are not needed
    vbpr = pipeline.only_nodes(f"vbpr.evaluate_model").inputs()
    assert {f"{t}.vectors" for t in CONTENT_TABLES} <= vbpr
    assert "items" in pipeline.only_nodes("cnn3d.evaluate_model").inputs()
    assert pipeline.only_nodes("bpr.evaluate_model").inputs() == {
        "bpr.model", "train", "test", "user_map", "item_map", "params:evaluation"}  # fmt: skip


def test_the_evaluation_stage_depends_on_every_item_side_and_writes_the_cold_start_page():
    catalog = {}
    for file in sorted(CONF.glob("catalog*.yml")):
        catalog |= yaml.safe_load(file.read_text())

    def path(dataset: str) -> str:
        if "." in dataset:  # `<namespace>.vectors`: the pretraining stage's folder
            return f"data/04_feature/{dataset.split('.')[0]}"
        where = catalog[dataset].get("filepath") or catalog[dataset]["path"]
        return where.rsplit("/", 1)[0] if where.startswith("data/04_feature/") else where

    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["evaluation"]
    wanted = {path(d) for f in FAMILIES for d in item_side_inputs(f).values()}
    assert wanted <= set(stage["deps"]), sorted(wanted - set(stage["deps"]))
    for name in ("cold_start_leaderboard", "cold_start_leaderboard_md"):
        assert catalog[name]["filepath"] in stage["outs"]


FAMILIES_RUN = ("popularity", "bpr", "vbpr")


class _Kept(MemoryDataset):
    """A MemoryDataset the runner cannot release, so consumed metrics can be inspected after."""

    def _release(self) -> None:
        pass


def test_splitting_training_evaluation_write_the_cold_start_section():
    shop = generate_shop(ShopConfig(preset="tiny", with_media=False))
    raw = {"splitting": {**yaml.safe_load((CONF / "parameters_splitting.yml").read_text())["splitting"],
                         "min_user_interactions": 1, "min_item_interactions": 1, "test_fraction": 0.15},
           "evaluation": {**yaml.safe_load((CONF / "parameters_evaluation.yml").read_text())["evaluation"],
                          "n_negatives": 10},
           "popularity": {"model": {}, "training": {"device": "cpu"}},
           "bpr": {"model": {"dim": 8}, "training": {"epochs": 2, "batch_size": 256, "device": "cpu"}},
           "vbpr": {"model": {"dim": 8, "visual_dim": 8},
                    "training": {"epochs": 2, "batch_size": 256, "device": "cpu"}}}  # fmt: skip
    per_family = evaluation().only_nodes_with_namespaces(list(FAMILIES_RUN))
    pipeline = (splitting() + training().only_nodes_with_namespaces(list(FAMILIES_RUN)) + per_family
                + evaluation().only_nodes("report_cold_start_leaderboard"))  # fmt: skip
    validated = ParameterValidator({"run": pipeline}).validate_raw_params(raw)
    tables = content_tables(shop, names=ITEM_VECTORS["vbpr"])
    catalog = DataCatalog({
        "interactions": MemoryDataset(shop.interactions),
        "heldout_interactions": MemoryDataset(shop.interactions.iloc[:0]),
        "validation_status": MemoryDataset({"passed": True, "fingerprint": table_fingerprint(shop.interactions)}),
        **{f"{t}.vectors": MemoryDataset(tables[t]) for t in ITEM_VECTORS["vbpr"]},
        # the families not run here: no metrics written yet
        **{f"{f}.metrics": MemoryDataset({}) for f in FAMILIES if f not in FAMILIES_RUN},
    })  # fmt: skip
    for name, blocks in validated.items():
        if name in ("splitting", "evaluation"):
            catalog[f"params:{name}"] = MemoryDataset(blocks, copy_mode="assign")
        else:
            for key, value in blocks.items():
                catalog[f"params:{name}.{key}"] = MemoryDataset(value, copy_mode="assign")
    outputs = ["cold_start_leaderboard", "cold_start_leaderboard_md", *(f"{f}.metrics" for f in FAMILIES_RUN)]
    for name in outputs:
        catalog[name] = _Kept(copy_mode="assign")
    SequentialRunner().run(pipeline, catalog)
    board, md = catalog.load("cold_start_leaderboard"), catalog.load("cold_start_leaderboard_md")
    metrics = {f: catalog.load(f"{f}.metrics") for f in FAMILIES_RUN}

    assert isinstance(board, pd.DataFrame) and set(board["family"]) == set(FAMILIES_RUN)
    vbpr, bpr, pop = (metrics[f]["cold_start"] for f in ("vbpr", "bpr", "popularity"))
    assert vbpr["n_cold_items"] > 0 and vbpr["cold_items_all"]["n_users"] > 0  # the tiny shop's late items
    assert vbpr["cold_items_without_content"] == 0  # scored from the vector tables the pipeline handed over
    assert bpr["cold_items_all"] is None and bpr["cold_users"] is None
    assert pop["cold_users"]["n_users"] > 0
    bpr_row = next(line for line in md.splitlines() if line.startswith("| bpr |"))
    assert bpr_row.count("–") == 3
    assert md.startswith("# Cold start")
