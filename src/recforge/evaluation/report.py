"""Evaluate a fitted recommender under every protocol, and gather families into a leaderboard.

One `evaluate_recommender` call gives a family's full-ranking metrics (training items masked),
sampled-ranking metrics (N seeded negatives — reported next to full ranking because the two often
disagree, Krichene & Rendle 2020), rating metrics for explicit families, warm/cold-start slices and
catalogue coverage (the cold-start slices come from `evaluation.cold_start`).
`build_leaderboard` turns the per-family dicts into one table.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from recforge.data.interactions import InteractionData
from recforge.evaluation.context import context_ranking, model_context_fn, popularity_in_context
from recforge.evaluation.metrics import catalogue_coverage, mae, rmse
from recforge.evaluation.cold_start_report import cold_start_metrics
from recforge.evaluation.protocols import (
    evaluate_slices,
    rank_users,
    rating_prediction,
    sampled_ranking,
)

logger = logging.getLogger(__name__)


class EvaluationConfig(BaseModel):
    """How every family is evaluated: the same K's, negatives and seed for all."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ks: tuple[int, ...] = Field((5, 10, 20), min_length=1)
    n_negatives: int = Field(99, gt=0)
    seed: int = Field(0, ge=0)
    min_train: int = Field(5, ge=1)
    batch_size: int = Field(1024, gt=0)
    leaderboard_k: int = Field(10, gt=0)
    # cold users: the share of each one's test rows (over known items, in time order; at least
    # one) that forms the fold-in history; the rest are the targets (`cold_start.fold_in_users`)
    cold_user_fold_in: float = Field(0.5, gt=0.0, lt=1.0)
    tag_ks: tuple[int, ...] = Field((1, 3, 5), min_length=1)  # tag recommendation: P/R/F1@k


def evaluate_recommender(
    recommender: Any,
    train: pd.DataFrame,
    test: pd.DataFrame,
    n_users: int,
    n_items: int,
    config: EvaluationConfig,
    *,
    item_side: Sequence[Any] | None = None,
    vector_tables: Sequence[str] = (),
) -> dict[str, Any]:
    """Every protocol for one fitted `Recommender` on a test split (frames with *_idx columns).

    `item_side`: the family's upstream item datasets as training read them (the vector tables
    named `vector_tables`, a field-aware family's feature tables, or its `content_inputs`; empty
    for a family without any), from which `training.inputs.item_side` builds the cold test items'
    content for `cold_start`; None when not handed over (the cold-item slices of a family that
    scores them from content are then not evaluated). See `cold_start_metrics`.
    """
    seen = InteractionData.from_frame(train, n_users, n_items, name="train")
    test_data = InteractionData.from_frame(test, n_users, n_items, name="test")
    score_fn = recommender.score_fn()
    out: dict[str, Any] = {"family": recommender.name, "n_test_interactions": int(len(test))}

    ranked = rank_users(score_fn, seen.csr, test_data, config.ks, batch_size=config.batch_size)
    out["full"] = ranked.summary()
    k = config.leaderboard_k
    topk = ranked.topk[:, : min(k, ranked.topk.shape[1])]
    out["full"][f"coverage@{k}"] = float(catalogue_coverage(topk, n_items))

    out["sampled"] = sampled_ranking(
        recommender.pair_score_fn(), seen.csr, test_data, n_negatives=config.n_negatives,
        seed=config.seed, ks=config.ks, batch_size=config.batch_size,
    )
    if recommender.uses_ratings:
        ratings = InteractionData.from_frame(test, n_users, n_items, events=("rating",))
        out["rating"] = (
            rating_prediction(recommender.pair_score_fn(), ratings, binary=False) if len(ratings) else {}
        )
    in_context = model_context_fn(recommender)
    if in_context is not None:  # a field-aware family reading the event's hour / weekday
        out["context"] = context_ranking(in_context, test_data, seen=seen.csr, batch_size=config.batch_size)
    out["slices"] = evaluate_slices(
        score_fn, seen, test, config.ks, min_train=config.min_train, batch_size=config.batch_size
    )
    out["cold_start"] = cold_start_metrics(recommender, seen, test, config, out["slices"]["warm"],
                                           item_side=item_side, vector_tables=vector_tables)  # fmt: skip
    history = getattr(recommender, "history", None)
    if history is not None:
        h = history.to_dict()
        out["fit"] = {
            "epochs": len(h.get("loss", [])),
            "best_epoch": h.get("best_epoch"),
            "seconds": _fit_seconds(recommender, h),
            "samples_per_s": float(np.median(h["samples_per_s"])) if h.get("samples_per_s") else None,
        }
    return _finite(out)


def _fit_seconds(recommender: Any, history: dict[str, Any]) -> float:
    """The whole fit's wall time when the model recorded it, else the sum of its epochs."""
    total = getattr(recommender, "fit_seconds", None)
    return float(total) if total is not None else float(np.sum(history.get("seconds", []) or [0.0]))


