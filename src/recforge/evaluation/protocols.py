"""Evaluation protocols: full ranking, sampled ranking, rating prediction, warm / few-shot slices
(the cold-start protocol is `evaluation.cold_start`).

Every protocol takes plain callables, so it works for any network (wrap `score_all` / `forward`)
and for baselines that are not networks at all:

- `ScoreFn(user (B,), history (B, n_items)) -> (B, n_items)` scores every item for a batch of
  users; `history` is their dense training rows.
- `PairScoreFn(user (N,), item (N,)) -> (N,)` scores given (user, item) pairs.

Protocols run under `torch.no_grad()`; putting a network in eval mode is the caller's job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

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


def seen_matrix(train: Split) -> sp.csr_matrix:
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
    train_csr = seen_matrix(train)
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
    train_csr, test_csr = seen_matrix(train), _binary_csr(test)
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
