"""Batch export of a fitted recommender's lists, as raw-id tables for data/07_model_output/<family>/.

`export_recommendations`: top-K unseen items for every user; `export_similar_items`: top-K most
similar items for every item — implicit's `recommend(..., filter_already_liked_items=True)` and
`similar_items` (Frederickson), run over batches of users / items. Each returns the table and an
`ExportSummary` (rows, short or empty lists, seconds, or why the export was skipped).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from recforge.data.errors import DataError
from recforge.data.idmap import IdMap
from recforge.encoders.ann import AnnConfig

logger = logging.getLogger(__name__)

RECOMMENDATION_COLUMNS = {"user_id": "string", "rank": "int64", "item_id": "string", "score": "float32"}
SIMILAR_COLUMNS = {"item_id": "string", "rank": "int64", "similar_item_id": "string", "score": "float32"}
_SHOWN = 20  # ids named in a summary or an error; the count says how many more


class ServingConfig(BaseModel):
    """The `serving` pipeline's parameters: list lengths and the query batch size."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    k: int = Field(10, gt=0)  # recommendations per user
    similar_k: int = Field(10, gt=0)  # similar items per item
    batch_size: int = Field(2048, gt=0)  # users (items) scored per call
    index: AnnConfig = AnnConfig()  # faiss index for the lists (`encoders.ann`): exact flat by default


@dataclasses.dataclass(frozen=True)
class ExportSummary:
    """What one export wrote: `k_served` is `k` clipped to the catalogue; `n_short` queries got
    fewer than `k_served` rows, `n_empty` got none (the first of them in `empty`)."""

    family: str
    kind: Literal["recommendations", "similar_items"]
    k: int
    k_served: int
    n_queries: int
    n_rows: int
    n_short: int
    n_empty: int
    empty: tuple[str, ...]
    seconds: float
    skipped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "empty": list(self.empty)}


class Export(NamedTuple):
    table: pd.DataFrame
    summary: ExportSummary


class NaNScoresError(ValueError):
    """A model returned NaN scores (a diverged fit): its lists are refused, not written."""

    def __init__(self, family: str, kind: str, ids: list[str]) -> None:
        self.family, self.ids = family, list(ids)
        shown = ", ".join(self.ids[:_SHOWN])
        more = f" (and {len(self.ids) - _SHOWN} more)" if len(self.ids) > _SHOWN else ""
        super().__init__(
            f"{family}: NaN scores for {len(self.ids)} {kind}(s), refusing to export them: {shown}{more}. "
            f"The fit probably diverged: retrain {family} (e.g. with a lower learning rate)"
        )


def _empty(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=t) for c, t in columns.items()})


def _check_size(recommender: Any, attr: str, table: str, n: int) -> None:
    trained = getattr(recommender.network, attr, None)
    if trained is not None and int(trained) != n:
        raise DataError(
            f"{recommender.name} was trained on {int(trained)} {attr[2:]} but the map has {n}",
            source=table, hint="export with the id maps of the split the model was trained on",
        )


