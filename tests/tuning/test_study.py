"""The study on a small synthetic shop: determinism, resume, pruning, failed trials, samplers,
multi-objective Pareto fronts, storage errors and the reports."""

from __future__ import annotations

import math

import matplotlib
import optuna
import pandas as pd
import pytest

from recforge.data.filters import filter_interactions
from recforge.data.interactions import InteractionData
from recforge.data.splits import SplitConfig, split_interactions
from recforge.data.synthetic import ShopConfig, generate_shop
from recforge.training.recommender import Recommender
from recforge.tuning import report
from recforge.tuning.storage import TuningStorageError, open_storage, redact, sqlite_url
from recforge.tuning.study import PruningCallback, TuningFailed, plan_study, tune

matplotlib.use("Agg")

BPR_MODEL = {"dim": 16, "l2": 1e-4}
BPR_TRAINING = {"epochs": 4, "batch_size": 1024, "lr": 0.01, "num_threads": 1, "device": "cpu"}
BPR_SPACE = {
    "model": {"dim": {"type": "int", "low": 8, "high": 32, "log": True}},
    "training": {"lr": {"type": "float", "low": 1e-3, "high": 5e-2, "log": True}},
}


@pytest.fixture(scope="module")
def data() -> dict:
    shop = generate_shop(ShopConfig(preset="tiny", n_users=150, n_items=80, n_sessions=1200, with_media=False))
    config = SplitConfig(strategy="random", valid_fraction=0.15, test_fraction=0.15, seed=0,
                         min_user_interactions=3, min_item_interactions=3)  # fmt: skip
    split = split_interactions(filter_interactions(shop.interactions, config), None, config)
    nu, ni = len(split.user_map), len(split.item_map)
    return {
        "train": InteractionData.from_frame(split.train, nu, ni),
        "ratings": InteractionData.from_frame(split.train, nu, ni, events=("rating",)),
        "valid": InteractionData.from_frame(split.valid, nu, ni),
    }


def _tune(data, tmp_path, tuning, family="bpr", model=None, training=None, db="study.db", train_key="train"):
    plan = plan_study(family, model or BPR_MODEL, training or BPR_TRAINING, {"space": BPR_SPACE, **tuning})
    return tune(plan, data[train_key], data["valid"], sqlite_url(tmp_path / db), name=f"{family}.test",
                seen=data["train"].csr)  # fmt: skip


def _params(result) -> list[dict]:
    return [t.params for t in sorted(result.study.trials, key=lambda t: t.number)]


def test_same_seed_same_storage_state_same_suggestions(data, tmp_path):
    tuning = {"n_trials": 4, "startup_trials": 2, "pruner": "none", "seed": 5}
    a = _tune(data, tmp_path, tuning, db="a.db")
    b = _tune(data, tmp_path, tuning, db="b.db")
    assert _params(a) == _params(b)
    c = _tune(data, tmp_path, {**tuning, "seed": 6}, db="c.db")
    assert _params(c) != _params(a)
    best = a.best_params()
    assert best["n_trials"] == 4 and best["n_complete"] == 4 and best["metric"] == "ndcg@10"
    assert best["model"]["dim"] == a.study.best_trial.params["model.dim"]
    assert best["training"]["lr"] == a.study.best_trial.params["training.lr"]
    assert best["training"]["early_stopping_metric"] == "ndcg@10"  # fixed by the study
    assert best["best_value"] == pytest.approx(a.study.best_value)


def test_a_rerun_resumes_the_study_and_keeps_its_trials(data, tmp_path):
    first = _tune(data, tmp_path, {"n_trials": 2, "pruner": "none"})
    kept = _params(first)
    second = _tune(data, tmp_path, {"n_trials": 2, "pruner": "none"})
    assert [t.number for t in second.study.trials] == [0, 1, 2, 3]
    assert _params(second)[:2] == kept
    assert second.run_trials == [2, 3]
    assert second.best_params()["run_trials"] == 2 and second.best_params()["n_trials"] == 4
    # a budget on the whole study tops it up instead of growing it
    third = _tune(data, tmp_path, {"n_trials": 5, "max_trials": 5, "pruner": "none"})
    assert len(third.study.trials) == 5


