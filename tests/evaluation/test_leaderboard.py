"""The leaderboard: default and tuned results of a family side by side, clearly labelled, with the
study's trial count and tuning wall time; stale tuned results left out."""

from __future__ import annotations

import math

import numpy as np

import pandas as pd

from recforge.evaluation.report import EvaluationConfig, build_leaderboard, leaderboard_markdown
from recforge.pipelines.evaluation.nodes import report_leaderboard


def _metrics(family: str, ndcg: float, n_test: int = 100, rmse: float | None = None, tuning: dict | None = None) -> dict:
    m = {"family": family, "n_test_interactions": n_test, "full": {"ndcg@10": ndcg, "hr@10": 2 * ndcg},
         "sampled": {"hr@10": 0.5}, "fit": {"seconds": 1.5, "epochs": 3}}  # fmt: skip
    if rmse is not None:
        m["rating"] = {"rmse": rmse, "mae": rmse / 2}
    if tuning is not None:
        m["tuning"] = tuning
    return m


def test_tuned_rows_sit_under_their_default_rows_with_trials_and_time():
    default = {"bpr": _metrics("bpr", 0.20), "mf": _metrics("mf", 0.05, rmse=1.0), "gmf": _metrics("gmf", 0.30)}
    tuned = {
        "bpr": _metrics("bpr", 0.25, tuning={"n_trials": 12, "tuning_seconds": 42.5}),
        "mf": _metrics("mf", 0.04, rmse=0.93, tuning={"n_trials": 8, "tuning_seconds": 20.0}),
        "gmf": None,  # never tuned
    }
    board = build_leaderboard(default, k=10, tuned=tuned)
    assert list(zip(board["family"], board["variant"], strict=True)) == [
        ("gmf", "default"), ("bpr", "default"), ("bpr", "tuned"), ("mf", "default"), ("mf", "tuned"),
    ]  # fmt: skip
    assert list(board.columns[:2]) == ["family", "variant"] and list(board.columns[-2:]) == ["trials", "tuning_seconds"]
    tuned_bpr = board.iloc[2]
    assert tuned_bpr["ndcg@10"] == 0.25 and tuned_bpr["trials"] == 12 and tuned_bpr["tuning_seconds"] == 42.5
    assert pd.isna(board.iloc[1]["trials"]) and math.isclose(board.iloc[4]["rmse"], 0.93)
    md = leaderboard_markdown(board)
    assert "| bpr | tuned |" in md and "| 12 | 42.5 |" in md and "`tuned` rows" in md


def test_a_tuned_result_on_another_test_split_is_left_out(caplog):
    board = build_leaderboard(
        {"bpr": _metrics("bpr", 0.2, n_test=100)},
        tuned={"bpr": _metrics("bpr", 0.3, n_test=90, tuning={"n_trials": 3, "tuning_seconds": 1.0})},
    )
    assert list(board["variant"]) == ["default"]
    assert "left out" in caplog.text and "tuning,tuned --namespaces bpr" in caplog.text


def test_the_node_keys_tuned_rows_as_family_tuned_in_the_metrics_file():
    _, md, fig, flat = report_leaderboard(
        EvaluationConfig(),
        bpr=_metrics("bpr", 0.2),
        item_knn=_metrics("item_knn", 0.1),
        tuned__bpr=_metrics("bpr", 0.3, tuning={"n_trials": 5, "tuning_seconds": 9.0}),
        tuned__item_knn=None,
    )
    assert set(flat) == {"bpr", "bpr (tuned)", "item_knn"}
    assert flat["bpr (tuned)"]["trials"] == 5 and isinstance(flat["bpr (tuned)"]["trials"], int)
    assert "trials" not in flat["bpr"]
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "bpr (tuned)" in labels


def test_the_rating_section_ranks_rating_families_against_the_mean_baselines():
    from recforge.pipelines.evaluation.nodes import report_rating_leaderboard

    train = pd.DataFrame({"item_id": ["a", "a", "b", "c"], "event": ["rating"] * 3 + ["view"],
                          "value": [4.0, 5.0, 2.0, 1.0]})  # fmt: skip
    test = pd.DataFrame({"item_id": ["a", "b", "z", "c"], "event": ["rating", "rating", "rating", "view"],
                         "value": [5.0, 1.0, 3.0, 1.0]})  # fmt: skip
    metrics = {"mf": {"rating": {"rmse": 0.5, "mae": 0.4, "n": 3}}, "bpr": {"full": {}}, "fm": None}
    board, md = report_rating_leaderboard(train, test, **metrics)
    assert list(board["family"]) == ["mf", "item mean", "global mean"]
    mu = 11 / 3  # train's mean rating
    np.testing.assert_allclose(board.set_index("family").loc["global mean", "mae"],
                               np.mean(np.abs([5 - mu, 1 - mu, 3 - mu])))  # fmt: skip
    # item mean: a -> 4.5, b -> 2, z (unrated) -> the global mean
    np.testing.assert_allclose(board.set_index("family").loc["item mean", "mae"], np.mean([0.5, 1.0, abs(3 - mu)]))
    assert "| *global mean* (baseline) |" in md and "| mf | 0.5000 | 0.4000 | 3 |" in md


def test_the_rating_baselines_skip_cold_rows_as_the_families_do():
    from recforge.evaluation.report import rating_baselines

    train = pd.DataFrame({"item_id": ["a"], "event": ["rating"], "value": [4.0], "user_idx": [0], "item_idx": [0]})
    test = pd.DataFrame({"item_id": ["a", "b"], "event": ["rating", "rating"], "value": [5.0, 1.0],
                         "user_idx": [0, -1], "item_idx": [0, 0]})  # fmt: skip
    assert rating_baselines(train, test)["global mean"] == {"rmse": 1.0, "mae": 1.0, "n": 1}


def test_the_tasks_page_has_a_section_per_task_and_says_when_ctr_has_not_run():
    from recforge.pipelines.evaluation.nodes import report_tasks

    rating, context = "# Rating prediction\n\n| a |\n", "# Context-aware top-K\n\n| b |\n"
    page = report_tasks(rating, context, lr=None, fm=None)
    assert page.startswith("# Leaderboards by task")
    assert "## Rating prediction" in page and "## Context-aware top-K" in page
    assert "No click model trained yet: `kedro run --pipelines ctr`" in page
    m = {"auc": 0.7, "logloss": 0.4, "ctr": 0.1, "n": 10, "fit_seconds": 1.0, "samples_per_s": 5.0, "epochs": 1,
         "unknown_values": {}}  # fmt: skip
    page = report_tasks(rating, context, lr=m, fm={**m, "auc": 0.8})
    assert "## CTR leaderboard" in page and "| fm | 0.8000 |" in page and "| lr | 0.7000 |" in page
