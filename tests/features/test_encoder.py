"""The feature encoder: fitted on train only, every kind of field, unknown and missing values,
JSON round trip, and a missing column named."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from recforge.data.errors import DataError
from recforge.features import FeatureConfig, FeatureEncoder, stable_hash
from recforge.models.features.interactions import pairwise

FIELDS = {
    "fields": [
        {"name": "user", "kind": "categorical", "column": "user_id"},
        {"name": "genres", "kind": "multi_hot", "column": "genres", "max_len": 3},
        {"name": "category", "kind": "multi_hot", "column": "category", "sep": "|", "levels": "/", "max_len": 4},
        {"name": "age", "kind": "numeric", "column": "age"},
        {"name": "price", "kind": "bucketised", "column": "price", "buckets": 4},
        {"name": "ad", "kind": "hashed", "column": "ad", "buckets": 1000},
        {"name": "user_x_cat", "kind": "cross", "columns": ["country", "top"], "buckets": 500},
        {"name": "hour", "kind": "context", "column": "timestamp", "part": "hour"},
        {"name": "weekday", "kind": "context", "column": "timestamp", "part": "weekday"},
        {"name": "gap", "kind": "context", "column": "timestamp", "part": "gap"},
    ]
}


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": ["u1", "u2", "u1", "u3"],
        "genres": ["Action|Comedy", "Drama", "", "Comedy|Drama|Action|Horror"],
        "category": ["shoes/boots", "shoes/sandals", "bags", None],
        "age": [20.0, 40.0, np.nan, 30.0],
        "price": [1.0, 5.0, 10.0, 50.0],
        "ad": ["68fd1e64", "", "0b153874", "68fd1e64"],
        "country": ["de", "fr", "de", "de"],
        "top": ["shoes", "shoes", "bags", "shoes"],
        "timestamp": [0, 3600 * 5, 3600 * 5 + 7, 86400 * 3],  # 1970-01-01 was a Thursday
    })  # fmt: skip


def test_every_kind_encodes_as_declared():
    train = _frame()
    enc = FeatureEncoder(FIELDS).fit(train)
    batch = enc.encode(train)
    assert batch.index.shape == (4, enc.n_slots) == batch.value.shape
    assert enc.n_slots == 1 + 3 + 4 + 1 + 1 + 1 + 1 + 1 + 1 + 1
    assert int(batch.index.max()) < enc.n_features
    st = enc.state()["fitted"]
    local = lambda name: (batch.index[:, batch.slots[name]] - st[name]["offset"]).numpy()  # noqa: E731
    assert local("user")[:, 0].tolist() == [1, 2, 1, 3]
    g = local("genres")  # vocab Action, Comedy, Drama (Horror too): max_len 3 keeps 3 of 4
    assert g[0].tolist()[:2] == [1, 2] and g[2].tolist() == [0, 0, 0]
    np.testing.assert_allclose(batch.value[0, batch.slots["genres"]].numpy(), [0.5, 0.5, 0.0])
    assert st["category"]["vocab"] == ["bags", "shoes", "shoes/boots", "shoes/sandals"]  # path levels
    assert local("age")[:, 0].tolist() == [1, 1, 2, 1]  # missing -> the flag index
    assert batch.value[2, batch.slots["age"]].item() == 1.0
    assert abs(batch.value[[0, 1, 3], batch.slots["age"].start].mean().item()) < 1e-6  # standardised on train
    assert local("ad")[1, 0] == 0 and local("ad")[0, 0] == local("ad")[3, 0] != 0
    assert local("hour")[:, 0].tolist() == [1, 6, 6, 1]
    assert local("weekday")[:, 0].tolist() == [4, 4, 4, 7]  # Thursday (3) and Sunday (6), +1
    # u1 comes back 18,007 s after its first event: bucket 2 + floor(log2(18,008)) = 16
    assert local("gap")[:, 0].tolist() == [1, 1, 16, 1]


def test_unknown_values_map_to_the_reserved_row_and_the_encoder_round_trips():
    enc = FeatureEncoder(FIELDS).fit(_frame())
    new = _frame().assign(user_id=["u9", "u1", None, "u2"], genres=["Western", "Drama", "x", None])
    batch = enc.encode(new)
    again = FeatureEncoder.from_state(json.loads(json.dumps(enc.state()))).encode(new)
    assert torch.equal(batch.index, again.index) and torch.equal(batch.value, again.value)
    offset = enc.state()["fitted"]["user"]["offset"]
    assert batch.index[:, batch.slots["user"]].squeeze(1).tolist()[0] == offset
    assert batch.index[2, batch.slots["user"]].item() == offset


def test_stable_hash_is_the_documented_crc32():
    assert stable_hash(pd.Series(["68fd1e64"])).tolist() == [2704318627]


def test_a_field_on_a_column_the_table_lacks_is_named():
    with pytest.raises(DataError, match=r"'train'.*column 'genres'.*field 'genres'"):
        FeatureEncoder(FIELDS).fit(_frame().drop(columns="genres"))
    with pytest.raises(ValidationError, match="repeated"):
        FeatureConfig.model_validate({"fields": [FIELDS["fields"][0], FIELDS["fields"][0]]})
    with pytest.raises(RuntimeError, match="fit"):
        FeatureEncoder(FIELDS).encode(_frame())


def test_batches_feed_an_fm_embedding_table():
    enc = FeatureEncoder(FIELDS).fit(_frame())
    batch = enc.encode(_frame())
    table = torch.nn.Embedding(enc.n_features, 4)
    e = table(batch.index) * batch.value.unsqueeze(-1)
    assert pairwise(e).shape == (4, 4)


# ------------------------------------------------------------------ bad input
def _fit(fields, frame):
    from recforge.features import FeatureEncoder

    return FeatureEncoder({"fields": fields}).fit(frame, table="users")


def test_text_in_a_numeric_field_names_the_rows():
    frame = pd.DataFrame({"price": ["1.5", "abc", None, "2", "n/a"]})
    with pytest.raises(DataError, match=r"'users'.*'price'.*non-numbers \('abc', 'n/a'\).*rows: 1, 4"):
        _fit([{"name": "price", "kind": "numeric", "column": "price"}], frame)


def test_an_all_null_field_is_refused_at_fit():
    frame = pd.DataFrame({"brand": pd.Series([None, None], dtype="string")})
    with pytest.raises(DataError, match=r"'brand'.*every value is null"):
        _fit([{"name": "brand", "kind": "categorical", "column": "brand"}], frame)


def test_a_categorical_vocabulary_of_one_value_is_refused():
    frame = pd.DataFrame({"country": ["fr", "fr", None]})
    with pytest.raises(DataError, match=r"'country'.*one value only \('fr'\)"):
        _fit([{"name": "country", "kind": "categorical", "column": "country"}], frame)


def test_unseen_categories_at_serving_are_counted_not_fatal():
    enc = _fit([{"name": "c", "kind": "categorical", "column": "c"},
                {"name": "tags", "kind": "multi_hot", "column": "t", "max_len": 2}],
               pd.DataFrame({"c": ["a", "b"], "t": ["x|y", "y"]}))  # fmt: skip
    batch = enc.encode(pd.DataFrame({"c": ["a", "zz", None], "t": ["q", "x", None]}))
    assert batch.unknown == {"c": 1, "tags": 1}
    assert batch.index[1, batch.slots["c"]].item() == 0 and batch.index[0, batch.slots["tags"]][0].item() == 3
