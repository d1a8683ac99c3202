"""Evaluation protocols: full ranking, sampled ranking, rating prediction, cold-start slices.

Every protocol takes plain callables, so it works for any network (wrap `score_all` / `forward`)
and for baselines that are not networks at all:

- `ScoreFn(user (B,), history (B, n_items)) -> (B, n_items)` scores every item for a batch of
  users; `history` is their dense training rows.
- `PairScoreFn(user (N,), item (N,)) -> (N,)` scores given (user, item) pairs.
- `ColdItemScoreFn(user (B,)) -> (B, C)` scores the C items of the test split unseen in training
  (`cold_items_of`), from their content; `ColdUserScoreFn(history (B, n_items)) -> (B, n_items)`
  scores users unseen in training from a fold-in history. Both may raise
  `models.base.ColdStartUnsupported`: the cold-start slices then report None, not zero.

Protocols run under `torch.no_grad()`; putting a network in eval mode is the caller's job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recforge.data.errors import DataError
from recforge.data.interactions import InteractionData
from recforge.evaluation.metrics import (
    auc,
    log_loss,
    mae,
    mean_over,
    per_user_auc,
    ranking_metrics_per_user,
    rmse,
    single_target_metrics,
)
from recforge.models.base import ColdStartUnsupported
from recforge.training.samplers import candidate_sets

logger = logging.getLogger(__name__)

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PairScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Split = InteractionData | sp.spmatrix | sp.sparray


def _binary_csr(split: Split) -> sp.csr_matrix:
    if isinstance(split, InteractionData):
        return split.csr
    m = sp.csr_matrix(split, dtype=np.float32, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    m.data[:] = 1.0
    m.sort_indices()
    return m


def _train_csr(train: Split) -> sp.csr_matrix:
    # Keep the training values: `history` is what the model saw (counts, ratings or 1s).
    m = train.csr if isinstance(train, InteractionData) else sp.csr_matrix(train, dtype=np.float32)
    if not m.has_sorted_indices:
        m = m.copy()
        m.sort_indices()
    return m


def _check_shapes(train: sp.csr_matrix, test: sp.csr_matrix) -> None:
    if train.shape != test.shape:
        raise DataError(
            f"train is {train.shape[0]} users x {train.shape[1]} items but test is "
            f"{test.shape[0]} x {test.shape[1]}",
            source="test",
            hint="Both splits must use the id maps fitted on train",
        )


# ----------------------------------------------------------------------------- full ranking
@dataclass(frozen=True)
class RankingResult:
    """What a full-ranking run produced: the users, their top-K lists and per-user metrics.

    `topk[r]` are the items recommended to `users[r]`, best first (-1 where fewer than K unseen
    items were left); `per_user[name][r]` is that user's metric.
    """

    users: np.ndarray  # (U,) int64 user_idx
    topk: np.ndarray  # (U, K) int64 item_idx
    per_user: dict[str, np.ndarray]  # name -> (U,) float64

    def summary(self) -> dict[str, float]:
        """Means over the evaluated users, plus `n_users`."""
        return mean_over(self.per_user, np.ones(len(self.users), dtype=bool))


def recommend_top_k(
    score_fn: ScoreFn,
    train: Split,
    users: np.ndarray,
    k: int,
    *,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    scores_hook: Callable[[np.ndarray, torch.Tensor], None] | None = None,
) -> np.ndarray:
    """(U, k) best unseen items for `users`, best first; training items are never recommended.

    Training items get a score of -inf before `torch.topk`; slots that could only be filled with
    -inf scores (the user has seen almost everything) hold -1. `scores_hook(users, scores)`, if
    given, sees each batch's masked scores (used for per-user AUC).
    """
    train_csr = _train_csr(train)
    users = np.asarray(users, dtype=np.int64)
    n_items = train_csr.shape[1]
    k_eff = min(k, n_items)
    out = np.full((len(users), k), -1, dtype=np.int64)
    with torch.no_grad():
        for start in range(0, len(users), batch_size):
            u = users[start : start + batch_size]  # (B,)
            rows = train_csr[u]
            b = len(u)
            r = torch.from_numpy(np.repeat(np.arange(b, dtype=np.int64), np.diff(rows.indptr))).to(device)
            c = torch.from_numpy(rows.indices.astype(np.int64)).to(device)  # (nnz,)
            history = torch.zeros(b, n_items, device=device)  # (B, n_items)
            history[r, c] = torch.from_numpy(rows.data.astype(np.float32)).to(device)
            scores = score_fn(torch.from_numpy(u).to(device), history).float().contiguous()  # (B, n_items)
            scores[r, c] = -torch.inf
            if scores_hook is not None:
                scores_hook(u, scores)
            val, idx = torch.topk(scores, k_eff, dim=1)  # (B, k_eff)
            idx = torch.where(val == -torch.inf, -1, idx)
            out[start : start + b, :k_eff] = idx.cpu().numpy()
    return out


def rank_users(
    score_fn: ScoreFn,
    train: Split,
    test: Split,
    ks: Iterable[int] = (5, 10, 20),
    *,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    with_auc: bool = False,
) -> RankingResult:
    """Full ranking of every item for each user with >= 1 test item, with per-user metrics.

    Relevant items are the user's test items; training items are masked (so a test item the user
    also had in train cannot be hit). `with_auc` adds per-user AUC over all unseen items.
    """
    ks = tuple(int(k) for k in ks)
    train_csr, test_csr = _train_csr(train), _binary_csr(test)
    _check_shapes(train_csr, test_csr)
    users = np.flatnonzero(np.diff(test_csr.indptr) > 0).astype(np.int64)  # (U,)
    aucs: list[np.ndarray] = []

    def keep_auc(u: np.ndarray, scores: torch.Tensor) -> None:
        aucs.append(per_user_auc(scores, test_csr[u], train_csr[u]))

    t0 = time.perf_counter()
    topk = recommend_top_k(
        score_fn, train_csr, users, max(ks), batch_size=batch_size, device=device,
        scores_hook=keep_auc if with_auc else None,
    )
    per_user = ranking_metrics_per_user(topk, test_csr[users], ks)
    if with_auc:
        per_user["auc"] = np.concatenate(aucs) if aucs else np.zeros(0)
    logger.debug("full ranking of %d users x %d items in %.3fs", len(users), test_csr.shape[1],
                 time.perf_counter() - t0)
    return RankingResult(users=users, topk=topk, per_user=per_user)


def full_ranking(
    score_fn: ScoreFn,
    train_csr: Split,
    test: Split,
    ks: Iterable[int] = (5, 10, 20),
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    *,
    with_auc: bool = False,
) -> dict[str, float]:
    """Mean HR/Recall/Precision/MAP/NDCG/MRR@K over users with >= 1 test item, plus `n_users`.

    See `rank_users` for the per-user top-K lists and metrics, and `metrics` for the definitions.
    """
    return rank_users(
        score_fn, train_csr, test, ks, batch_size=batch_size, device=device, with_auc=with_auc
    ).summary()


# -------------------------------------------------------------------------- sampled ranking
def _check_enough_unseen(users: np.ndarray, seen: sp.csr_matrix, n_negatives: int) -> None:
    unseen = seen.shape[1] - np.diff(seen.indptr)[users]  # (N,)
    short = unseen < n_negatives
    if short.any():
        bad = np.unique(users[short])
        raise DataError(
            f"{len(bad)} user(s) have fewer than {n_negatives} items they never interacted with",
            column="user_idx",
            rows=bad.tolist(),
            hint="Lower n_negatives or use full_ranking",
        )


def sampled_ranking(
    score_pairs_fn: PairScoreFn,
    train_csr: Split,
    test: Split,
    n_negatives: int = 99,
    seed: int = 0,
    ks: Iterable[int] = (1, 5, 10),
    *,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """HR/NDCG/MRR@K of each test pair's item ranked among `n_negatives` sampled items.

    Each distinct test (user, item) pair gets its own `n_negatives` distinct items, seeded by
    `seed`, that the user has in neither train nor test (He et al., 2017, "Neural Collaborative
    Filtering"), drawn by `training.samplers.candidate_sets`. Ties count against the positive
    (rank = negatives scoring >= it), so a constant scorer gets no credit. Means are over pairs;
    `n_pairs` and `n_users` are returned too. Raises `DataError` naming the users who have fewer
    than `n_negatives` unseen items.
    """
    train_bin, test_csr = _binary_csr(train_csr), _binary_csr(test)
    _check_shapes(train_bin, test_csr)
    seen = _binary_csr(train_bin + test_csr)
    users = np.repeat(np.arange(test_csr.shape[0], dtype=np.int64), np.diff(test_csr.indptr))  # (N,)
    items = test_csr.indices.astype(np.int64)  # (N,)
    _check_enough_unseen(users, seen, n_negatives)
    cand = candidate_sets(users, items, seen, n_neg=n_negatives, seed=seed)  # (N, 1 + n), positive first

    ranks = np.empty(len(users), dtype=np.int64)
    with torch.no_grad():
        for start in range(0, len(users), batch_size):
            c = torch.from_numpy(cand[start : start + batch_size]).to(device)  # (B, 1 + n)
            u = torch.from_numpy(users[start : start + batch_size]).to(device)  # (B,)
            u = u[:, None].expand_as(c)  # (B, 1 + n)
            s = score_pairs_fn(u.reshape(-1), c.reshape(-1)).float().view(c.shape)  # (B, 1 + n)
            ranks[start : start + len(c)] = (s[:, 1:] >= s[:, :1]).sum(dim=1).cpu().numpy()
    out = mean_over(single_target_metrics(ranks, ks), np.ones(len(ranks), dtype=bool))
    out["n_pairs"] = out.pop("n_users")
    out["n_users"] = int(np.count_nonzero(np.diff(test_csr.indptr)))
    return out


# ------------------------------------------------------------------------ rating prediction
def rating_prediction(
    predict_fn: PairScoreFn,
    test: InteractionData,
    *,
    batch_size: int = 65536,
    device: str | torch.device = "cpu",
    binary: bool | None = None,
    logits: bool = False,
) -> dict[str, float]:
    """RMSE and MAE of predicted values against `test.value`, plus `n`.

    For binary targets (`binary=None` detects values in {0, 1}) also AUC and log-loss; the
    predictions are then probabilities, or logits when `logits=True` (a sigmoid is applied and
    RMSE/MAE are of the probabilities).
    """
    y = test.value.astype(np.float64)  # (N,)
    pred = np.empty(len(test), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(test), batch_size):
            u = torch.from_numpy(test.user_idx[start : start + batch_size]).to(device)  # (B,)
            i = torch.from_numpy(test.item_idx[start : start + batch_size]).to(device)  # (B,)
            p = predict_fn(u, i).float()  # (B,)
            if logits:
                p = torch.sigmoid(p)
            pred[start : start + len(u)] = p.cpu().numpy()
    out: dict[str, float] = {"rmse": rmse(y, pred), "mae": mae(y, pred), "n": len(test)}
    is_binary = bool(np.isin(y, (0.0, 1.0)).all()) if binary is None else binary
    if is_binary and 0 < y.sum() < len(y):
        out["auc"] = auc(pred[y == 1], pred[y == 0])
        out["logloss"] = log_loss(y, pred)
    return out


# ---------------------------------------------------------------------------------- slices
def evaluate_slices(
    score_fn: ScoreFn,
    train: InteractionData,
    test_frame: pd.DataFrame,
    ks: Iterable[int] = (5, 10, 20),
    *,
    min_train: int = 5,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> dict[str, dict[str, float]]:
    """Full-ranking metrics on warm and cold-start slices of a test split frame.

    A test row's user (item) is
    - *cold* when its `user_idx` (`item_idx`) is -1: unknown to the train id map, so an id-only
      model cannot score it at all;
    - *few-shot* when known but with fewer than `min_train` interactions (rows) in train;
    - *warm* otherwise.

    Returns one entry per slice: `all` (every row with a known user and item), `warm` (warm user
    and warm item), `few_shot_users` (known item, few-shot user) and `few_shot_items` (known user,
    few-shot item) hold the metric means, `n_users` and the slice's `n_interactions` and `share`
    of all test rows; `cold_users` and `cold_items` hold only their `n_interactions`, `share`
    and (when `user_id`/`item_id` columns are present) distinct `n_users`/`n_items`. A user's
    top-K is computed once over every item; each slice only changes which test items count as
    relevant and which users are averaged.
    """
    ks = tuple(int(k) for k in ks)
    u = test_frame["user_idx"].to_numpy(dtype=np.int64)  # (N,)
    i = test_frame["item_idx"].to_numpy(dtype=np.int64)  # (N,)
    n = len(u)
    cold_user, cold_item = u < 0, i < 0
    known = ~cold_user & ~cold_item
    user_count = np.bincount(train.user_idx, minlength=train.n_users)  # (n_users,)
    item_count = np.bincount(train.item_idx, minlength=train.n_items)  # (n_items,)
    few_user = known & (user_count[np.where(cold_user, 0, u)] < min_train)
    few_item = known & (item_count[np.where(cold_item, 0, i)] < min_train)
    rows = {
        "all": known,
        "warm": known & ~few_user & ~few_item,
        "few_shot_users": few_user,
        "few_shot_items": few_item,
    }

    users = np.unique(u[known])  # (U,)
    topk = recommend_top_k(score_fn, train, users, max(ks), batch_size=batch_size, device=device)

    def share(mask: np.ndarray) -> dict[str, float]:
        c = int(mask.sum())
        return {"n_interactions": c, "share": c / n if n else float("nan")}

    out: dict[str, dict[str, float]] = {}
    for name, mask in rows.items():
        relevant = sp.csr_matrix(
            (np.ones(int(mask.sum()), dtype=np.float32), (u[mask], i[mask])),
            shape=(train.n_users, train.n_items),
        )[users]  # (U, n_items), rows aligned with topk
        relevant.data[:] = 1.0
        per_user = ranking_metrics_per_user(topk, relevant, ks)
        out[name] = mean_over(per_user, np.diff(relevant.indptr) > 0) | share(mask)
    for name, mask, id_col, count in (
        ("cold_users", cold_user, "user_id", "n_users"),
        ("cold_items", cold_item, "item_id", "n_items"),
    ):
        out[name] = share(mask)
        if id_col in test_frame.columns:
            out[name][count] = int(test_frame.loc[mask, id_col].nunique())
    logger.info(
        "slices: %d test rows, %.1f%% cold users, %.1f%% cold items, %.1f%% few-shot users, "
        "%.1f%% few-shot items (min_train=%d)", n, 100 * out["cold_users"]["share"],
        100 * out["cold_items"]["share"], 100 * out["few_shot_users"]["share"],
        100 * out["few_shot_items"]["share"], min_train,
    )
    return out


# ------------------------------------------------------------------------------ cold start
ColdItemScoreFn = Callable[[torch.Tensor], torch.Tensor]
ColdUserScoreFn = Callable[[torch.Tensor], torch.Tensor]
# what the cold-start slices report per K: NDCG, Recall and HR
COLD_START_METRICS = ("ndcg", "recall", "hr")


def cold_items_of(test_frame: pd.DataFrame) -> pd.DataFrame:
    """`item_id`, `item_idx` (0..C-1) of the test rows' items unknown to train (`item_idx` -1), in
    first-seen order: for a split's test frame the same map as
    `training.inputs.cold_item_map(test, item_map)`, made without the item map."""
    for col in ("item_id", "item_idx"):
        if col not in test_frame.columns:
            raise DataError(f"the test split has no {col} column: cold items cannot be named",
                            source="test", column=col)  # fmt: skip
    cold = test_frame["item_idx"].to_numpy() < 0
    ids = pd.Series(test_frame.loc[cold, "item_id"].astype("string").unique())
    return pd.DataFrame({"item_id": ids, "item_idx": range(len(ids))})


def _dense_rows(csr: sp.csr_matrix, rows: np.ndarray, device: str | torch.device) -> tuple[torch.Tensor, ...]:
    """(B, n_items) dense `csr[rows]` on `device`, and the (row, column) of its non-zeros."""
    part = csr[rows]
    b = len(rows)
    r = torch.from_numpy(np.repeat(np.arange(b, dtype=np.int64), np.diff(part.indptr))).to(device)  # (nnz,)
    c = torch.from_numpy(part.indices.astype(np.int64)).to(device)  # (nnz,)
    dense = torch.zeros(b, csr.shape[1], device=device)  # (B, n_items)
    dense[r, c] = torch.from_numpy(part.data.astype(np.float32)).to(device)
    return dense, r, c


def _top_k_ties_shuffled(scores: torch.Tensor, k: int, generator: torch.Generator) -> np.ndarray:
    """(B, k) column indices of the best scores, best first, -1 for -inf or missing slots.

    Equal scores are ordered at random, independently per row (`generator`), not by column: the
    cold items are listed by their first test interaction, and a constant scorer (popularity
    over items it never saw) would otherwise be handed the earliest released ones."""
    b, n = scores.shape
    out = np.full((b, k), -1, dtype=np.int64)
    if n == 0:
        return out
    shuffle = torch.rand(b, n, generator=generator).argsort(dim=1).to(scores.device)  # (B, n)
    shuffled = scores.gather(1, shuffle)  # (B, n)
    order = shuffled.sort(dim=1, descending=True, stable=True).indices[:, :k]  # (B, k')
    val = shuffled.gather(1, order)
    idx = torch.where(val == -torch.inf, -1, shuffle.gather(1, order))
    out[:, : idx.shape[1]] = idx.cpu().numpy()
    return out


def _cold_start_summary(topk: np.ndarray, relevant: sp.csr_matrix, ks: tuple[int, ...]) -> dict[str, float]:
    per_user = ranking_metrics_per_user(topk, relevant, ks)
    kept = {name: v for name, v in per_user.items() if name.split("@")[0] in COLD_START_METRICS}
    return mean_over(kept, np.diff(relevant.indptr) > 0)


def cold_item_ranking(
    score_fn: ScoreFn,
    cold_score_fn: ColdItemScoreFn,
    train: Split,
    test_frame: pd.DataFrame,
    ks: Iterable[int] = (5, 10, 20),
    *,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """NDCG / Recall / HR @K of the cold items of each known test user, two ways:

    - `all_items`: the realistic case: every training item (`score_fn`, the user's training
      items masked) and every cold item of the test split (`cold_score_fn(user) -> (B, C)`, on
      the same scale, C = `cold_items_of(test_frame)`) ranked together;
    - `cold_only`: the cold items alone.

    Relevant items are the user's cold test items only (her warm test items compete in the
    all-items ranking like any other item, as in `evaluate_slices`). Users: those known to train
    with >= 1 cold test item; each slice holds its means and `n_users`. Ties are broken in a
    seeded random order per user (`seed`), so a constant scorer gets chance level.
    `cold_score_fn` may raise `models.base.ColdStartUnsupported` (`cold_start_slices` turns that
    into None).
    """
    ks = tuple(int(k) for k in ks)
    k = max(ks)
    train_csr = _train_csr(train)
    n_items = train_csr.shape[1]
    cold_map = cold_items_of(test_frame)
    n_cold = len(cold_map)
    u = test_frame["user_idx"].to_numpy(dtype=np.int64)  # (N,)
    rows = (u >= 0) & (test_frame["item_idx"].to_numpy() < 0)
    col = pd.Index(cold_map["item_id"]).get_indexer(test_frame.loc[rows, "item_id"].astype("string"))  # (n,)
    users = np.unique(u[rows])  # (U,)
    row = np.searchsorted(users, u[rows])
    relevant = sp.csr_matrix((np.ones(len(row), np.float32), (row, col)), shape=(len(users), n_cold))
    relevant.sum_duplicates()
    relevant.data[:] = 1.0
    if not len(users):
        return {"all_items": {"n_users": 0}, "cold_only": {"n_users": 0}}

    g = torch.Generator().manual_seed(seed)
    topk_all = np.full((len(users), k), -1, dtype=np.int64)
    topk_cold = np.full((len(users), k), -1, dtype=np.int64)
    with torch.no_grad():
        for start in range(0, len(users), batch_size):
            ub = users[start : start + batch_size]  # (B,)
            history, r, c = _dense_rows(train_csr, ub, device)
            user = torch.from_numpy(ub).to(device)
            warm = score_fn(user, history).float().contiguous()  # (B, n_items)
            warm[r, c] = -torch.inf
            cold = cold_score_fn(user).float()  # (B, C)
            if cold.shape != (len(ub), n_cold):
                raise ValueError(f"cold-item scores of shape {tuple(cold.shape)} for {len(ub)} users x "
                                 f"{n_cold} cold items")  # fmt: skip
            cold = cold.to(warm.device)
            topk_all[start : start + len(ub)] = _top_k_ties_shuffled(torch.cat([warm, cold], dim=1), k, g)
            topk_cold[start : start + len(ub)] = _top_k_ties_shuffled(cold, k, g)
    shifted = sp.csr_matrix((relevant.data, relevant.indices + n_items, relevant.indptr),
                            shape=(len(users), n_items + n_cold))  # fmt: skip
    return {
        "all_items": _cold_start_summary(topk_all, shifted, ks),
        "cold_only": _cold_start_summary(topk_cold, relevant, ks),
    }


@dataclass(frozen=True)
class FoldIn:
    """The cold users of a test frame split into fold-in histories and targets (`fold_in_users`)."""

    user_ids: np.ndarray  # (U,) raw ids of the evaluated cold users
    history: sp.csr_matrix  # (U, n_items) binary: their first rows over known items
    targets: sp.csr_matrix  # (U, n_items) binary: the known items of their later rows, history items excluded
    n_cold_users: int  # cold users with >= 1 test row over a known item
    without_targets: int  # of those, dropped: nothing left to predict after the fold-in


def fold_in_users(test_frame: pd.DataFrame, n_items: int, fold_in: float = 0.5) -> FoldIn:
    """Each cold user's (`user_idx` -1) test rows over known items, in time order (timestamp,
    then row order): the first max(1, ⌊fold_in · n⌋) of her n rows are her history, the known
    items of the rest that are not in it her targets. Users without targets are dropped (counted).
    Rows over cold items are left out: the fold-in speaks the trained model's item vocabulary."""
    if not 0 < fold_in < 1:
        raise ValueError(f"fold_in must be a share in (0, 1), got {fold_in}")
    for col in ("user_id", "user_idx", "item_idx", "timestamp"):
        if col not in test_frame.columns:
            raise DataError(f"the test split has no {col} column: cold users cannot be folded in",
                            source="test", column=col)  # fmt: skip
    rows = (test_frame["user_idx"].to_numpy() < 0) & (test_frame["item_idx"].to_numpy() >= 0)
    f = test_frame.loc[rows, ["user_id", "item_idx", "timestamp"]].reset_index(drop=True)
    f = f.iloc[np.lexsort((np.arange(len(f)), f["timestamp"].to_numpy()))]  # time order, ties by row
    code, ids = pd.factorize(f["user_id"].astype("string"))  # (n,), (U,)
    pos = pd.Series(code).groupby(code).cumcount().to_numpy()  # (n,) row's rank in its user's time line
    size = np.bincount(code, minlength=len(ids))[code]  # (n,)
    early = pos < np.maximum(1, np.floor(fold_in * size))
    item = f["item_idx"].to_numpy(dtype=np.int64)

    def binary(mask: np.ndarray) -> sp.csr_matrix:
        m = sp.csr_matrix((np.ones(int(mask.sum()), np.float32), (code[mask], item[mask])), shape=(len(ids), n_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    history, later = binary(early), binary(~early)
    targets = (later - later.multiply(history)).tocsr()
    targets.eliminate_zeros()
    keep = np.diff(targets.indptr) > 0  # (U,)
    return FoldIn(
        user_ids=np.asarray(ids, dtype=object)[keep],
        history=history[keep],
        targets=targets[keep],
        n_cold_users=len(ids),
        without_targets=int((~keep).sum()),
    )


def cold_user_ranking(
    cold_user_fn: ColdUserScoreFn,
    test_frame: pd.DataFrame,
    n_items: int,
    ks: Iterable[int] = (5, 10, 20),
    *,
    fold_in: float = 0.5,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[str, float]:
    """NDCG / Recall / HR @K of users unseen in training, by fold-in (`fold_in_users`): each
    user's history over the training items goes to `cold_user_fn(history (B, n_items)) ->
    (B, n_items)`; her history items are masked and her later known items are the targets (ties
    broken in a seeded random order, as in `cold_item_ranking`). Returns the means, `n_users`
    (evaluated), `n_cold_users` and `cold_users_without_targets`. `cold_user_fn` may raise
    `models.base.ColdStartUnsupported`."""
    ks = tuple(int(k) for k in ks)
    folded = fold_in_users(test_frame, n_items, fold_in)
    counts = {"n_cold_users": folded.n_cold_users, "cold_users_without_targets": folded.without_targets}
    n = len(folded.user_ids)
    if not n:
        return {"n_users": 0, **counts}
    topk = np.full((n, max(ks)), -1, dtype=np.int64)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            history, r, c = _dense_rows(folded.history, np.arange(start, min(start + batch_size, n)), device)
            scores = cold_user_fn(history).float().contiguous()  # (B, n_items)
            if scores.shape != history.shape:
                raise ValueError(f"cold-user scores of shape {tuple(scores.shape)} for histories of shape "
                                 f"{tuple(history.shape)}")  # fmt: skip
            scores[r, c] = -torch.inf
            topk[start : start + len(history)] = _top_k_ties_shuffled(scores, max(ks), g)
    return _cold_start_summary(topk, folded.targets, ks) | counts


def cold_start_slices(
    score_fn: ScoreFn,
    cold_item_fn: ColdItemScoreFn | None,
    cold_user_fn: ColdUserScoreFn | None,
    train: Split,
    test_frame: pd.DataFrame,
    ks: Iterable[int] = (5, 10, 20),
    *,
    fold_in: float = 0.5,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> dict[str, Any]:
    """The cold-start slices of one model on a test split frame (`user_idx` / `item_idx` -1 for
    users / items unknown to train, as `data.splits` writes them):

    - `cold_items_all`, `cold_items_only`: `cold_item_ranking` (known users, their cold items
      ranked among all items / among the cold items alone);
    - `cold_users`: `cold_user_ranking` (users unseen in training, by fold-in).

    A slice is None when the model cannot score it — its scorer raised
    `models.base.ColdStartUnsupported`, or none was given — never a zero; `unsupported` then says
    why, per kind (`cold_items`, `cold_users`). Also returned: `n_cold_items` (distinct cold test
    items), `n_cold_users` (cold users with a known-item row) and `cold_users_without_targets`
    (dropped after the fold-in), which do not depend on the model.
    """
    ks = tuple(int(k) for k in ks)
    n_items = _train_csr(train).shape[1]
    out: dict[str, Any] = {"cold_items_all": None, "cold_items_only": None, "cold_users": None}
    unsupported: dict[str, str] = {}
    try:
        if cold_item_fn is None:
            raise ColdStartUnsupported("no cold-item scorer given (the family's item side was not handed over)")
        items = cold_item_ranking(score_fn, cold_item_fn, train, test_frame, ks, batch_size=batch_size,
                                  device=device, seed=seed)  # fmt: skip
        out["cold_items_all"], out["cold_items_only"] = items["all_items"], items["cold_only"]
    except ColdStartUnsupported as e:
        unsupported["cold_items"] = str(e)
    folded = fold_in_users(test_frame, n_items, fold_in)
    try:
        if cold_user_fn is None:
            raise ColdStartUnsupported("no cold-user scorer given")
        users = cold_user_ranking(cold_user_fn, test_frame, n_items, ks, fold_in=fold_in,
                                  batch_size=batch_size, device=device, seed=seed)  # fmt: skip
        out["cold_users"] = {k: v for k, v in users.items() if k not in ("n_cold_users", "cold_users_without_targets")}
    except ColdStartUnsupported as e:
        unsupported["cold_users"] = str(e)
    out["n_cold_items"] = len(cold_items_of(test_frame))
    out["n_cold_users"] = folded.n_cold_users
    out["cold_users_without_targets"] = folded.without_targets
    out["fold_in"] = fold_in
    out["unsupported"] = unsupported
    return out