LEADERBOARD_COLUMNS = ("ndcg", "hr", "recall", "precision", "map", "mrr")


def _leaderboard_row(family: str, m: dict[str, Any], k: int) -> dict[str, Any]:
    full, sampled = m.get("full", {}), m.get("sampled", {})
    row: dict[str, Any] = {"family": family}
    for name in LEADERBOARD_COLUMNS:
        row[f"{name}@{k}"] = full.get(f"{name}@{k}")
    row[f"sampled_hr@{k}"] = sampled.get(f"hr@{k}")
    row[f"sampled_ndcg@{k}"] = sampled.get(f"ndcg@{k}")
    row[f"coverage@{k}"] = full.get(f"coverage@{k}")
    row["rmse"] = m.get("rating", {}).get("rmse")
    row["mae"] = m.get("rating", {}).get("mae")
    warm = m.get("slices", {}).get("warm", {})
    row[f"warm_ndcg@{k}"] = warm.get(f"ndcg@{k}")
    row["fit_seconds"] = m.get("fit", {}).get("seconds")
    row["epochs"] = m.get("fit", {}).get("epochs")
    return row


def build_leaderboard(
    metrics: dict[str, dict[str, Any]], k: int = 10, tuned: dict[str, dict[str, Any] | None] | None = None
) -> pd.DataFrame:
    """One row per family: full-ranking metrics @k, sampled HR/NDCG @k, RMSE/MAE, coverage, time.

    `tuned` holds the test metrics of families refitted with their tuned parameters (None for a
    family never tuned): each gets a `variant: tuned` row right below its `default` row, with
    the study's trial count and tuning wall time. A tuned result evaluated on another test
    split than the default one (an old study after the data changed) is left out, with a
    warning. Sorted by the default rows' full-ranking NDCG@k, best first.
    """
    rows = []
    for family, m in metrics.items():
        row = _leaderboard_row(family, m, k)
        rows.append({**row, "variant": "default", "trials": None, "tuning_seconds": None})
        t = (tuned or {}).get(family)
        if not t:
            continue
        if t.get("n_test_interactions") != m.get("n_test_interactions"):
            logger.warning(
                "leaderboard: %s's tuned metrics are on %s test interactions, the default on %s; "
                "left out (re-run `kedro run --pipelines tuning,tuned --namespaces %s`)",
                family, t.get("n_test_interactions"), m.get("n_test_interactions"), family,
            )  # fmt: skip
            continue
        study = t.get("tuning", {})
        rows.append({**_leaderboard_row(family, t, k), "variant": "tuned", "trials": study.get("n_trials"),
                     "tuning_seconds": study.get("tuning_seconds")})  # fmt: skip
    board = pd.DataFrame(rows)
    if len(board):
        order = [c for c in board.columns if c not in ("variant", "trials", "tuning_seconds")]
        board = board[order[:1] + ["variant"] + order[1:] + ["trials", "tuning_seconds"]]
        key = board["family"].map(board[board["variant"] == "default"].set_index("family")[f"ndcg@{k}"])
        board = (
            board.assign(_key=key.astype(float), _tuned=board["variant"] == "tuned")
            .sort_values(["_key", "family", "_tuned"], ascending=[False, True, True], na_position="last")
            .drop(columns=["_key", "_tuned"])
            .reset_index(drop=True)
        )
        board["trials"] = board["trials"].astype("Int64")
    return board


def leaderboard_label(row: Any) -> str:
    """`bpr` for a default row, `bpr (tuned)` for a tuned one."""
    return row["family"] if row.get("variant", "default") == "default" else f"{row['family']} ({row['variant']})"


