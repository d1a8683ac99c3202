"""The cold-start slices of a fitted model, and their report across families.

- Per model (`cold_start_metrics`, called by `report.evaluate_recommender`): the cold items'
  content is built by `training.inputs.item_side` from the family's upstream tables
  (`cold_item_content`), then scored by the network's `score_cold_items` / `score_cold_users`
  under the protocol of `evaluation.cold_start` (`cold_start_slices`).
- Report: `cold_start_leaderboard` / `cold_start_markdown` / `cold_start_flat`, with "–" where a
  family cannot score a slice, never a zero.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from recforge.data.interactions import InteractionData
from recforge.encoders.vectors import table_vectors
from recforge.evaluation.cold_start import COLD_START_METRICS, cold_items_of, cold_start_slices
from recforge.models.base import ColdStartUnsupported, RecommenderNetwork
from recforge.training.inputs import chosen_tables
from recforge.training.inputs import item_side as build_item_side

if TYPE_CHECKING:  # report imports this module
    from recforge.evaluation.report import EvaluationConfig

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------ per model
def _refusal(network: Any, method: str) -> str | None:
    """The reason a network without its own `method` (`score_cold_items`, `score_cold_users`)
    gives, from `RecommenderNetwork`'s default; None when its class overrides the hook."""
    if getattr(type(network), method, None) is not getattr(RecommenderNetwork, method):
        return None
    try:
        args = (None, None) if method == "score_cold_items" else (None,)  # (user, content) / (history,)
        getattr(RecommenderNetwork, method)(network, *args)
    except ColdStartUnsupported as e:
        return str(e)
    return None


def cold_item_content(
    recommender: Any, test: pd.DataFrame, item_side: Sequence[Any], vector_tables: Sequence[str] = ()
) -> tuple[Any, int | None]:
    """(the content of the test split's cold items (`cold_items_of`) as the family's
    item side builds it, the number of cold items without content of their own).

    A family without an item side gets an empty (C, 0) tensor: C items, no content. A cold item
    missing from a vector table gets that table's mean vector (`align_item_vectors`, which logs
    the count) and one missing from the items table whatever the family's `item_content` gives
    it. `cold_items_without_content` counts the cold items missing from every table the family
    uses (content2vec's behaviour tables never cover cold items, its image and text tables do),
    or from the items table (None where the family reads neither).
    """
    fam, config = recommender.family, recommender.config
    cold_map = cold_items_of(test)
    content, _ = build_item_side(fam, config, item_side, cold_map, vector_tables)
    if content is None:
        content = torch.zeros(len(cold_map), 0)
    cold_ids = pd.Index(cold_map["item_id"].astype("string"))
    missing = None
    if vector_tables:
        tables = dict(zip(vector_tables, item_side, strict=False))
        lacking = np.ones(len(cold_ids), dtype=bool)
        for name in chosen_tables(fam, config, list(vector_tables)):
            ids = table_vectors(tables[name], "item_id")[0]
            lacking &= ~cold_ids.isin(pd.Index(pd.array(ids, dtype="string")))
        missing = int(lacking.sum())
    elif fam.fields is None and fam.item_content is not None and "items" in fam.content_inputs:
        items = item_side[list(fam.content_inputs).index("items")]
        missing = int((~cold_ids.isin(pd.Index(items["item_id"].astype("string")))).sum())
    if missing:
        logger.warning("%s: %d of %d cold test items have no content of their own (vector tables: mean "
                       "vector; items table: the family's fallback)", fam.name, missing, len(cold_ids))  # fmt: skip
    return content, missing


