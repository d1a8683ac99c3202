"""Evaluation nodes: a fitted model and the splits in, metrics out (the lists: `serving`)."""

from typing import Any

import pandas as pd

from recforge.data.errors import DataError

from recforge.data.interactions import InteractionData
from recforge.evaluation.cold_start_report import cold_start_flat, cold_start_leaderboard, cold_start_markdown
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
)
from recforge.evaluation.sessions import evaluate_sessions, session_leaderboard
from recforge.models.registry import get_family
from recforge.pipelines.training.pipeline import ITEM_VECTORS, upstream


def item_side_inputs(family: str) -> dict[str, str]:
    """The datasets a family's item side is built from, as training reads them (`upstream` in
    pipelines/training without the trained models it warm-starts from): {name inside the
    template: catalog dataset}. Evaluation builds the cold test items' content from them."""
    warm = {f"{name}_model" for name in get_family(family).warm_start_from}
    return {name: dataset for name, dataset in upstream(family).items() if name not in warm}


def evaluate_model(
    model: Any,
    train: pd.DataFrame,
    test: pd.DataFrame,
    user_map: pd.DataFrame,
    item_map: pd.DataFrame,
    evaluation: EvaluationConfig,
    *item_side: Any,
) -> dict[str, Any]:
    """Full, sampled, rating and cold-start metrics of one family on the test split.

    `item_side`: the datasets of `item_side_inputs(family)`, in order, from which the cold test
    items' content is built; left out (a caller outside the pipeline), the cold-item slices of
    a family that scores them from content are not evaluated."""
    expected = item_side_inputs(model.name)
    if item_side and len(item_side) != len(expected):
        raise ValueError(f"{model.name}: evaluate_model got {len(item_side)} item-side datasets, "
                         f"expected {len(expected)} ({list(expected.values())})")  # fmt: skip
    given = tuple(item_side) if item_side or not expected else None
    return evaluate_recommender(model, train, test, len(user_map), len(item_map), evaluation,
                                item_side=given, vector_tables=ITEM_VECTORS.get(model.name, ()))  # fmt: skip


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
    cold = cold_start_leaderboard(default, k=k)
    for family, numbers in cold_start_flat(cold, k=k).items():
        flat.setdefault(family, {}).update(numbers)
    md = leaderboard_markdown(board) + "\n" + _section(cold_start_markdown(cold, k, _cold_counts(default)))
    return board, md, leaderboard_figure(board, k=k), flat


def _section(md: str) -> str:
    """A page's Markdown one heading level down, as a section of another page."""
    return md.replace("\n# ", "\n## ").replace("# ", "## ", 1)


def _cold_counts(metrics: dict[str, dict[str, Any] | None]) -> dict[str, Any] | None:
    """One family's `cold_start` metrics: the slices' sizes, the same for every family."""
    return next((m["cold_start"] for m in metrics.values() if m and m.get("cold_start")), None)


def report_cold_start_leaderboard(
    evaluation: EvaluationConfig, **metrics: dict[str, Any] | None
) -> tuple[pd.DataFrame, str]:
    """The cold-start section on its own page: every family's warm, cold-item (all items, cold
    only) and cold-user slices, "–" where the family cannot score one."""
    board = cold_start_leaderboard(metrics, k=evaluation.leaderboard_k)
    return board, cold_start_markdown(board, evaluation.leaderboard_k, _cold_counts(metrics))


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


def evaluate_tag_model(
    model: Any, items: pd.DataFrame, test: pd.DataFrame, item_map: pd.DataFrame, evaluation: EvaluationConfig
) -> dict[str, Any]:
    """Tag recommendation (Gong & Zhang 2016) of the trained `tag_attention_cnn` on the test
    split's cold items — items whose text and tags the model never saw — against tag popularity.
    A source without tags (or without cold items) gets `skipped` with the reason."""
    from recforge.evaluation.tags import evaluate_tags
    from recforge.training.inputs import cold_item_map

    cold = cold_item_map(test, item_map)["item_id"]
    cold = cold[cold.isin(items["item_id"].astype("string"))]
    if not len(cold):
        return {"skipped": "the test split has no cold items with an items-table row"}
    try:
        return evaluate_tags(model, items, cold.tolist(), ks=evaluation.tag_ks)
    except DataError as error:  # no tags, genres or category column in this source
        return {"skipped": str(error)}


def tags_markdown(metrics: dict[str, Any] | None) -> str:
    """The tag-recommendation section: P/R/F1@k of the model and of tag popularity."""
    head = "# Tag recommendation (tag_attention_cnn, cold test items)\n\n"
    if not metrics:
        return head + "Not evaluated: `tag_attention_cnn` has not been trained.\n"
    if "skipped" in metrics:
        return head + f"Not evaluated: {metrics['skipped']}.\n"
    ks = sorted({int(k.split("@")[1]) for k in metrics if k.startswith("precision@")})
    cols = [f"{m}@{k}" for k in ks for m in ("precision", "recall", "f1")]
    lines = [head + f"{int(metrics['n_items'])} items with tags.\n", "| model | " + " | ".join(cols) + " |",
             "|---|" + "---|" * len(cols)]
    for label, prefix in (("tag_attention_cnn", ""), ("tag popularity", "tag_popularity_")):
        lines.append(f"| {label} | " + " | ".join(f"{metrics[prefix + c]:.4f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def report_tasks(rating_md: str, context_md: str, tags: dict[str, Any] | None = None,
                 **ctr_metrics: dict[str, Any] | None) -> str:  # fmt: skip
    """One page with a leaderboard section per task: rating prediction, CTR (from the `ctr`
    pipeline's per-family metrics, when it has run), context-aware top-K and tag recommendation."""
    from recforge.pipelines.ctr.nodes import report_ctr

    if any(ctr_metrics.values()):
        ctr_md = report_ctr(**ctr_metrics)[1]
    else:
        ctr_md = "# CTR leaderboard\n\nNo click model trained yet: `kedro run --pipelines ctr`.\n"
    pages = (rating_md, ctr_md, context_md, tags_markdown(tags))
    sections = [md.replace("\n# ", "\n## ").replace("# ", "## ", 1) for md in pages]
    return "# Leaderboards by task\n\n" + "\n".join(sections)


def report_session_leaderboard(**session_metrics: dict[str, Any]) -> tuple[pd.DataFrame, str]:
    """The session section of the leaderboard: one row per family that can score a prefix."""
    board = session_leaderboard(session_metrics)
    return board, leaderboard_markdown(board, title="Session leaderboard (next-item prediction)")
