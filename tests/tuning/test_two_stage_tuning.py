"""A chain's study (recforge.tuning.two_stage): N and the ranker's parameters tuned together on
the validation period, the retriever fitted once per study, the best N reported and pasteable into
`two_stage.chains`, and bad spaces refused naming the chain and the parameter."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from recforge.data.filters import filter_interactions
from recforge.data.interactions import InteractionData
from recforge.data.splits import SplitConfig, split_interactions
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.training import two_stage as ts
from recforge.training.recommender import Recommender
from recforge.training.two_stage import ChainConfig, TwoStageConfig
from recforge.tuning import two_stage as tts
from recforge.tuning.space import SpaceError

BPR = ({"dim": 16}, {"epochs": 8, "batch_size": 512, "lr": 0.02})
GMF = {"model": {"dim": 8}, "training": {"epochs": 2, "batch_size": 1024, "lr": 0.01,
                                          "early_stopping_metric": "ndcg@10"}}
CHAIN = ChainConfig(retriever="bpr", ranker="gmf", n=20)
SPACE = {"n": {"type": "int", "low": 10, "high": 30, "step": 10},
         "model": {"dim": {"type": "categorical", "choices": [4, 8]}},
         "training": {"lr": {"type": "float", "low": 1.0e-3, "high": 3.0e-2, "log": True}}}


@pytest.fixture(scope="module")
def shop():
    shop = generate_shop(ShopConfig(preset="tiny", n_users=200, n_items=100, n_sessions=1500))
    cfg = SplitConfig(strategy="temporal", valid_fraction=0.15, test_fraction=0.15, seed=0,
                      min_user_interactions=3, min_item_interactions=3)
    s = split_interactions(filter_interactions(shop.interactions, cfg), None, cfg)
    nu, ni = len(s.user_map), len(s.item_map)
    data = {k: InteractionData.from_frame(getattr(s, k), nu, ni, name=k) for k in ("train", "valid", "test")}
    retriever = Recommender("bpr", *BPR)
    retriever.fit(data["train"])
    return {**data, "retriever": retriever}


def _plan(block=None, chain=CHAIN):
    tuning = tts.TwoStageTuningConfig.model_validate(
        {"defaults": {"n_trials": 4, "sampler": "random", "seed": 3, "space": SPACE}, "chains": block or {}})
    return tts.plan_chain(chain, tuning.for_chain(chain.name), GMF, n_items=100)


def test_a_chain_study_tunes_n_with_the_ranker_on_valid(shop, tmp_path, monkeypatch):
    refits = []
    real = ts.refit_on_head
    monkeypatch.setattr(ts, "refit_on_head", lambda *a: refits.append(1) or real(*a))
    plan = _plan()
    result = tts.tune_chain(plan, shop["retriever"], shop["train"], shop["valid"],
                            f"sqlite:///{tmp_path / 'study.db'}", TwoStageConfig(), name="bpr__gmf.tiny")
    trials = [t for t in result.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 4
    assert trials[0].params["n"] == CHAIN.n and trials[0].user_attrs["baseline"]  # the chain as declared
    assert len({t.params["n"] for t in trials}) > 1  # trials differ in N
    assert refits == [1]  # the retriever's head copy: once per study, not per trial
    best = result.best_params()
    top = max(trials, key=lambda t: t.value)
    assert best["n"] == top.params["n"] and best["best_value"] == pytest.approx(top.value)
    assert best["chain"] == "bpr__gmf" and best["split"] == "valid" and best["metric"] == "ndcg@10"
    assert best["model"]["dim"] == top.params["model.dim"]
    assert best["training"]["lr"] == pytest.approx(top.params["training.lr"])
    assert "early_stopping_metric" not in best["training"]
    assert best["tuned_keys"] == ["model.dim", "training.lr"]
    # the block to paste into two_stage.chains is a valid chain with the tuned values
    paste = ChainConfig.model_validate(best["two_stage_chain"])
    assert (paste.n, paste.model["dim"], paste.ranker) == (best["n"], best["model"]["dim"], "gmf")
    assert 0.0 <= best["candidate_recall"] <= 1.0

    # the trial's value is the reranked metric on the validation users: refitting the best trial
    # (seeded) and scoring it on valid gives it back; on test it differs
    cands, head = ts.training_candidates(shop["retriever"], shop["train"], best["n"], TwoStageConfig())
    model, training = {**GMF["model"], "dim": best["model"]["dim"]}, {**GMF["training"], "lr": best["training"]["lr"]}
    training.pop("early_stopping_metric")
    ranker = ts.fit_ranker("gmf", model, training, head, cands, serve=shop["train"])
    scored = {}
    for split in ("valid", "test"):
        served, _ = ts.candidates_for(shop["retriever"], shop[split], best["n"])
        scored[split] = ts.evaluate_chain(served, ranker, shop[split], best["n"])["reranked"]["ndcg@10"]
    assert scored["valid"] == pytest.approx(best["best_value"], rel=1e-5)
    assert scored["test"] != pytest.approx(best["best_value"], rel=1e-5)

    table = tts.chain_trials_table(result)
    assert list(table["number"]) == [0, 1, 2, 3]
    assert {"n", "model.dim", "training.lr", "ndcg@10", "candidate_recall", "retriever_ndcg@10"} <= set(table.columns)
    md = tts.chain_trials_markdown(result, table)
    assert md.startswith("# Two-stage tuning: bpr__gmf") and f"best N (candidates per user): {best['n']}" in md
    assert "| number | state |" in md
    assert all(line.startswith(("#", "-", "|")) or not line for line in md.splitlines())  # one item per line

    # resuming the study adds trials to it
    again = tts.tune_chain(plan, shop["retriever"], shop["train"], shop["valid"],
                           f"sqlite:///{tmp_path / 'study.db'}", TwoStageConfig(), name="bpr__gmf.tiny")
    assert again.best_params()["n_trials"] == 8 and again.best_params()["run_trials"] == 4


def test_n_alone_can_be_tuned_with_a_categorical(shop, tmp_path):
    plan = _plan({"bpr__gmf": {"n_trials": 3, "sampler": "random", "space": {"n": {"type": "categorical",
                                                                                  "choices": [10, 20, 40]}}}})
    result = tts.tune_chain(plan, shop["retriever"], shop["train"], shop["valid"],
                            f"sqlite:///{tmp_path / 'n.db'}", TwoStageConfig())
    best = result.best_params()
    assert best["n"] in (10, 20, 40) and best["tuned_keys"] == []
    assert best["model"]["dim"] == GMF["model"]["dim"]


@pytest.mark.parametrize(
    ("space", "match"),
    [
        ({"n": {"type": "int", "low": 0, "high": 50}}, r"'bpr__gmf', key 'space.n'.*candidates per user must be positive"),
        ({"n": {"type": "int", "low": 50, "high": 10}}, r"'bpr__gmf', key 'space.n'.*low \(50\) must be below high"),
        ({"model": {"dim": {"type": "int", "low": 4, "high": 8}}}, r"'bpr__gmf', key 'space.n'.*Field required"),
        ({**SPACE, "model": {"width": {"type": "int", "low": 4, "high": 8}}}, r"'bpr__gmf', key 'model.width'.*no field"),
        ({**SPACE, "model": {"dim": {"type": "int", "low": -4, "high": 8}}}, r"'bpr__gmf', key 'model.dim'.*rejects -4"),
        ({**SPACE, "training": {"early_stopping_metric": {"type": "categorical", "choices": ["ndcg@10"]}}},
         r"'bpr__gmf', key 'training.early_stopping_metric'"),
        ({**SPACE, "n": {"type": "int", "low": 50, "high": 500, "step": 50}}, r"'bpr__gmf', key 'n'.*catalogue holds 100"),
    ],
)
def test_a_bad_space_names_the_chain_and_the_parameter(space, match):
    # SpaceError, or pydantic's ValidationError carrying it when the parameters block is parsed
    with pytest.raises(ValueError, match=match):
        _plan({"bpr__gmf": {"space": space}})


def test_bad_study_settings_are_refused():
    with pytest.raises(ValueError, match=r"'bpr__gmf', key 'pruner'.*cannot be pruned"):
        _plan({"bpr__gmf": {"pruner": "median"}})
    with pytest.raises(SpaceError, match=r"'bpr__gmf', key 'metric'.*not a ranking metric"):
        _plan({"bpr__gmf": {"metric": "rmse"}})
    tuning = tts.TwoStageTuningConfig.model_validate({"defaults": {"space": SPACE}, "chains": {"bpr__mf": {}}})
    with pytest.raises(ValueError, match=r"two_stage_tuning.chains names \['bpr__mf'\].*declared chains: \['bpr__gmf'\]"):
        tuning.check_chains((CHAIN,))


def test_an_empty_valid_split_is_refused(shop, tmp_path):
    empty = ts.subset(shop["valid"], np.zeros(len(shop["valid"]), bool))
    with pytest.raises(ValueError, match=r"chain 'bpr__gmf': the valid split is empty"):
        tts.tune_chain(_plan(), shop["retriever"], shop["train"], empty, f"sqlite:///{tmp_path / 'e.db'}", TwoStageConfig())