def _top_lists(
    query: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    n_queries: int, k: int, batch_size: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Query batches of indices; -> (query idx (R,), rank (R,), result idx (R,), score (R,), NaN
    query indices). Filtered entries (score -inf: seen or the item itself; idx -1) are dropped."""
    rows_q, rows_r, rows_i, rows_s, nan = [], [], [], [], []
    ranks = np.arange(1, k + 1, dtype=np.int64)
    for start in range(0, n_queries, batch_size):
        q = np.arange(start, min(start + batch_size, n_queries), dtype=np.int64)  # (B,)
        idx, sc = query(q, k)  # (B, k'), (B, k'), k' <= k
        idx, sc = np.asarray(idx, dtype=np.int64), np.asarray(sc, dtype=np.float32)
        bad = np.isnan(sc).any(axis=1)  # (B,)
        nan.append(q[bad])
        keep = (idx >= 0) & (sc != -np.inf) & ~bad[:, None]  # (B, k')
        rows_q.append(np.repeat(q, idx.shape[1])[keep.ravel()])
        rows_r.append(np.tile(ranks[: idx.shape[1]], len(q))[keep.ravel()])
        rows_i.append(idx[keep])
        rows_s.append(sc[keep])
    if not rows_q:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z, np.zeros(0, dtype=np.float32), z
    return tuple(np.concatenate(a) for a in (rows_q, rows_r, rows_i, rows_s, nan))  # type: ignore[return-value]


def _summarise(family: str, kind: str, k: int, k_served: int, query_ids: np.ndarray, q: np.ndarray,
               seconds: float, skipped: str | None = None) -> ExportSummary:  # fmt: skip
    counts = np.bincount(q, minlength=len(query_ids))  # (Q,) rows per query
    empty = query_ids[counts == 0]
    summary = ExportSummary(
        family=family, kind=kind, k=k, k_served=k_served, n_queries=len(query_ids), n_rows=int(len(q)),
        n_short=int((counts < k_served).sum()), n_empty=int(len(empty)),
        empty=tuple(str(i) for i in empty[:_SHOWN]), seconds=seconds, skipped=skipped,
    )  # fmt: skip
    if skipped is None and summary.n_empty:
        logger.warning("%s: %d of %d %s queries have nothing left to list (e.g. %s)", family,
                       summary.n_empty, summary.n_queries, kind, ", ".join(summary.empty[:5]))  # fmt: skip
    logger.info("%s: exported %s top-%d for %d queries (%d rows) in %.3f s", family, kind, k_served,
                summary.n_queries, summary.n_rows, seconds)  # fmt: skip
    return summary


def export_recommendations(
    recommender: Any, user_map: pd.DataFrame, item_map: pd.DataFrame, k: int, batch_size: int = 2048,
    index: AnnConfig | None = None,
) -> Export:
    """Top-`k` unseen items for every user of `user_map`: user_id, rank (1 = best), item_id, score.

    The user's training items (the matrix saved with the model) are filtered out, so `k` is
    clipped to the catalogue (`k_served = min(k, n_items)`) and a user who has seen all but m
    items gets m rows; one who has seen everything gets none and is named in the summary (and a
    warning). NaN scores raise `NaNScoresError` naming the family and the users. Users are
    scored `batch_size` at a time through `Recommender.recommend`.
    """
    if k < 1:
        raise ValueError(f"{recommender.name}: k must be >= 1, got {k}")
    started = time.perf_counter()
    users = IdMap.from_frame(user_map, "user").ids  # (U,) raw ids by index
    items = IdMap.from_frame(item_map, "item").ids  # (I,)
    _check_size(recommender, "n_users", "user_map", len(users))
    _check_size(recommender, "n_items", "item_map", len(items))
    k_served = min(k, len(items))

    def query(q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        return recommender.recommend(q, k=kk, filter_already_liked_items=True, index=index)

    q, rank, idx, score, nan = _top_lists(query, len(users), k_served, batch_size)
    if len(nan):
        raise NaNScoresError(recommender.name, "user", [str(u) for u in users[nan]])
    table = pd.DataFrame({"user_id": users[q], "rank": rank, "item_id": items[idx], "score": score})
    table = table.astype(RECOMMENDATION_COLUMNS)
    seconds = time.perf_counter() - started
    return Export(table, _summarise(recommender.name, "recommendations", k, k_served, users, q, seconds))


def export_similar_items(
    recommender: Any, item_map: pd.DataFrame, k: int, batch_size: int = 2048, index: AnnConfig | None = None,
) -> Export:
    """Top-`k` most similar other items for every item: item_id, rank, similar_item_id, score.

    Similarity is `Recommender.similar_items` (cosine of the family's item vectors, the item
    itself excluded), so `k` is clipped to `n_items - 1`. A family without item vectors
    (`item_embeddings()` is None: popularity, random ...) is skipped, not an error: an empty
    table with these columns, a warning, and `summary.skipped` saying why. NaN similarities raise
    `NaNScoresError` naming the family and the query items.
    """
    if k < 1:
        raise ValueError(f"{recommender.name}: k must be >= 1, got {k}")
    started = time.perf_counter()
    items = IdMap.from_frame(item_map, "item").ids  # (I,)
    _check_size(recommender, "n_items", "item_map", len(items))
    k_served = min(k, len(items) - 1)
    if k_served < 1:
        skipped = f"{recommender.name}: a catalogue of {len(items)} item(s) has no other items to list"
    else:
        try:
            recommender.similar_items(np.zeros(1, dtype=np.int64), k=1)
            skipped = None
        except NotImplementedError:
            skipped = f"{recommender.name} has no item vectors"
    if skipped is not None:
        logger.warning("similar items skipped: %s", skipped)
        summary = _summarise(recommender.name, "similar_items", k, 0, items, np.zeros(0, dtype=np.int64),
                             time.perf_counter() - started, skipped=skipped)  # fmt: skip
        return Export(_empty(SIMILAR_COLUMNS), summary)

    def query(q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        return recommender.similar_items(q, k=kk, index=index)

    q, rank, idx, score, nan = _top_lists(query, len(items), k_served, batch_size)
    if len(nan):
        raise NaNScoresError(recommender.name, "item", [str(i) for i in items[nan]])
    table = pd.DataFrame({"item_id": items[q], "rank": rank, "similar_item_id": items[idx], "score": score})
    table = table.astype(SIMILAR_COLUMNS)
    seconds = time.perf_counter() - started
    return Export(table, _summarise(recommender.name, "similar_items", k, k_served, items, q, seconds))
