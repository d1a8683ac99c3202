"""The `ctr` pipeline through Kedro on an in-memory catalog, with the base parameters' fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from recforge.data.errors import DataError
from recforge.features.impressions import CTRData
from recforge.models.registry import get_family
from recforge.pipelines.ctr.pipeline import CTR_FAMILIES, create_pipeline
from recforge.training.config import TrainConfig

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"


def shop_like(n: int = 6000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """An impression log with the shop's columns; clicks follow device x category and position."""
    rng = np.random.default_rng(seed)
    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(80)], "age_group": rng.choice(["18-24", "25-34", "55+"], 80),
                          "country": rng.choice(["fr", "de", "us"], 80), "device": rng.choice(["mobile", "desktop"], 80)})
    cats = ["apparel/shoes", "books/novels", "home/lamps"]
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(50)], "category": [cats[i % 3] for i in range(50)],
                          "brand": rng.choice(["a", "b", "c"], 50), "price": rng.uniform(5, 100, 50)})
    u, i = rng.integers(0, 80, n), rng.integers(0, 50, n)
    device = rng.choice(["mobile", "desktop"], n)
    position = rng.integers(0, 10, n)
    logit = -2.0 + 1.5 * ((device == "mobile") == (i % 3 == 0)) - 0.15 * position
    imp = pd.DataFrame({"user_id": users["user_id"].to_numpy()[u], "item_id": items["item_id"].to_numpy()[i],
                        "timestamp": 1_700_000_000 + np.sort(rng.integers(0, 86400 * 20, n)),
                        "list_id": "l0", "position": position.astype(np.int16), "page": rng.choice(["home", "search"], n),
                        "device": device, "label": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)})  # fmt: skip
    return {"impressions": imp, "users": users, "items": items}


def params() -> dict:
    block = yaml.safe_load((CONF / "parameters_ctr.yml").read_text())["ctr"]
    out = {"params:ctr.data": CTRData.model_validate(block["data"])}
    for f in CTR_FAMILIES:
        spec = block["families"][f]
        out[f"params:ctr.families.{f}.model"] = get_family(f).config.model_validate(spec["model"])
        out[f"params:ctr.families.{f}.training"] = TrainConfig.model_validate(
            {**spec["training"], "epochs": 2, "batch_size": 512, "device": "cpu"})
    return out


def _run(datasets: dict, *nodes: str) -> DataCatalog:
    pipeline = create_pipeline().only_nodes(*nodes) if nodes else create_pipeline()
    catalog = DataCatalog({k: MemoryDataset(v) for k, v in datasets.items()})
    for f in CTR_FAMILIES:  # a family a run leaves out reads as None
        catalog[f"{f}.ctr_metrics"] = MemoryDataset(None)
    for name in pipeline.all_outputs():
        catalog[name] = MemoryDataset()
    SequentialRunner().run(pipeline, catalog)
    return catalog


def test_every_ctr_family_trains_and_the_leaderboard_has_relaimpr_over_lr():
    out = _run({**shop_like(), **params()})
    board = out.load("ctr_leaderboard")
    assert set(board["family"]) == set(CTR_FAMILIES)
    lr = board.set_index("family").loc["lr"]
    assert lr["rela_impr"] == pytest.approx(0.0)
    assert (board["auc"] > 0.6).all() and board["logloss"].notna().all()
    best = board.iloc[0]
    assert best["family"] != "lr" and best["rela_impr"] > 0
    md = out.load("ctr_leaderboard_md")
    assert md.startswith("# CTR leaderboard") and "| lr |" in md
    assert (board["n"] == 600).all()


def test_the_split_is_by_time_and_the_encoder_sees_train_only():
    from recforge.pipelines.ctr.nodes import fit_feature_encoder

    out = _run({**shop_like(), **params()}, "prepare_impressions")
    train, valid, test = (out.load(f"ctr_{s}") for s in ("train", "valid", "test"))
    assert train["timestamp"].max() <= valid["timestamp"].min() <= test["timestamp"].min()
    assert {"user_country", "item_brand", "item_category"} <= set(train.columns)
    encoder = fit_feature_encoder(train, params()["params:ctr.data"])
    vocab = set(encoder["fitted"]["user_id"]["vocab"])
    assert vocab <= set(train["user_id"])


def test_a_label_other_than_0_1_names_the_rows():
    data = shop_like()
    data["impressions"].loc[[5, 9], "label"] = 3
    with pytest.raises(Exception, match=r"labels must be 0 or 1") as info:
        _run({**data, **params()})
    cause = info.value if isinstance(info.value, DataError) else info.value.__cause__
    assert isinstance(cause, DataError)


def test_the_leaderboard_leaves_out_families_not_trained():
    from recforge.pipelines.ctr.nodes import report_ctr

    metrics = {"lr": {"auc": 0.7, "logloss": 0.4, "ctr": 0.1, "n": 10, "fit_seconds": 1.0, "samples_per_s": 5.0,
                      "epochs": 1, "unknown_values": {}},
               "fm": {"auc": 0.8, "logloss": 0.3, "ctr": 0.1, "n": 10, "fit_seconds": 1.0, "samples_per_s": 5.0,
                      "epochs": 1, "unknown_values": {"item_id": 2}}, "nfm": None}  # fmt: skip
    board, md = report_ctr(**metrics)
    assert list(board["family"]) == ["fm", "lr"]
    assert board.loc[0, "rela_impr"] == pytest.approx((0.3 / 0.2 - 1) * 100)
    assert "mapped to the unknown index: {'item_id': 2}" in md


