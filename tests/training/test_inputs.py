"""`training.inputs`: a family's item side from its upstream tables, for the training map and
for a map of cold items; the vector tables' bad inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recforge.data.errors import DataError
from recforge.encoders.vectors import align_item_vectors, vector_table
from recforge.models.registry import get_family
from recforge.training.inputs import cold_item_map, item_side

TABLES = ("image", "text", "audio")


def _map(ids):
    return pd.DataFrame({"item_id": ids, "item_idx": range(len(ids))})


def _table(ids, d, seed=0):
    return vector_table(ids, np.random.default_rng(seed).normal(size=(len(ids), d)))


def test_cold_items_get_their_content_from_the_same_tables():
    ids = [f"i{i}" for i in range(8)]
    train_map, cold = _map(ids[:5]), _map(ids[5:])
    upstream = [_table(ids, 4, 0), _table(ids, 3, 1), _table(ids, 2, 2)]
    fam = get_family("vbpr")
    config = fam.config(vectors=["audio", "image"])
    warm, rest = item_side(fam, config, [*upstream, "model"], train_map, TABLES)
    assert rest == ["model"]
    assert warm.shape == (5, 6)  # audio (2) then image (4), in the config's order
    cold_side, _ = item_side(fam, config, upstream, cold, TABLES)
    torch.testing.assert_close(cold_side[:, 2:], torch.as_tensor(upstream[0].iloc[5:, 1:].to_numpy()))


def test_a_table_the_family_does_not_read_is_named():
    fam = get_family("vbpr")
    with pytest.raises(ValueError, match=r"vectors \['text'\] are not among the tables it reads \['image'\]"):
        item_side(fam, fam.config(vectors=["text"]), [_table(["a"], 2)], _map(["a"]), ("image",))


def test_only_empty_tables_means_no_content():
    fam = get_family("vbpr")
    empty = pd.DataFrame({"item_id": pd.Series([], dtype="string")})
    side, _ = item_side(fam, fam.config(), [empty, empty, empty], _map(["a", "b"]), TABLES)
    assert side is None


def test_nan_in_a_vector_table_names_the_items():
    table = _table(["a", "b", "c"], 3)
    table.loc[1, "v2"] = np.nan
    with pytest.raises(DataError, match=r"image table: vector table has 1 rows with NaN.*item_id b"):
        align_item_vectors(table, _map(["a", "b", "c"]), name="image table")


def test_cold_item_map_lists_test_items_unknown_to_training_in_first_seen_order():
    test = pd.DataFrame({"item_id": ["b", "x", "a", "y", "x"]})
    cold = cold_item_map(test, _map(["a", "b"]))
    assert cold["item_id"].tolist() == ["x", "y"] and cold["item_idx"].tolist() == [0, 1]
