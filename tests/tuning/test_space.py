"""Search spaces and tuning parameters: every bad declaration stops before a trial runs, with an
error naming the family, the key and the problem; sampling stays inside the declared ranges."""

from __future__ import annotations

import optuna
import pytest
from pydantic import ValidationError

from recforge.evaluation.selection import check_metric, parse_metric
from recforge.models.registry import get_family
from recforge.tuning.config import TuningConfig
from recforge.tuning.space import SpaceError, decode_params, suggest, validate_space
from recforge.tuning.study import plan_study

BPR = get_family("bpr")
MLP = get_family("mlp")


@pytest.mark.parametrize(
    ("family", "space", "key", "problem"),
    [
        ("bpr", {"model": {"dimm": {"type": "int", "low": 8, "high": 64}}}, "model.dimm", "has no field 'dimm'"),
        ("bpr", {"training": {"learning_rate": {"type": "float", "low": 0.001, "high": 0.1}}},
         "training.learning_rate", "TrainConfig has no field"),
        ("bpr", {"model": {"dim": {"type": "int", "low": 64, "high": 64}}}, "model.dim", "low (64) must be below high (64)"),
        ("bpr", {"model": {"l2": {"type": "float", "low": 0.1, "high": 0.01}}}, "model.l2", "must be below high"),
        ("bpr", {"model": {"l2": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}}, "model.l2", "log range needs low > 0"),
        ("bpr", {"training": {"lr": {"type": "float", "low": -1.0, "high": 0.1, "log": True}}}, "training.lr", "low > 0"),
        ("mlp", {"model": {"layers": {"type": "categorical", "choices": []}}}, "model.layers", "empty choice list"),
        ("bpr", {"model": {"dim": {"type": "int", "low": -4, "high": 64}}}, "model.dim", "rejects -4"),
        ("mlp", {"model": {"layers": {"type": "categorical", "choices": [[64, 32], "wide"]}}}, "model.layers", "rejects 'wide'"),
        ("bpr", {"training": {"early_stopping_metric": {"type": "categorical", "choices": ["ndcg@10"]}}},
         "training.early_stopping_metric", "set by the tuning study"),
        ("bpr", {"modle": {"dim": {"type": "int", "low": 8, "high": 64}}}, "modle", "Extra inputs"),
        ("bpr", {"model": {"dim": {"type": "int", "lo": 8, "high": 64}}}, "model.dim", ""),
        ("bpr", {"model": {"dim": {"type": "normal", "low": 8, "high": 64}}}, "model.dim", ""),
        ("bpr", {}, "space", "no keys to tune"),
    ],
)  # fmt: skip
def test_a_bad_space_names_the_family_the_key_and_the_problem(family, space, key, problem):
    with pytest.raises(SpaceError) as info:
        validate_space(get_family(family), space, {}, {})
    message = str(info.value)
    assert f"tuning space of {family!r}" in message
    assert info.value.key.startswith(key), message
    assert problem in message


def test_a_value_is_checked_together_with_the_base_parameters():
    # neumf's pretrain=true needs dims that match gmf/mlp: the config accepts each edge alone
    space = {"model": {"alpha": {"type": "float", "low": 0.0, "high": 1.5}}}
    with pytest.raises(SpaceError, match=r"model\.alpha.*rejects 1\.5"):
        validate_space(get_family("neumf"), space, {"pretrain": True}, {})


def test_samples_stay_in_range_and_list_choices_come_back_as_lists():
    space = validate_space(
        MLP,
        {
            "model": {
                "layers": {"type": "categorical", "choices": [[64, 32, 16], [128, 64], [32]]},
                "dim": {"type": "int", "low": 8, "high": 64, "step": 8},
            },
            "training": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True}},
        },
        {},
        {},
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen_layers = set()
    for _ in range(20):
        trial = study.ask()
        model, training = suggest(trial, space)
        assert isinstance(model["layers"], list) and model["layers"] in ([64, 32, 16], [128, 64], [32])
        assert model["dim"] % 8 == 0 and 8 <= model["dim"] <= 64
        assert 1e-4 <= training["lr"] <= 1e-1
        seen_layers.add(tuple(model["layers"]))
        study.tell(trial, 0.0)
        assert decode_params(space, trial.params) == (model, training)
    assert len(seen_layers) == 3


def test_n_trials_zero_and_bad_tuning_options_are_rejected():
    with pytest.raises(ValidationError, match="n_trials must be at least 1"):
        TuningConfig(n_trials=0)
    with pytest.raises(ValidationError, match="unknown metric 'ndgc@10'"):
        TuningConfig(metric="ndgc@10")
    with pytest.raises(ValidationError, match="sampler"):
        TuningConfig(sampler="grid")
    with pytest.raises(ValidationError, match="needs pruner: none"):
        TuningConfig(second_objective="fit_seconds", pruner="median")
    with pytest.raises(ValidationError, match="second_objective must be"):
        TuningConfig(second_objective="rmse", pruner="none")


@pytest.mark.parametrize(
    ("family", "model", "metric", "problem"),
    [
        ("bpr", {}, "rmse", "rmse"),  # bpr learns from implicit feedback only
        ("bpr", {}, "next_item_mrr@20", "next_item"),  # bpr cannot score an ordered prefix
        ("item_knn", {}, "mae", "mae"),
    ],
)
def test_a_metric_that_does_not_fit_the_family_is_rejected(family, model, metric, problem):
    fam = get_family(family)
    with pytest.raises(ValueError, match=problem) as info:
        check_metric(metric, fam, uses_ratings=False)
    assert family in str(info.value)
    with pytest.raises(ValueError, match=problem):
        plan_study(family, model, {}, {"metric": metric, "space": {"model": {"dim": {"type": "int", "low": 8, "high": 16}}}})


def test_default_metrics_and_directions():
    space = {"training": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}}
    assert plan_study("bpr", {}, {}, {"space": space}).metric.name == "ndcg@10"
    mf = plan_study("mf", {}, {}, {"space": space})
    assert mf.metric.name == "rmse" and mf.directions == ["minimize"]
    sknn = plan_study("gru4rec", {}, {}, {"space": space})
    assert sknn.metric.name == "next_item_mrr@20" and sknn.directions == ["maximize"]
    two = plan_study("bpr", {}, {}, {"space": space, "second_objective": "fit_seconds", "pruner": "none"})
    assert two.directions == ["maximize", "minimize"] and two.objective_names == ["ndcg@10", "fit_seconds"]
    assert parse_metric("coverage@20").direction == "maximize"