def _criteo_lines(n: int, seed: int) -> list[str]:
    """Kaggle train.txt lines: label, 13 counts, 26 hex categoricals; C1 and I1 drive the clicks."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c1 = rng.integers(0, 20)
        i1 = rng.integers(0, 10)
        p = 1 / (1 + np.exp(-(-1.5 + (1.5 if c1 < 5 else 0) + 0.1 * i1)))
        ints = [str(i1)] + ["" if rng.random() < 0.2 else str(rng.integers(0, 100)) for _ in range(12)]
        cats = [f"{c1:08x}"] + ["" if rng.random() < 0.1 else f"{rng.integers(0, 50):08x}" for _ in range(25)]
        out.append("\t".join([str(int(rng.random() < p)), *ints, *cats]))
    return out


def test_the_criteo_env_streams_the_raw_file_and_every_family_trains_on_it(tmp_path):
    from recforge.datasets import CriteoDataset, EmptyTableDataset

    raw = tmp_path / "01_raw/criteo/train.txt"
    raw.parent.mkdir(parents=True)
    raw.write_text("\n".join(_criteo_lines(5000, 0)) + "\n")
    before = raw.read_bytes()
    catalog = yaml.safe_load((CONF.parent / "criteo/catalog.yml").read_text())
    spec = {k: v for k, v in catalog["impressions"].items() if k != "type"}
    dataset = CriteoDataset(**{**spec, "raw_path": str(raw), "parquet_path": str(tmp_path / "criteo.parquet"),
                               "chunk_rows": 1000, "max_rows": 4000})  # fmt: skip
    impressions = dataset.load()
    assert len(impressions) == 4000 and (tmp_path / "criteo.parquet").is_file() and raw.read_bytes() == before
    block = yaml.safe_load((CONF.parent / "criteo/parameters_ctr.yml").read_text())["ctr"]
    for field in block["data"]["fields"]["fields"]:  # the env's fields, with small tables for a test
        field["buckets"] = min(field.get("buckets", 16), 512)
    params = {"params:ctr.data": CTRData.model_validate(block["data"])}
    for f in CTR_FAMILIES:
        params[f"params:ctr.families.{f}.model"] = get_family(f).config.model_validate(block["families"][f]["model"])
        params[f"params:ctr.families.{f}.training"] = TrainConfig.model_validate(
            {**block["families"][f]["training"], "epochs": 2, "batch_size": 256, "device": "cpu"})
    out = _run({"impressions": impressions, "users": EmptyTableDataset(["user_id"]).load(),
                "items": EmptyTableDataset(["item_id"]).load(), **params})
    board = out.load("ctr_leaderboard")
    assert set(board["family"]) == set(CTR_FAMILIES) and board["auc"].max() > 0.6


def test_a_criteo_line_with_the_wrong_field_count_is_named(tmp_path):
    from recforge.datasets import CriteoDataset

    raw = tmp_path / "train.txt"
    lines = _criteo_lines(50, 1)
    lines[6] = lines[6].rsplit("\t", 3)[0]  # three fields short
    raw.write_text("\n".join(lines) + "\n")
    with pytest.raises(Exception, match=r"line.* 7"):
        CriteoDataset(str(raw), str(tmp_path / "c.parquet")).load()
    assert not (tmp_path / "c.parquet").exists()
    skipped = CriteoDataset(str(raw), str(tmp_path / "c.parquet"), on_bad_rows="skip").load()
    assert len(skipped) == 49


def test_a_click_model_trains_from_the_criteo_parquet_batch_by_batch(tmp_path):
    """The bounded-memory path for the full 45M-row log: parquet batches encoded on the fly as a
    `RowSource`, never the whole table."""
    from recforge.data.criteo import convert_criteo, iter_criteo_batches
    from recforge.features import FeatureEncoder
    from recforge.training.ctr import CTRModel, encode_rows

    raw = tmp_path / "train.txt"
    raw.write_text("\n".join(_criteo_lines(6000, 2)) + "\n")
    parquet = tmp_path / "criteo.parquet"
    convert_criteo(raw, parquet, chunk_rows=1000)
    fields = {"fields": [{"name": f"I{i}", "kind": "bucketised", "column": f"I{i}", "buckets": 8} for i in range(1, 14)]
              + [{"name": f"C{i}", "kind": "hashed", "column": f"C{i}", "buckets": 256} for i in range(1, 27)]}  # fmt: skip
    first = pd.DataFrame(next(iter_criteo_batches(parquet, 2000)))
    encoder = FeatureEncoder(fields).fit(first)
    chunks_read = []

    def source():
        for batch in iter_criteo_batches(parquet, 1500):
            chunks_read.append(len(batch["label"]))
            yield encode_rows(encoder, pd.DataFrame(batch), table="criteo")

    model = CTRModel("fm", {"dim": 8}, {"epochs": 3, "batch_size": 256, "lr": 0.02, "device": "cpu", "seed": 0})
    model.fit(source, None, encoder)
    assert max(chunks_read) == 1500 and sum(chunks_read) == 3 * 6000
    assert model.evaluate(source)["auc"] > 0.65