def leaderboard_markdown(board: pd.DataFrame, title: str = "Leaderboard") -> str:
    """The leaderboard as a Markdown table (4 significant decimals, '–' for not applicable)."""
    cols = list(board.columns)
    lines = [f"# {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in board.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
                cells.append("–")
            elif isinstance(v, float):
                cells.append(f"{v:.1f}" if c in ("fit_seconds", "tuning_seconds") else f"{v:.4f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Full ranking: every item ranked, the user's training items masked. Sampled: the test item "
        "among seeded negatives. RMSE/MAE only for families trained on ratings. `tuned` rows: the "
        "family refitted with the best parameters of its Optuna study (tuned on the valid split; "
        "`trials` finished trials, `tuning_seconds` the wall time of the run that found them).",
    ]
    return "\n".join(lines) + "\n"


def leaderboard_figure(board: pd.DataFrame, k: int = 10):
    """A horizontal bar chart of full-ranking NDCG@k and sampled HR@k per family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 0.45 * max(len(board), 4) + 1.2), sharey=True)
    order = board.iloc[::-1]
    for ax, col, label in (
        (axes[0], f"ndcg@{k}", f"full-ranking NDCG@{k}"),
        (axes[1], f"sampled_hr@{k}", f"sampled HR@{k}"),
    ):
        ax.barh([leaderboard_label(r) for _, r in order.iterrows()], order[col].astype(float).fillna(0.0), color="#4c72b0")
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("recforge leaderboard")
    fig.tight_layout()
    return fig


def _finite(obj: Any) -> Any:
    """JSON-safe: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ------------------------------------------------------------------ the rating task
def rating_baselines(train: pd.DataFrame, test: pd.DataFrame) -> dict[str, dict[str, float]]:
    """RMSE / MAE on the test ratings of predicting the global mean rating of train, and each
    item's mean train rating (the global mean for items without one), over the test ratings of
    known users and items, as the families' rating metrics are."""
    rated = train[train["event"].astype("string") == "rating"] if "event" in train.columns else train
    target = test[test["event"].astype("string") == "rating"] if "event" in test.columns else test
    if {"user_idx", "item_idx"} <= set(target.columns):  # the rows the families are judged on:
        target = target[(target["user_idx"] >= 0) & (target["item_idx"] >= 0)]  # no cold users / items
    if not len(rated) or not len(target):
        return {}
    mu = float(rated["value"].mean())
    by_item = rated.groupby("item_id")["value"].mean()
    y = target["value"].to_numpy(dtype=np.float64)
    item = target["item_id"].map(by_item).fillna(mu).to_numpy(dtype=np.float64)
    glob = np.full(len(y), mu)
    return {name: {"rmse": rmse(y, p), "mae": mae(y, p), "n": int(len(y))}
            for name, p in (("global mean", glob), ("item mean", item))}  # fmt: skip


def rating_leaderboard(metrics: dict[str, dict[str, Any]], baselines: dict[str, dict[str, float]]) -> pd.DataFrame:
    """The families judged on ratings (their `rating` metrics) with the baselines, best RMSE first."""
    rows = [{"family": f, "rmse": m["rating"]["rmse"], "mae": m["rating"]["mae"], "n": m["rating"].get("n"),
             "baseline": False} for f, m in metrics.items() if m and m.get("rating")]  # fmt: skip
    rows += [{"family": name, **b, "baseline": True} for name, b in baselines.items()]
    board = pd.DataFrame(rows, columns=["family", "rmse", "mae", "n", "baseline"])
    return board.sort_values("rmse", kind="stable").reset_index(drop=True)


def rating_markdown(board: pd.DataFrame) -> str:
    lines = ["# Rating prediction", "",
             "RMSE and MAE on the test split's rating events, for the families trained on ratings "
             "(`mf`, and `objective: mse` for the field-aware ones), with two baselines: the global "
             "mean rating of train and each item's mean train rating.", "",
             "| family | RMSE | MAE | ratings |", "|---|---|---|---|"]  # fmt: skip
    for _, r in board.iterrows():
        name = f"*{r['family']}* (baseline)" if r["baseline"] else r["family"]
        lines.append(f"| {name} | {r['rmse']:.4f} | {r['mae']:.4f} | {int(r['n']) if pd.notna(r['n']) else '–'} |")
    if not len(board):
        lines.append("| – | – | – | no rating events in this split |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ context-aware top-K
CONTEXT_COLUMNS = ("recall@5", "recall@10", "map@5", "map@10", "ndcg@5", "ndcg@20")


def context_leaderboard(
    metrics: dict[str, dict[str, Any]], train: InteractionData, test: InteractionData
) -> pd.DataFrame:
    """Families whose rows read the event's context (their `context` metrics), with popularity in
    the event's hour and weekday as baselines."""
    rows = [{"family": f, **{c: m["context"][c] for c in CONTEXT_COLUMNS}, "baseline": False}
            for f, m in metrics.items() if m and m.get("context")]  # fmt: skip
    if rows and len(test):
        for part in ("hour", "weekday"):
            b = context_ranking(popularity_in_context(train, part), test)
            rows.append({"family": f"popularity in {part}", **{c: b[c] for c in CONTEXT_COLUMNS}, "baseline": True})
    board = pd.DataFrame(rows, columns=["family", *CONTEXT_COLUMNS, "baseline"])
    return board.sort_values("ndcg@20", ascending=False, kind="stable").reset_index(drop=True)


def context_markdown(board: pd.DataFrame) -> str:
    lines = ["# Context-aware top-K", "",
             "Each test event ranks every item for its own user and time (hour of day, weekday): "
             "deck 002 Assignment II's metrics. Only families whose feature tables declare `context`.", "",
             "| family | " + " | ".join(CONTEXT_COLUMNS) + " |", "|---" * (len(CONTEXT_COLUMNS) + 1) + "|"]  # fmt: skip
    for _, r in board.iterrows():
        name = f"*{r['family']}* (baseline)" if r["baseline"] else r["family"]
        lines.append(f"| {name} | " + " | ".join(f"{r[c]:.4f}" for c in CONTEXT_COLUMNS) + " |")
    if not len(board):
        lines.append("| – |" + " – |" * len(CONTEXT_COLUMNS) + " (no family reads the event context)")
    return "\n".join(lines) + "\n"
