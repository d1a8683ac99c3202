"""Batch export of recommendations and similar items: seen items filtered, clipping, skips, NaN."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from recforge.data.interactions import InteractionData
from recforge.encoders.ann import AnnConfig
from recforge.evaluation.export import (
    RECOMMENDATION_COLUMNS,
    SIMILAR_COLUMNS,
    NaNScoresError,
    export_recommendations,
    export_similar_items,
)
from recforge.training.recommender import Recommender

N_USERS, N_ITEMS = 12, 8


def _maps() -> tuple[pd.DataFrame, pd.DataFrame]:
    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(N_USERS)], "user_idx": range(N_USERS)})
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(N_ITEMS)], "item_idx": range(N_ITEMS)})
    return users, items


def _train(full_user: int | None = None) -> InteractionData:
    """Each user saw 2 items of its cluster; `full_user` saw the whole catalogue."""
    u = np.repeat(np.arange(N_USERS), 2)
    i = (u % 4) * 2 + np.tile([0, 1], N_USERS)
    if full_user is not None:
        u = np.concatenate([u, np.full(N_ITEMS, full_user)])
        i = np.concatenate([i, np.arange(N_ITEMS)])
    frame = pd.DataFrame({"user_idx": u, "item_idx": i, "value": 1.0, "timestamp": np.arange(len(u))})
    frame = frame.drop_duplicates(["user_idx", "item_idx"])
    return InteractionData.from_frame(frame, N_USERS, N_ITEMS, name="train")


def _fit(family: str, train: InteractionData, **model) -> Recommender:
    rec = Recommender(family, model, {"epochs": 2, "batch_size": 16, "device": "cpu"})
    rec.fit(train)
    return rec


def test_recommendations_exclude_seen_items_and_clip_k_to_the_catalogue():
    users, items = _maps()
    train = _train()
    rec = _fit("bpr", train, dim=4)
    table, summary = export_recommendations(rec, users, items, k=50, batch_size=5)
    assert dict(table.dtypes.astype(str)) == RECOMMENDATION_COLUMNS
    assert summary.k == 50 and summary.k_served == N_ITEMS
    # 8 items, 2 seen each: 6 rows per user, ranks 1..6 with scores descending
    assert table.groupby("user_id").size().eq(N_ITEMS - 2).all() and len(table) == N_USERS * 6
    assert summary.n_short == N_USERS and summary.n_empty == 0 and summary.seconds > 0
    seen = {(f"u{u}", f"i{i}") for u, i in zip(train.user_idx, train.item_idx)}
    assert not seen & set(zip(table["user_id"], table["item_id"]))
    assert (table.groupby("user_id")["score"].diff().dropna() <= 0).all()
    assert table.groupby("user_id")["rank"].apply(lambda r: r.tolist() == list(range(1, 7))).all()
    # the same lists as the estimator's own top-k, whatever the batch size
    idx, _ = rec.recommend(np.arange(N_USERS), k=6)
    assert table["item_id"].tolist() == [f"i{i}" for i in idx.ravel()]
    assert table.equals(export_recommendations(rec, users, items, k=6, batch_size=1000).table)


def test_a_user_who_has_seen_everything_gets_no_rows_and_is_reported(caplog):
    users, items = _maps()
    rec = _fit("popularity", _train(full_user=3))
    with caplog.at_level(logging.WARNING, logger="recforge.evaluation.export"):
        table, summary = export_recommendations(rec, users, items, k=4)
    assert "u3" not in set(table["user_id"])
    assert summary.n_empty == 1 and summary.empty == ("u3",)
    assert table.groupby("user_id").size().eq(4).all() and len(table) == (N_USERS - 1) * 4
    assert "u3" in caplog.text and "nothing left" in caplog.text


@pytest.mark.parametrize("index", [None, AnnConfig(), AnnConfig(kind="hnsw")], ids=["dense", "flat", "hnsw"])
def test_nan_scores_are_refused_naming_the_family_and_the_users(index):
    users, items = _maps()
    rec = _fit("bpr", _train(), dim=4)
    with torch.no_grad():
        rec.network.user.weight[[2, 7]] = float("nan")
    with pytest.raises(NaNScoresError, match=r"bpr: NaN scores for 2 user\(s\).*u2, u7"):
        export_recommendations(rec, users, items, k=3, batch_size=4, index=index)
    with torch.no_grad():
        rec.network.user.weight[[2, 7]] = 0.0
        rec.network.item.weight[4] = float("inf")  # a broken item: every user's list
    with pytest.raises(NaNScoresError, match=r"bpr: NaN scores for \d+ user\(s\)"):
        export_recommendations(rec, users, items, k=3, batch_size=4, index=index)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_lists_through_a_faiss_index_match_the_dense_lists(kind):
    users, items = _maps()
    rec = _fit("bpr", _train(), dim=4)
    index = AnnConfig(kind=kind, nlist=1)  # a catalogue this small: one IVF cell, so the search is exact
    dense, _ = export_recommendations(rec, users, items, k=4, batch_size=4)
    served, summary = export_recommendations(rec, users, items, k=4, batch_size=4, index=index)
    assert summary.n_rows == len(dense) and dict(served.dtypes.astype(str)) == RECOMMENDATION_COLUMNS
    pd.testing.assert_frame_equal(served[["user_id", "rank"]], dense[["user_id", "rank"]])
    np.testing.assert_allclose(served["score"], dense["score"], rtol=1e-5, atol=1e-6)
    similar, _ = export_similar_items(rec, items, k=3, index=index)
    exact, _ = export_similar_items(rec, items, k=3)
    np.testing.assert_allclose(similar["score"], exact["score"], rtol=1e-5, atol=1e-6)


def test_similar_items_exclude_the_item_and_clip_k():
    _, items = _maps()
    rec = _fit("bpr", _train(), dim=4)
    table, summary = export_similar_items(rec, items, k=100, batch_size=3)
    assert dict(table.dtypes.astype(str)) == SIMILAR_COLUMNS
    assert summary.k_served == N_ITEMS - 1 and summary.skipped is None and len(table) == N_ITEMS * (N_ITEMS - 1)
    assert (table["item_id"] != table["similar_item_id"]).all()
    idx, sc = rec.similar_items(np.arange(N_ITEMS), k=N_ITEMS - 1)
    assert table["similar_item_id"].tolist() == [f"i{i}" for i in idx.ravel()]
    np.testing.assert_allclose(table["score"].to_numpy(), sc.ravel(), rtol=1e-6)


def test_a_family_without_item_vectors_is_skipped_with_an_empty_table(caplog, tmp_path):
    _, items = _maps()
    rec = _fit("popularity", _train())
    with caplog.at_level(logging.WARNING, logger="recforge.evaluation.export"):
        table, summary = export_similar_items(rec, items, k=5)
    assert table.empty and dict(table.dtypes.astype(str)) == SIMILAR_COLUMNS
    assert summary.skipped == "popularity has no item vectors"
    assert summary.to_dict()["skipped"] == "popularity has no item vectors" and summary.n_rows == 0
    assert "popularity has no item vectors" in caplog.text
    table.to_parquet(tmp_path / "similar_items.parquet")  # the empty table keeps its schema on disk
    assert dict(pd.read_parquet(tmp_path / "similar_items.parquet").dtypes.astype(str)) == SIMILAR_COLUMNS


def test_nan_similarities_are_refused_naming_the_items():
    _, items = _maps()
    rec = _fit("bpr", _train(), dim=4)
    with torch.no_grad():
        rec.network.item.weight[5] = float("nan")
    with pytest.raises(NaNScoresError, match=r"bpr: NaN scores for \d+ item\(s\).*i5"):
        export_similar_items(rec, items, k=3)


def test_maps_of_another_split_are_refused():
    users, items = _maps()
    rec = _fit("bpr", _train(), dim=4)
    with pytest.raises(ValueError, match="bpr was trained on 8 items but the map has 7"):
        export_recommendations(rec, users, items.iloc[:7], k=3)