def test_the_pruner_stops_trials_through_the_fit_loop_cleanly(data, tmp_path):
    class PruneAfterFirst(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return trial.number > 0 and trial.last_step is not None and trial.last_step >= 1

    import recforge.tuning.study as study_module

    original = study_module.make_pruner
    study_module.make_pruner = lambda tuning, max_epochs: PruneAfterFirst()
    try:
        result = _tune(data, tmp_path, {"n_trials": 3, "pruner": "median"})
    finally:
        study_module.make_pruner = original
    states = [t.state for t in result.study.trials]
    assert states[0] == optuna.trial.TrialState.COMPLETE
    assert states[1:] == [optuna.trial.TrialState.PRUNED] * 2
    for t in result.study.trials[1:]:
        assert sorted(t.intermediate_values) == [0, 1]  # reported every epoch, stopped after the second
    assert result.best_params()["n_pruned"] == 2
    table = report.trials_table(result)
    assert list(table["state"]) == ["complete", "pruned", "pruned"]


def test_the_pruning_callback_raises_trial_pruned():
    class Trial:
        reported: list = []

        def report(self, value, step):
            self.reported.append((step, value))

        def should_prune(self):
            return len(self.reported) >= 2

    cb = PruningCallback(Trial(), "ndcg@10")
    assert cb.on_epoch_end(0, {"metrics": {"ndcg@10": 0.1}}) is None
    assert cb.on_epoch_end(1, {"metrics": {"ndcg@10": float("nan")}}) is None  # not reported
    with pytest.raises(optuna.TrialPruned, match="after epoch 3"):
        cb.on_epoch_end(2, {"metrics": {"ndcg@10": 0.2}})


def test_a_nan_or_raising_trial_is_failed_with_its_reason_and_the_study_goes_on(data, tmp_path, monkeypatch):
    # mf on ratings: a huge learning rate turns the loss NaN (TrainingDiverged)
    space = {"training": {"lr": {"type": "categorical", "choices": [0.005, 1.0e12]}}}
    plan = plan_study("mf", {"dim": 8}, {"epochs": 3, "batch_size": 256, "device": "cpu"},
                      {"n_trials": 3, "pruner": "none", "space": space})  # fmt: skip
    url = sqlite_url(tmp_path / "mf.db")
    study = optuna.create_study(storage=url, study_name="mf.test", direction="minimize")
    study.enqueue_trial({"training.lr": 1.0e12})
    study.enqueue_trial({"training.lr": 0.005})
    calls = {"n": 0}
    fit = Recommender.fit

    def flaky_fit(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("the third fit broke")
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Recommender, "fit", flaky_fit)
    result = tune(plan, data["ratings"], data["valid"], url, name="mf.test")
    trials = result.study.trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE,
                                         optuna.trial.TrialState.FAIL]  # fmt: skip
    assert "TrainingDiverged" in trials[0].user_attrs["fail_reason"]
    assert trials[2].user_attrs["fail_reason"] == "RuntimeError: the third fit broke"
    assert math.isfinite(result.study.best_value)
    table = report.trials_table(result)
    assert table.loc[0, "fail_reason"].startswith("TrainingDiverged")


def test_a_study_whose_every_trial_fails_shows_the_first_failure(data, tmp_path):
    space = {"training": {"lr": {"type": "float", "low": 1.0e11, "high": 1.0e12}}}
    plan = plan_study("mf", {"dim": 8}, {"epochs": 2, "batch_size": 256, "device": "cpu"},
                      {"n_trials": 2, "pruner": "none", "space": space})  # fmt: skip
    with pytest.raises(TuningFailed, match=r"none of the 2 trial\(s\).*first failure \(trial 0\): TrainingDiverged"):
        tune(plan, data["ratings"], data["valid"], sqlite_url(tmp_path / "bad.db"), name="mf.bad")


