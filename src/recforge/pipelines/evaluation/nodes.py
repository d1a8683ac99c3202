"""Evaluation nodes: a fitted model and the splits in, metrics and recommendation lists out."""

from typing import Any

import pandas as pd

from recforge.data.interactions import InteractionData
from recforge.evaluation.report import (
    EvaluationConfig,
    build_leaderboard,
    evaluate_recommender,
    leaderboard_figure,
    leaderboard_label,
    context_leaderboard,
    context_markdown,
    leaderboard_markdown,
    rating_baselines,
    rating_leaderboard,
    rating_markdown,
    recommendations_table,
)
from recforge.evaluation.sessions import evaluate_sessions, session_leaderboard


def evaluate_model(
    model: Any,
    train: pd.DataFrame,
    test: pd.DataFrame,
    user_map: pd.DataFrame,
    item_map: pd.DataFrame,
    evaluation: EvaluationConfig,
) -> dict[str, Any]:
    """Full, sampled, rating and cold-start metrics of one family on the test split."""
    return evaluate_recommender(model, train, test, len(user_map), len(item_map), evaluation)


def recommend_items(
    model: Any, user_map: pd.DataFrame, item_map: pd.DataFrame, evaluation: EvaluationConfig
) -> pd.DataFrame:
    """Top-K unseen items for every known user, with raw ids."""
    return recommendations_table(model, user_map, item_map, evaluation.top_k)


TUNED_PREFIX = "tuned__"


def report_leaderboard(
    evaluation: EvaluationConfig, **metrics: dict[str, Any] | None
) -> tuple[pd.DataFrame, str, Any, dict[str, Any]]:
    """Leaderboard table, its Markdown page and chart, and the flat metrics file DVC reads.

    `metrics`: `<family>=` each family's default test metrics and `tuned__<family>=` its tuned
    ones (None when the family was never tuned); tuned rows sit below their default rows and
    are keyed `<family> (tuned)` in the flat file."""
    k = evaluation.leaderboard_k
    tuned = {n.removeprefix(TUNED_PREFIX): m for n, m in metrics.items() if n.startswith(TUNED_PREFIX)}
    default = {n: m for n, m in metrics.items() if not n.startswith(TUNED_PREFIX)}
    board = build_leaderboard(default, k=k, tuned=tuned)
    flat = {
        leaderboard_label(row): {
            c: (int(row[c]) if c == "trials" else row[c])
            for c in board.columns
            if c not in ("family", "variant") and pd.notna(row[c])
        }
        for _, row in board.iterrows()
    }
    return board, leaderboard_markdown(board), leaderboard_figure(board, k=k), flat


def evaluate_session_model(
    model: Any,
    train: pd.DataFrame,
    test: pd.DataFrame,
    user_map: pd.DataFrame,
    item_map: pd.DataFrame,
    evaluation: EvaluationConfig,
) -> dict[str, Any]:
    """Next-item (every position and last item) and user-sequence protocols; families that cannot
    score an ordered prefix are marked skipped."""
    seen = InteractionData.from_frame(train, len(user_map), len(item_map), name="train")
    return evaluate_sessions(
        model, seen, test, ks=evaluation.ks, seed=evaluation.seed, batch_size=evaluation.batch_size
    )


def report_rating_leaderboard(
    train: pd.DataFrame, test: pd.DataFrame, **metrics: dict[str, Any] | None
) -> tuple[pd.DataFrame, str]:
    """The rating task's section: RMSE / MAE of every family trained on ratings, with the global
    mean and item mean baselines."""
    board = rating_leaderboard({f: m for f, m in metrics.items() if m}, rating_baselines(train, test))
    return board, rating_markdown(board)


def report_context_leaderboard(
    train: pd.DataFrame, test: pd.DataFrame, user_map: pd.DataFrame, item_map: pd.DataFrame,
    **metrics: dict[str, Any] | None,
) -> tuple[pd.DataFrame, str]:
    """The context-aware top-K section: families reading the event's time, and popularity in
    the event's hour / weekday."""
    n_users, n_items = len(user_map), len(item_map)
    board = context_leaderboard(
        {f: m for f, m in metrics.items() if m},
        InteractionData.from_frame(train, n_users, n_items, name="train"),
        InteractionData.from_frame(test, n_users, n_items, name="test"),
    )
    return board, context_markdown(board)


def report_tasks(rating_md: str, context_md: str, **ctr_metrics: dict[str, Any] | None) -> str:
    """One page with a leaderboard section per task: rating prediction, CTR (from the `ctr`
    pipeline's per-family metrics, when it has run) and context-aware top-K."""
    from recforge.pipelines.ctr.nodes import report_ctr

    if any(ctr_metrics.values()):
        ctr_md = report_ctr(**ctr_metrics)[1]
    else:
        ctr_md = "# CTR leaderboard\n\nNo click model trained yet: `kedro run --pipelines ctr`.\n"
    sections = [md.replace("\n# ", "\n## ").replace("# ", "## ", 1) for md in (rating_md, ctr_md, context_md)]
    return "# Leaderboards by task\n\n" + "\n".join(sections)


def report_session_leaderboard(**session_metrics: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """The session section of the leaderboard: one row per family that can score a prefix."""
    board = session_leaderboard(session_metrics)
    return board, leaderboard_markdown(board, title="Session leaderboard (next-item prediction)")