def cold_start_metrics(
    recommender: Any,
    seen: InteractionData,
    test: pd.DataFrame,
    config: EvaluationConfig,
    warm: dict[str, Any],
    *,
    item_side: Sequence[Any] | None = None,
    vector_tables: Sequence[str] = (),
) -> dict[str, Any]:
    """The cold-start slices of one fitted `Recommender` (`cold_start_slices`):

    - `warm`: NDCG / Recall / HR of the `slices` protocol's warm slice (user and item both with
      >= `min_train` training rows; the leaderboard's warm_ndcg@k), handed in as `warm`;
    - `cold_items_all` / `cold_items_only`: the known users' cold test items ranked among all
      items / among the cold items, scored from the cold items' content (`cold_item_content`);
    - `cold_users`: users unseen in training, by fold-in of their first test rows
      (`config.cold_user_fold_in`).

    A slice the family cannot score is None (the leaderboard writes "–"), with the reason under
    `unsupported`; `cold_items_without_content` counts the cold items scored from a fallback.
    The content of a saved model that does not fit (vectors of another dimension) is an error.
    """
    net = recommender.network
    # a network without its own hook says so at once, even on a split without such users
    refused = {kind: reason for kind, method in (("cold_items", "score_cold_items"), ("cold_users", "score_cold_users"))
               if (reason := _refusal(net, method)) is not None}  # fmt: skip
    cold_item_fn = cold_user_fn = None
    missing = None
    if "cold_items" not in refused:
        if item_side is not None:
            content, missing = cold_item_content(recommender, test, item_side, vector_tables)
            cold_item_fn = _explained(recommender.name, recommender.cold_item_score_fn(content), vector_tables)
        else:
            refused["cold_items"] = (f"{recommender.name} scores cold items from content, and its item side "
                                     "was not handed over: not evaluated")  # fmt: skip
    if "cold_users" not in refused:
        cold_user_fn = recommender.cold_user_score_fn()
    out = cold_start_slices(
        recommender.score_fn(), cold_item_fn, cold_user_fn, seen.csr, test, config.ks,
        fold_in=config.cold_user_fold_in, batch_size=config.batch_size, seed=config.seed,
    )  # fmt: skip
    out["unsupported"] |= refused
    keep = {"n_users"} | {f"{m}@{k}" for m in COLD_START_METRICS for k in config.ks}
    out["warm"] = {name: v for name, v in warm.items() if name in keep}
    out["cold_items_without_content"] = missing
    slices = ("warm", "cold_items_all", "cold_items_only", "cold_users")
    return {name: out[name] for name in slices} | out  # the slices first, then the counts


def _explained(family: str, score: Any, vector_tables: Sequence[str]) -> Any:
    """`score`, with a shape or dtype clash between the cold items' content and the trained
    network (e.g. vector tables re-encoded at another dimension since the model was saved)
    raised as a ValueError that names the family and its tables."""

    def explained(user):
        try:
            return score(user)
        except ColdStartUnsupported:
            raise
        except (RuntimeError, ValueError) as e:
            tables = f" from the {list(vector_tables)} vector tables" if vector_tables else ""
            raise ValueError(f"{family}: the cold test items' content{tables} does not fit the trained "
                             f"model ({e}); retrain it on the current tables") from e  # fmt: skip

    return explained


# ------------------------------------------------------------------ report
# (slice key in the metrics, column prefix, heading)
COLD_START_SLICES = (
    ("warm", "warm", "warm"),
    ("cold_items_all", "cold_items", "cold items (all items)"),
    ("cold_items_only", "cold_items_only", "cold items (cold only)"),
    ("cold_users", "cold_users", "cold users"),
)


