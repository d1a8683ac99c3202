"""CTR through the fit loop: field-aware cores on impression rows, metrics, save/load, bad labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recforge.data.errors import DataError
from recforge.features import FeatureEncoder
from recforge.training.ctr import CTRModel, Rows, ctr_metrics, encode_rows, labels, relative_improvement

FIELDS = {"fields": [
    {"name": "user", "kind": "categorical", "column": "user"},
    {"name": "item", "kind": "categorical", "column": "item"},
    {"name": "page", "kind": "categorical", "column": "page"},
    {"name": "price", "kind": "numeric", "column": "price"},
]}  # fmt: skip


def impressions(n: int, seed: int) -> pd.DataFrame:
    """Clicks driven by page and price and by a page x item-group interaction that no single field
    explains."""
    rng = np.random.default_rng(seed)
    item = rng.integers(0, 40, n)
    page = rng.integers(0, 2, n)
    price = rng.normal(10, 3, n)
    # main effects a linear model can learn, plus the interaction it cannot
    logit = -1.0 + 0.8 * page + 0.3 * (price - 10) / 3 + 2.0 * np.where((item % 2) == page, 1.0, -1.0)
    return pd.DataFrame({
        "user": "u" + pd.Series(rng.integers(0, 50, n)).astype(str),
        "item": "i" + pd.Series(item).astype(str),
        "page": np.where(page == 1, "search", "home"),
        "price": price,
        "label": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8),
    })  # fmt: skip


@pytest.fixture(scope="module")
def data():
    train, valid, test = impressions(6000, 0), impressions(1500, 1), impressions(1500, 2)
    enc = FeatureEncoder(FIELDS).fit(train)
    return enc, encode_rows(enc, train), encode_rows(enc, valid), encode_rows(enc, test)


TRAIN = {"epochs": 6, "batch_size": 256, "lr": 0.01, "device": "cpu", "seed": 0}


@pytest.mark.parametrize("family", ["fm", "deepfm", "nfm", "wide_deep"])
def test_interaction_models_beat_the_linear_baseline(family, data):
    enc, train, valid, test = data
    lr = CTRModel("lr", {}, TRAIN)
    lr.fit(train, valid, enc)
    model = CTRModel(family, {"dim": 8}, TRAIN)
    model.fit(train, valid, enc)
    base, got = lr.evaluate(test), model.evaluate(test)
    assert got["auc"] > base["auc"] + 0.05 and got["logloss"] < base["logloss"]
    assert relative_improvement(got["auc"], base["auc"]) > 0
    assert model.samples_per_s and model.history.metrics[-1].keys() >= {"auc", "logloss"}


def test_save_load_predicts_the_same_and_keeps_the_encoder(data, tmp_path):
    enc, train, valid, test = data
    model = CTRModel("deepfm", {"dim": 8, "layers": [16]}, {**TRAIN, "epochs": 2})
    model.fit(train, valid, enc)
    model.save(tmp_path / "m")
    loaded = CTRModel.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.predict(test), model.predict(test), rtol=1e-5, atol=1e-6)
    batch = loaded.encoder().encode(pd.DataFrame({"user": ["u1"], "item": ["never"], "page": ["home"], "price": [1.0]}))
    assert batch.unknown["item"] == 1 and loaded.predict(batch).shape == (1,)


def test_a_row_source_streams_chunks_each_epoch(data):
    enc, train, valid, _ = data
    half = len(train) // 2
    calls = []

    def source():
        calls.append(1)
        for s in (slice(0, half), slice(half, None)):
            yield Rows(train.batch.take(torch.arange(len(train))[s]), train.label[s])

    model = CTRModel("fm", {"dim": 4}, {**TRAIN, "epochs": 2})
    history = model.fit(source, valid, enc)
    assert len(calls) == 2 and history.samples == [len(train), len(train)]


def test_labels_other_than_0_1_name_the_rows():
    frame = pd.DataFrame({"label": [0, 1, 2, 1, -1]})
    with pytest.raises(DataError, match=r"'impressions'.*'label'.*0 or 1.*rows: 2, 4"):
        labels(frame)


def test_ctr_needs_a_field_aware_family():
    with pytest.raises(ValueError, match="bpr is not a field-aware family"):
        CTRModel("bpr")


def test_metrics_refuse_a_single_class():
    with pytest.raises(ValueError, match="both clicks and non-clicks"):
        ctr_metrics(np.ones(4), np.full(4, 0.5))


def test_on_the_shop_the_model_with_features_beats_the_same_model_without_them():
    """The shop's clicks depend on context and attributes by construction (data/synthetic/
    _impressions.py): DeepFM over the base parameters' fields against DeepFM over ids alone."""
    from pathlib import Path

    import yaml

    from recforge.data.synthetic import ShopConfig, generate_shop
    from recforge.features.impressions import CTRData, impression_table, split_by_time

    shop = generate_shop(ShopConfig(preset="tiny", with_media=False, impression_rows=60_000))
    conf = Path(__file__).resolve().parents[2] / "conf/base/parameters_ctr.yml"
    data = CTRData.model_validate(yaml.safe_load(conf.read_text())["ctr"]["data"])
    train, valid, test = split_by_time(impression_table(shop.impressions, shop.users, shop.items), data)
    ids_only = {"fields": [f.model_dump() for f in data.fields.fields if f.name in ("user_id", "item_id")]}
    scores = {}
    for name, fields in (("features", data.fields), ("ids", ids_only)):
        enc = FeatureEncoder(fields).fit(train)
        model = CTRModel("deepfm", {"dim": 8, "layers": [32]}, {**TRAIN, "epochs": 3, "batch_size": 512})
        model.fit(encode_rows(enc, train), encode_rows(enc, valid), enc)
        scores[name] = model.evaluate(encode_rows(enc, test))
    assert scores["features"]["auc"] > scores["ids"]["auc"] + 0.03
    assert scores["features"]["logloss"] < scores["ids"]["logloss"]


def test_wide_deep_as_the_paper_trains_it_ftrl_on_the_wide_part(data):
    """Cheng et al. 2016: FTRL with L1 on the wide part, AdaGrad on the deep part."""
    from recforge.training.ftrl import FTRL
    from recforge.training.loop import build_optimizers

    enc, train, valid, test = data
    config = {"dim": 8, "layers": [16], "wide_optimizer": "ftrl", "wide_lr_scale": 5.0}
    model = CTRModel("wide_deep", config, {**TRAIN, "optimizer": "adagrad", "lr": 0.05})
    model.fit(train, valid, enc)
    opts = build_optimizers(model.network, model.train_config)
    assert [type(o) for o in opts] == [torch.optim.Adagrad, FTRL]
    assert model.history.loss[-1] < model.history.loss[0]
    assert model.evaluate(test)["auc"] > 0.75
    # L1 zeroes wide weights of features that never helped (the reserved rows of unused fields)
    assert (model.network.weight.weight == 0).float().mean() > 0.05


def test_ftrl_solves_a_one_weight_problem_and_refuses_bad_settings():
    from recforge.training.ftrl import FTRL

    w = torch.nn.Parameter(torch.zeros(1))
    opt = FTRL([w], lr=0.5, l1=0.0, l2=0.0)
    for _ in range(300):
        opt.zero_grad()
        ((w - 3.0) ** 2).sum().backward()
        opt.step()
    assert abs(w.item() - 3.0) < 0.05
    with pytest.raises(ValueError, match="FTRL needs lr > 0"):
        FTRL([w], lr=0.0)
