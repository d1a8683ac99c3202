"""The `training` pipeline through Kedro: its shape, upstream inputs and the NeuMF warm start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro.validation.exceptions import ParameterValidationError
from kedro.validation.parameter_validator import ParameterValidator

from recforge.models.sequence.cnn3d import item_content
from recforge.models.registry import FAMILIES
from recforge.pipelines.training.pipeline import ITEM_VECTORS, create_pipeline, upstream_inputs
from recforge.training.recommender import Recommender

CONF = Path(__file__).resolve().parents[2] / "conf" / "base"



@pytest.fixture(scope="module")
def split() -> dict[str, pd.DataFrame]:
    """60 users in 3 taste groups over 30 items; train / valid as the splitting pipeline writes them."""
    rng = np.random.default_rng(3)
    users = np.repeat(np.arange(60), 12)
    items = (users % 3) * 10 + rng.integers(0, 10, size=len(users))
    frame = pd.DataFrame(
        {
            "user_idx": users,
            "item_idx": items,
            "timestamp": 1_600_000_000 + np.arange(len(users)) * 60,
            "event": "click",
            "value": 1.0,
        }
    ).drop_duplicates(["user_idx", "item_idx"])
    valid = frame.groupby("user_idx").tail(1)
    train = frame.drop(valid.index)
    user_map = pd.DataFrame({"user_id": [f"u{u}" for u in range(60)], "item_idx": range(60)})
    user_map = user_map.rename(columns={"item_idx": "user_idx"})
    item_map = pd.DataFrame({"item_id": [f"i{i}" for i in range(30)], "item_idx": range(30)})
    return {"train": _with_ids(train, user_map, item_map), "valid": _with_ids(valid, user_map, item_map),
            "user_map": user_map, "item_map": item_map}


def _with_ids(frame: pd.DataFrame, user_map: pd.DataFrame, item_map: pd.DataFrame) -> pd.DataFrame:
    out = frame.merge(user_map, on="user_idx").merge(item_map, on="item_idx")
    return out.reset_index(drop=True)


def test_every_family_has_a_namespace_and_upstream_inputs_are_shared():
    pipeline = create_pipeline()
    assert {n.namespace for n in pipeline.nodes} == set(FAMILIES)
    neumf = pipeline.only_nodes_with_namespaces(["neumf"])
    assert {"gmf.model", "mlp.model"} <= set(neumf.inputs())
    lstm = pipeline.only_nodes_with_namespaces(["lstm"])
    assert "prod2vec.vectors" in lstm.inputs()
    cnn3d = pipeline.only_nodes_with_namespaces(["cnn3d"])
    assert "items" in cnn3d.inputs()
    # a family without upstream reads only the split and its own parameters
    bpr = pipeline.only_nodes_with_namespaces(["bpr"])
    assert bpr.inputs() == {"train", "valid", "user_map", "item_map", "params:bpr.model", "params:bpr.training"}
    # the whole pipeline orders neumf after gmf and mlp
    order = [n.namespace for n in pipeline.nodes]
    assert order.index("neumf") > max(order.index("gmf"), order.index("mlp"))
    assert upstream_inputs("neumf") == ["gmf.model", "mlp.model"]
    known = {"prod2vec", "meta_prod2vec", "user2vec", "image", "text", "audio", "content2vec"}
    assert all(set(names) <= known for names in ITEM_VECTORS.values())


def test_default_neumf_parameters_match_gmf_and_mlp():
    raw = yaml.safe_load((CONF / "parameters_training.yml").read_text())
    gmf, mlp, neumf = (raw[f]["model"] for f in ("gmf", "mlp", "neumf"))
    assert neumf["pretrain"] is True
    assert neumf["dim"] == gmf["dim"] and neumf["mlp_dim"] == mlp["dim"] and neumf["layers"] == mlp["layers"]
    assert raw["neumf"]["training"]["optimizer"] == "sgd"


def _raw_params(**families: tuple[dict, dict]) -> dict:
    return {name: {"model": model, "training": {"device": "cpu", **training}} for name, (model, training) in families.items()}


class _Kept(MemoryDataset):
    """A MemoryDataset the runner cannot release, so consumed models can be inspected after."""

    def _release(self) -> None:
        pass


def _run(pipeline, split, raw_params, extra=None) -> dict:
    validated = ParameterValidator({"training": pipeline}).validate_raw_params(raw_params)
    catalog = DataCatalog({name: MemoryDataset(frame) for name, frame in split.items()})
    for name, value in (extra or {}).items():
        catalog[name] = MemoryDataset(value, copy_mode="assign")
    for family, blocks in validated.items():
        for key, value in blocks.items():
            catalog[f"params:{family}.{key}"] = MemoryDataset(value, copy_mode="assign")
    for name in pipeline.all_outputs():
        catalog[name] = _Kept(copy_mode="assign")
    SequentialRunner().run(pipeline, catalog)
    return {name: catalog[name].load() for name in pipeline.all_outputs()}


def test_neumf_starts_from_the_gmf_and_mlp_the_pipeline_trained(split):
    pipeline = create_pipeline().only_nodes_with_namespaces(["gmf", "mlp", "neumf"])
    small = {"dim": 8, "n_negatives": 2}
    raw = _raw_params(
        gmf=(small, {"epochs": 3, "batch_size": 256, "lr": 0.01}),
        mlp=({**small, "layers": [16, 8]}, {"epochs": 3, "batch_size": 256, "lr": 0.01}),
        neumf=({**small, "mlp_dim": 8, "layers": [16, 8], "pretrain": True, "alpha": 0.5},
               {"epochs": 0}),
    )
    out = _run(pipeline, split, raw)
    gmf, mlp, neumf = out["gmf.model"], out["mlp.model"], out["neumf.model"]
    user = torch.arange(60).repeat_interleave(30)
    item = torch.arange(30).repeat(60)
    with torch.no_grad():
        mix = 0.5 * gmf.network(user, item) + 0.5 * mlp.network(user, item)
        torch.testing.assert_close(neumf.network(user, item), mix, rtol=1e-5, atol=1e-5)
    assert gmf.history.epochs == 3 and gmf.fit_seconds > 0


def test_neumf_parameters_that_do_not_match_the_pretrained_models_fail_clearly(split):
    pipeline = create_pipeline().only_nodes_with_namespaces(["gmf", "mlp", "neumf"])
    raw = _raw_params(
        gmf=({"dim": 8}, {"epochs": 1}),
        mlp=({"dim": 8, "layers": [16, 8]}, {"epochs": 1}),
        neumf=({"dim": 16, "mlp_dim": 8, "layers": [16, 8], "pretrain": True}, {"epochs": 1}),
    )
    with pytest.raises(ValueError, match="do not match neumf's config"):
        _run(pipeline, split, raw)


def test_out_of_range_parameters_are_rejected_before_any_node_runs():
    pipeline = create_pipeline().only_nodes_with_namespaces(["neumf"])
    raw = _raw_params(neumf=({"alpha": 2.0, "pretrain": True}, {"epochs": 1}))
    with pytest.raises(ParameterValidationError, match="alpha"):
        ParameterValidator({"training": pipeline}).validate_raw_params(raw)


def test_lstm_item_embeddings_start_from_the_vector_table(split):
    pipeline = create_pipeline().only_nodes_with_namespaces(["lstm"])
    (namespace,) = ITEM_VECTORS["lstm"]
    rng = np.random.default_rng(0)
    # rows in another order than item_map, one item missing, one unknown extra
    ids = [f"i{i}" for i in range(29, 0, -1)] + ["not-in-map"]
    vectors = rng.normal(size=(len(ids), 8)).astype("float32")
    table = pd.DataFrame({"item_id": ids, **{f"v{d}": vectors[:, d] for d in range(8)}})
    raw = _raw_params(lstm=({"dim": 8, "hidden": 8, "freeze_item_vectors": True}, {"epochs": 1, "batch_size": 64}))
    out = _run(pipeline, split, raw, extra={f"{namespace}.vectors": table})
    rec: Recommender = out["lstm.model"]
    weight = rec.network.item.weight.detach()[:30]  # the family may keep padding rows after the items
    assert not rec.network.item.weight.requires_grad
    # item i29 got table row 0, i1 row 28: same direction up to the common centring and scale
    aligned = np.stack([vectors[ids.index(f"i{i}")] for i in range(1, 30)])
    centred = torch.as_tensor(aligned - np.vstack([aligned, aligned.mean(0)]).mean(0))
    ratio = weight[1:] / centred
    torch.testing.assert_close(ratio, torch.full_like(ratio, ratio[0, 0].item()), rtol=1e-3, atol=1e-3)


def test_cnn3d_reads_the_characters_of_the_items_table(split):
    pipeline = create_pipeline().only_nodes_with_namespaces(["cnn3d"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(30)][::-1], "title": [f"title {i}" for i in range(30)][::-1],
                          "text": "", "category": "shoes/boots"})
    raw = _raw_params(cnn3d=({"dim": 8, "width": 8, "max_len": 5}, {"epochs": 1, "batch_size": 64}))
    out = _run(pipeline, split, raw, extra={"items": items})
    content = out["cnn3d.model"].network.content  # (n_items, fields, width) character codes
    expected = item_content(items, split["item_map"])[:, :, :8]
    torch.testing.assert_close(content, expected)
    assert content[:, 2].any()  # the category field is filled


def test_vbpr_reads_every_content_table_and_its_vectors_parameter_picks(split, caplog):
    pipeline = create_pipeline().only_nodes_with_namespaces(["vbpr"])
    assert {"image.vectors", "text.vectors", "audio.vectors", "content2vec.vectors"} <= pipeline.inputs()
    rng = np.random.default_rng(1)
    ids = [f"i{i}" for i in range(30)]

    def table(d):
        return pd.DataFrame({"item_id": ids, **{f"v{j}": rng.normal(size=30).astype("float32") for j in range(d)}})

    empty = pd.DataFrame({"item_id": pd.Series([], dtype="string")})  # a source without sounds
    tables = {"image.vectors": table(6), "text.vectors": table(4), "audio.vectors": empty,
              "content2vec.vectors": table(3)}
    raw = _raw_params(vbpr=({"dim": 8, "visual_dim": 4, "vectors": ["image", "text", "audio"]},
                            {"epochs": 1, "batch_size": 64}))
    with caplog.at_level("WARNING"):
        out = _run(pipeline, split, raw, extra=tables)
    features = out["vbpr.model"].network.features
    assert features.shape == (30, 10)  # image and text side by side; the empty audio table left out
    torch.testing.assert_close(features[:, :6], torch.as_tensor(tables["image.vectors"].iloc[:, 1:].to_numpy()))
    assert "'audio' vector table is empty" in caplog.text
    raw = _raw_params(vbpr=({"dim": 8, "visual_dim": 4}, {"epochs": 1, "batch_size": 64}))
    assert _run(pipeline, split, raw, extra=tables)["vbpr.model"].network.features.shape == (30, 6)  # image only


def test_deep_content_audio_reads_the_sounds_and_regresses_the_trained_als_factors(split):
    """item_content (items + media) and warm_start_from (als, bpr) together: the content datasets
    come first, then the models, and Kedro orders the family after als and bpr."""
    from recforge.data.synthetic import ShopConfig, generate_shop
    from recforge.models.content.deep_content_audio import item_content as audio_content

    assert upstream_inputs("deep_content_audio") == ["items", "media", "als.model", "bpr.model"]
    pipeline = create_pipeline().only_nodes_with_namespaces(["als", "bpr", "deep_content_audio"])
    order = [n.namespace for n in pipeline.nodes]
    assert order.index("deep_content_audio") > max(order.index("als"), order.index("bpr"))
    shop = generate_shop(ShopConfig(preset="tiny", n_users=20, n_items=30, n_sessions=20, seed=1))
    # the shop's first 30 sounds as the media root of the split's items i0..i29 (a path -> loader
    # dict, as Kedro's PartitionedDataset gives it)
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(30)], "audio_path": [f"a/{i}.wav" for i in range(30)]})
    sounds = [shop.media[p] for p in shop.items["audio_path"][:30]]
    media = {f"a/{i}.wav": (lambda data=data: data) for i, data in enumerate(sounds)}
    raw = _raw_params(
        als=({"factors": 8}, {"epochs": 2}),
        bpr=({"dim": 8}, {"epochs": 1}),
        deep_content_audio=({"factors_from": "als", "pretrain": True, "factors": 8, "channels": [8, 8, 8],
                             "hidden": 8}, {"epochs": 2, "batch_size": 16}),
    )
    out = _run(pipeline, split, raw, extra={"items": items, "media": media})
    als, net = out["als.model"].network, out["deep_content_audio.model"].network
    torch.testing.assert_close(net.user_factors, als.user.weight)
    torch.testing.assert_close(net.item_factors, als.item.weight)
    torch.testing.assert_close(net.spectrograms, audio_content(items, media, split["item_map"]))
    assert out["deep_content_audio.model"].history.epochs == 2


def test_default_deep_content_audio_parameters_match_its_cf_model():
    raw = yaml.safe_load((CONF / "parameters_training.yml").read_text())
    model = raw["deep_content_audio"]["model"]
    source = raw[model["factors_from"]]["model"]
    assert model["pretrain"] is True and model["factors"] == source.get("factors", source.get("dim"))


def test_content2vec_writes_its_item_vectors_as_a_table(split):
    from recforge.encoders.vectors import align_item_vectors

    pipeline = create_pipeline().only_nodes_with_namespaces(["content2vec"])
    assert pipeline.all_outputs() == {"content2vec.model", "content2vec.vectors"}
    assert {"image.vectors", "text.vectors", "prod2vec.vectors", "meta_prod2vec.vectors"} <= pipeline.inputs()
    rng = np.random.default_rng(2)
    ids = [f"i{i}" for i in range(30)]

    def table(d, n=30):
        return pd.DataFrame({"item_id": ids[:n], **{f"v{j}": rng.normal(size=n).astype("float32") for j in range(d)}})

    empty = pd.DataFrame({"item_id": pd.Series([], dtype="string")})  # a source without photos
    tables = {"image.vectors": empty, "text.vectors": table(6), "prod2vec.vectors": table(4, 25),
              "meta_prod2vec.vectors": table(4, 25)}
    raw = _raw_params(content2vec=({"module_dim": 4, "dim": 4, "residual_hidden": 4}, {"epochs": 1, "batch_size": 64}))
    out = _run(pipeline, split, raw, extra=tables)
    rec, vectors = out["content2vec.model"], out["content2vec.vectors"]
    assert rec.network.names == ["text", "prod2vec", "meta_prod2vec"]  # the empty image table left out
    assert list(vectors.columns) == ["item_id", "v0", "v1", "v2", "v3"] and len(vectors) == 30
    with torch.no_grad():
        torch.testing.assert_close(align_item_vectors(vectors, split["item_map"]), rec.network.item_embeddings())