@pytest.mark.parametrize("sampler", ["random", "cmaes", "qmc"])
def test_other_samplers_run_seeded(data, tmp_path, sampler):
    tuning = {"n_trials": 3, "pruner": "none", "sampler": sampler, "seed": 3, "startup_trials": 1}
    a = _tune(data, tmp_path, tuning, db="a.db")
    b = _tune(data, tmp_path, tuning, db="b.db")
    assert len(a.study.trials) == 3 and _params(a) == _params(b)


@pytest.mark.parametrize("second", ["fit_seconds", "coverage@10"])
def test_two_objectives_report_a_pareto_front(data, tmp_path, second):
    result = _tune(data, tmp_path, {"n_trials": 4, "pruner": "none", "second_objective": second, "startup_trials": 2})
    assert len(result.study.directions) == 2
    best = result.best_params()
    assert best["objectives"] == ["ndcg@10", second] and best["best_value"] is None
    front = best["pareto_front"]
    assert front and all(set(p) == {"ndcg@10", second} for p in front)
    # no point of the front is dominated by a complete trial
    sign = {"ndcg@10": 1, "fit_seconds": -1, "coverage@10": 1}
    complete = [t for t in result.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    for p in front:
        for t in complete:
            better = [sign[n] * v > sign[n] * p[n] for n, v in zip(best["objectives"], t.values, strict=True)]
            no_worse = [sign[n] * v >= sign[n] * p[n] for n, v in zip(best["objectives"], t.values, strict=True)]
            assert not (all(no_worse) and any(better))
    fig = report.pareto_figure(result)
    assert fig.axes[0].get_xlabel() == second


def test_the_reports_describe_every_trial(data, tmp_path):
    result = _tune(data, tmp_path, {"n_trials": 3, "pruner": "none"})
    table = report.trials_table(result)
    assert isinstance(table, pd.DataFrame) and len(table) == 3
    assert {"number", "state", "ndcg@10", "duration_s", "model.dim", "training.lr"} <= set(table.columns)
    assert (table["duration_s"] > 0).all()
    md = report.trials_markdown(result, table)
    assert "best ndcg@10" in md and md.count("\n| ") >= 4
    for make in (report.history_figure, report.importance_figure, report.parallel_figure, report.pareto_figure):
        fig = make(result)
        assert fig.axes, make.__name__
    importances = report.param_importances(result)
    assert set(importances) == {"model.dim", "training.lr"}


def test_an_unreachable_database_names_host_and_database_never_the_password():
    url = "postgresql+psycopg2://tuner:s3cret-pw@127.0.0.1:9/studies"
    with pytest.raises(TuningStorageError) as info:
        open_storage(url, heartbeat_seconds=5)
    message = str(info.value)
    assert "host 127.0.0.1" in message and "database studies" in message and "s3cret-pw" not in message
    assert info.value.__cause__ is None and "s3cret-pw" not in redact(url)


def test_a_corrupt_sqlite_file_is_reported_and_left_untouched(tmp_path):
    path = tmp_path / "study.db"
    path.write_bytes(b"garbage" * 100)
    with pytest.raises(TuningStorageError, match="not an SQLite database.*left untouched"):
        open_storage(sqlite_url(path))
    assert path.read_bytes() == b"garbage" * 100


def test_a_new_study_starts_from_the_base_parameters(data, tmp_path):
    result = _tune(data, tmp_path, {"n_trials": 2, "pruner": "none"})
    first = result.study.trials[0]
    assert first.params == {"model.dim": BPR_MODEL["dim"], "training.lr": BPR_TRAINING["lr"]}
    assert first.user_attrs["baseline"] is True
    # the tuned best is never worse on valid than the defaults
    assert result.study.best_value >= first.value
    resumed = _tune(data, tmp_path, {"n_trials": 1, "pruner": "none"})
    assert sum(t.user_attrs.get("baseline", False) for t in resumed.study.trials) == 1
    # base values outside the space: the sampler alone
    off = _tune(data, tmp_path, {"n_trials": 1, "pruner": "none"}, model={"dim": 64}, db="off.db")
    assert "baseline" not in off.study.trials[0].user_attrs