def cold_start_leaderboard(metrics: dict[str, dict[str, Any] | None], k: int = 10) -> pd.DataFrame:
    """One row per family with `cold_start` metrics: NDCG@k and Recall@k of each slice (warm, cold
    items ranked among all items, among the cold items only, cold users), None where the family
    cannot score the slice; the slices' user counts and `cold_items_without_content`. Sorted by
    cold-item NDCG@k (all items), then cold-user NDCG@k, families without either last."""
    rows = []
    for family, m in metrics.items():
        cold = (m or {}).get("cold_start")
        if not cold:
            continue
        row: dict[str, Any] = {"family": family}
        for key, prefix, _ in COLD_START_SLICES:
            part = cold.get(key) or {}
            row[f"{prefix}_ndcg@{k}"] = part.get(f"ndcg@{k}")
            row[f"{prefix}_recall@{k}"] = part.get(f"recall@{k}")
            row[f"{prefix}_users"] = part.get("n_users")
        row["cold_items_without_content"] = cold.get("cold_items_without_content")
        rows.append(row)
    columns = ["family"] + [f"{p}_{m}" for _, p, _ in COLD_START_SLICES for m in (f"ndcg@{k}", f"recall@{k}", "users")]
    board = pd.DataFrame(rows, columns=[*columns, "cold_items_without_content"])
    for c in board.columns[1:]:
        board[c] = board[c].astype("Int64" if c.endswith("users") or c == "cold_items_without_content" else float)
    return board.sort_values([f"cold_items_ndcg@{k}", f"cold_users_ndcg@{k}", "family"],
                             ascending=[False, False, True], na_position="last").reset_index(drop=True)  # fmt: skip


def cold_start_flat(board: pd.DataFrame, k: int = 10) -> dict[str, dict[str, float]]:
    """{family: {cold_items_ndcg@k: ..., ...}} for the DVC metrics file; None (cannot) left out.
    The warm slice is already there as the leaderboard's warm_ndcg@k."""
    wanted = [f"{p}_{m}@{k}" for _, p, _ in COLD_START_SLICES[1:] for m in ("ndcg", "recall")]
    return {r["family"]: {c: float(r[c]) for c in wanted if pd.notna(r[c])} for _, r in board.iterrows()}


def cold_start_markdown(board: pd.DataFrame, k: int = 10, counts: dict[str, Any] | None = None) -> str:
    """The cold-start section: NDCG@k per slice, "–" where a family cannot score it.

    `counts`: one family's `cold_start` metrics, for the sizes of the slices (they do not depend on
    the family)."""
    heads = [h for _, _, h in COLD_START_SLICES]
    lines = ["# Cold start", "",
             f"NDCG@{k} per slice of the test split. *warm*: user and item both with enough training "
             "interactions (`min_train`). *cold items*: a known user's test items unseen in training, "
             "scored from their content, ranked among all items (the realistic case) and among the "
             "cold items only. *cold users*: users unseen in training, scored from a fold-in of their "
             "first test interactions (`cold_user_fold_in`), their later ones the targets. "
             "\"–\": the family cannot score that slice (no content model, no fold-in), never a zero.", "",
             "| family | " + " | ".join(f"{h} NDCG@{k}" for h in heads) + " |",
             "|---" * (len(heads) + 1) + "|"]  # fmt: skip
    for _, r in board.iterrows():
        values = [r[f"{p}_ndcg@{k}"] for _, p, _ in COLD_START_SLICES]
        cells = [f"{v:.4f}" if pd.notna(v) else "–" for v in values]
        lines.append(f"| {r['family']} | " + " | ".join(cells) + " |")
    if not len(board):
        lines.append("| – |" + " – |" * len(heads) + " (no family evaluated on the cold-start slices)")
    if counts:
        users = {p: board[f"{p}_users"].dropna() for _, p, _ in COLD_START_SLICES}
        n = {p: int(u.max()) if len(u) else 0 for p, u in users.items()}
        without = board.set_index("family")["cold_items_without_content"].dropna()
        without = without[without > 0]
        lines += ["", f"Users evaluated: warm {n['warm']}, cold items {n['cold_items']} "
                  f"(over {counts.get('n_cold_items', 0)} cold items"
                  + ("; without content of their own, scored from the mean vector: "
                     + ", ".join(f"{int(v)} for {f}" for f, v in without.items()) if len(without) else "")
                  + f"), cold users {n['cold_users']} (of {counts.get('n_cold_users', 0)}; "
                  f"{counts.get('cold_users_without_targets', 0)} left nothing to predict after the "
                  "fold-in)."]  # fmt: skip
    return "\n".join(lines) + "\n"
