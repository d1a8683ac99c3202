"""Two-stage chains (training.two_stage and the two_stage pipeline): labels from the training
tail, engagement weights, the ranker trained on candidates, the chain's report, bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, DatasetError, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from kedro_datasets.pandas import ParquetDataset

from recforge.data.filters import filter_interactions
from recforge.data.interactions import InteractionData
from recforge.data.schema import EVENTS
from recforge.data.splits import SplitConfig, split_interactions
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.datasets import RecommenderDataset
from recforge.pipelines.two_stage.pipeline import create_pipeline, declared_chains
from recforge.training import two_stage as ts
from recforge.training.engagement import DEFAULT_EVENT_WEIGHTS, engagement_weights
from recforge.training.recommender import Recommender
from recforge.training.two_stage import ChainConfig, TwoStageConfig

BPR = ({"dim": 32}, {"epochs": 15, "batch_size": 512, "lr": 0.02})
GMF = ({"dim": 16}, {"epochs": 6, "batch_size": 1024, "lr": 0.01})


@pytest.fixture(scope="module")
def shop():
    shop = generate_shop(ShopConfig(preset="tiny", n_users=300, n_items=150, n_sessions=2400))
    cfg = SplitConfig(strategy="temporal", valid_fraction=0.1, test_fraction=0.15, seed=0,
                      min_user_interactions=3, min_item_interactions=3)
    s = split_interactions(filter_interactions(shop.interactions, cfg), None, cfg)
    nu, ni = len(s.user_map), len(s.item_map)
    train = InteractionData.from_frame(s.train, nu, ni)
    test = InteractionData.from_frame(s.test, nu, ni)
    retriever = Recommender("bpr", *BPR)
    retriever.fit(train)
    return {"split": s, "train": train, "test": test, "retriever": retriever}


def _data(users, items, ts_, events=None, n_users=3, n_items=5, value=None):
    n = len(users)
    return InteractionData(
        user_idx=np.array(users, np.int64), item_idx=np.array(items, np.int64),
        value=np.array(value if value is not None else [1.0] * n, np.float32),
        timestamp=np.array(ts_, np.int64), n_users=n_users, n_items=n_items,
        event=None if events is None else np.array([EVENTS.index(e) for e in events], np.int8),
    )


def test_head_tail_cuts_the_training_period_in_time():
    data = _data([0, 0, 1, 1, 2], [0, 1, 2, 3, 4], [10, 20, 30, 40, 50])
    head, tail = ts.head_tail(data, 0.4)
    assert head.timestamp.max() < tail.timestamp.min()
    assert len(head) + len(tail) == 5 and len(tail) == 2


def test_engagement_orders_purchase_over_cart_over_view_and_uses_ratings():
    data = _data([0, 0, 0, 1], [0, 1, 2, 3], [1, 2, 3, 4], events=["view", "add_to_cart", "purchase", "rating"],
                 value=[1.0, 1.0, 1.0, 4.0])
    w = engagement_weights(data, DEFAULT_EVENT_WEIGHTS)
    assert w[2] > w[1] > w[0] and w[3] == 4.0
    with pytest.raises(ValueError, match="unknown event"):
        engagement_weights(data, {"watch": 3.0})


def test_labels_are_what_the_user_did_in_the_tail_with_the_largest_weight():
    cands = pd.DataFrame({"user_idx": [0, 0, 1], "rank": [1, 2, 1], "item_idx": [1, 2, 1], "score": [3.0, 2.0, 1.0]})
    tail = _data([0, 0, 1], [2, 2, 4], [5, 6, 7], events=["view", "purchase", "view"])
    out = ts.label_candidates(cands, tail, engagement_weights(tail, DEFAULT_EVENT_WEIGHTS))
    assert out["label"].tolist() == [0.0, 1.0, 0.0]
    assert out["weight"].tolist() == [1.0, 8.0, 1.0]


def test_weighted_logistic_matches_a_hand_computation():
    class Net(torch.nn.Module):
        def forward(self, user, item):
            return torch.tensor([0.5, -1.0])

    batch = {"user": torch.zeros(2), "item": torch.zeros(2), "label": torch.tensor([1.0, 0.0]),
             "weight": torch.tensor([4.0, 1.0])}
    expected = (4 * np.log1p(np.exp(-0.5)) + 1 * np.log1p(np.exp(-1.0))) / 5
    assert ts.weighted_logistic(Net(), batch).item() == pytest.approx(expected, rel=1e-6)


def test_a_chain_trains_on_candidates_and_reports_recall_reranked_and_alone(shop):
    conf = TwoStageConfig()
    cands, head = ts.training_candidates(shop["retriever"], shop["train"], 50, conf)
    assert {"label", "weight"} <= set(cands.columns) and 0 < cands["label"].mean() < 1
    assert head.timestamp.max() < shop["train"].timestamp.max()
    ranker = ts.fit_ranker("gmf", *GMF, head, cands)
    assert ranker.history.loss[-1] < ranker.history.loss[0]
    served, seconds = ts.candidates_for(shop["retriever"], shop["test"], 50)
    m = ts.evaluate_chain(served, ranker, shop["test"], 50, (10,), seconds)
    # the ceiling: reranking can only find what the candidates hold
    assert m["reranked"]["hr@10"] <= 1.0 and 0 < m["candidate_recall@50"] <= 1
    assert m["reranked"]["recall@10"] <= m["candidate_recall@50"] + 1e-9
    assert m["retriever"]["n_users"] == m["n_users"] == len(np.unique(shop["test"].user_idx))
    assert m["latency_ms_per_1k_users"] > 0 and m["users_without_candidates"] == 0
    # the retriever alone, scored with the same lists, equals its own top 10
    top, _ = shop["retriever"].recommend(np.unique(shop["test"].user_idx), k=10)
    from recforge.evaluation.metrics import ranking_metrics

    own = ranking_metrics(top, shop["test"].csr[np.unique(shop["test"].user_idx)], (10,))
    assert m["retriever"]["ndcg@10"] == pytest.approx(own["ndcg@10"])


def test_the_served_ranker_keeps_its_parameters_and_reads_the_whole_training_period(shop):
    cands, head = ts.training_candidates(shop["retriever"], shop["train"], 30, TwoStageConfig())
    fitted = ts.fit_ranker("gmf", *GMF, head, cands)
    served = ts.fit_ranker("gmf", *GMF, head, cands, serve=shop["train"])
    for (name, a), (_, b) in zip(fitted.network.named_parameters(), served.network.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    assert (served._seen != shop["train"].csr).nnz == 0
    assert (fitted._seen != head.csr).nnz == 0


def test_n_larger_than_the_catalogue_is_refused(shop):
    with pytest.raises(ValueError, match=r"n=1000 .* catalogue of 1\d\d items .*'bpr'"):
        ts.generate_candidates(shop["retriever"], np.array([0, 1]), 1000)


def test_a_user_with_no_candidates_is_reported_not_crashed():
    data = _data([0, 0, 0, 0, 0, 1, 1], [0, 1, 2, 3, 4, 0, 1], [1, 2, 3, 4, 5, 6, 7], n_users=2, n_items=5)
    retriever = Recommender("popularity")
    retriever.fit(data)
    cands = ts.generate_candidates(retriever, np.array([0, 1]), 3)
    assert set(cands["user_idx"]) == {1}  # user 0 has seen every item
    test = _data([0, 1], [2, 3], [8, 9], n_users=2, n_items=5)
    m = ts.evaluate_chain(cands.assign(label=np.nan, weight=np.nan), retriever, test, 3, (1,))
    assert m["users_without_candidates"] == 1 and m["n_users"] == 2


def test_nan_scores_are_refused_naming_the_model(shop):
    ret = shop["retriever"]
    broken = Recommender("bpr", *BPR)
    broken.network, broken._seen = ret.network, ret._seen
    with torch.no_grad():
        saved = broken.network.user.weight[3].clone() if hasattr(broken.network, "user") else None
    class NaNNet(torch.nn.Module):
        n_items = ret.network.n_items

        def score_all(self, user, history):
            out = torch.zeros(len(user), self.n_items)
            out[user == 3] = float("nan")
            return out

        def forward(self, user, item):
            return torch.where(user == 3, float("nan"), 0.0)

    broken.network = NaNNet()
    with pytest.raises(ValueError, match=r"retriever 'bpr' returned NaN scores for user_idx \[3\]"):
        ts.generate_candidates(broken, np.array([1, 3]), 5)
    cands = pd.DataFrame({"user_idx": [1, 3], "rank": [1, 1], "item_idx": [0, 0], "score": [1.0, 1.0]})
    with pytest.raises(ValueError, match=r"ranker 'bpr' returned NaN scores for user_idx \[3\]"):
        ts.rerank(broken, cands)
    assert saved is None or saved.shape[0] > 0


def test_the_declared_chains_validate():
    chains = declared_chains()
    assert chains and all(isinstance(c, ChainConfig) for c in chains)


def _catalog(shop, tmp_path, trained: bool):
    s = shop["split"]
    path = tmp_path / "bpr"
    if trained:
        shop["retriever"].save(path)
    params = {"chains": [{"retriever": "bpr", "ranker": "gmf", "n": 40}]}
    return DataCatalog({
        "bpr.model": RecommenderDataset(str(path)),
        "train": MemoryDataset(s.train), "test": MemoryDataset(s.test),
        "user_map": MemoryDataset(s.user_map.to_frame()), "item_map": MemoryDataset(s.item_map.to_frame()),
        "params:two_stage": MemoryDataset(TwoStageConfig.model_validate(params)),
        "params:gmf": MemoryDataset({"model": GMF[0], "training": GMF[1]}),
    })


def test_the_pipeline_runs_a_chain(shop, tmp_path):
    chains = (ChainConfig(retriever="bpr", ranker="gmf", n=40),)
    catalog = _catalog(shop, tmp_path, trained=True)
    pipeline = create_pipeline(chains=chains)
    for name in pipeline.all_outputs():
        catalog[name] = MemoryDataset()
    # a file, as in the project's catalog: the runner frees an in-memory intermediate
    catalog["bpr.candidates"] = ParquetDataset(filepath=str(tmp_path / "candidates" / "bpr" / "candidates.parquet"))
    catalog["bpr__gmf.two_stage_metrics"] = JSONDataset(filepath=str(tmp_path / "two_stage" / "bpr__gmf.json"))
    SequentialRunner().run(pipeline, catalog)
    cands = catalog.load("bpr.candidates")
    assert set(cands["split"]) == {"train", "test"} and cands["rank"].max() == 40
    assert cands["item_id"].notna().all()
    m = catalog.load("bpr__gmf.two_stage_metrics")
    assert m["chain"] == "bpr__gmf" and "candidate_recall@40" in m
    assert "| bpr__gmf | 40 |" in catalog.load("two_stage_leaderboard_md")


def test_a_ranker_on_an_untrained_retriever_names_it(shop, tmp_path):
    chains = (ChainConfig(retriever="bpr", ranker="gmf", n=40),)
    with pytest.raises(DatasetError, match=r"no trained model at .*bpr.*--namespaces bpr"):
        SequentialRunner().run(create_pipeline(chains=chains), _catalog(shop, tmp_path, trained=False))


def test_a_content_retriever_is_refitted_on_the_head_with_its_item_side(shop):
    """youtube_candidates reads the items' words and the users' attributes: the head refit gets
    the same item side (through the faiss index: the factored scores retrieve exactly)."""
    from recforge.models.cf import youtube_candidates as yc

    s, train = shop["split"], shop["train"]
    raw = generate_shop(ShopConfig(preset="tiny", n_users=300, n_items=150, n_sessions=2400))
    side = yc.item_content(raw.items, raw.users, s.user_map.to_frame(), s.item_map.to_frame())
    model = {"dim": 16, "embedding_dim": 16, "layers": [32], "max_history": 10, "text_dim": 8}
    retriever = Recommender("youtube_candidates", model, {"epochs": 2, "batch_size": 256, "device": "cpu"})
    retriever.fit(train, item_vectors=side)
    conf = TwoStageConfig(label_fraction=0.2)
    cands, head = ts.training_candidates(retriever, train, 20, conf, item_vectors=side)
    assert len(cands) and (cands.groupby("user_idx").size() <= 20).all()
    copy = ts.refit_on_head(retriever, head, side)
    assert copy.network.use_text and copy.network.use_demographics
    exact, _ = retriever.recommend(np.arange(20), k=20)
    faiss_top, _ = retriever.recommend(np.arange(20), k=20, index=conf.index)
    assert np.mean(exact == faiss_top) > 0.95
    neumf = Recommender("neumf", {"pretrain": True})
    neumf.network, neumf._seen = shop["retriever"].network, train.csr
    with pytest.raises(ValueError, match="starts from other trained models"):
        ts.refit_on_head(neumf, head)


def test_a_retriever_trained_with_early_stopping_refits_on_the_head_for_its_best_epochs(shop):
    """The head has no validation split: the refit keeps the epochs the trained retriever kept."""
    s, train = shop["split"], shop["train"]
    valid = InteractionData.from_frame(s.valid, len(s.user_map), len(s.item_map))
    retriever = Recommender("bpr", {"dim": 16}, {"epochs": 6, "batch_size": 512, "lr": 0.02, "device": "cpu",
                                                 "early_stopping_metric": "ndcg@10", "patience": 2})  # fmt: skip
    retriever.fit(train, valid)
    config = ts.head_train_config(retriever)
    assert config.early_stopping_metric is None and config.epochs == retriever.history.best_epoch + 1
    cands, head = ts.training_candidates(retriever, train, 20, TwoStageConfig())
    assert len(cands) and cands["label"].sum() > 0
    assert ts.refit_on_head(retriever, head).history.epochs == config.epochs
