"""Recommendation metrics as vectorised functions of numpy arrays.

Ranking metrics take `topk`, a (U, K) matrix of item indices ranked best first (-1 pads a row that
has fewer than K recommendations and never counts as a hit; rows hold distinct items), and
`relevant`, a binary (U, n_items) CSR matrix whose row u holds user u's held-out items. They are
computed per user, then averaged over the users with at least one relevant item.

Conventions (binary relevance, `rel` = a user's relevant items, `hit_j` = the item at rank j,
1-based, is relevant):

- HR@K         = 1 if any of the top K is relevant, else 0.
- Precision@K  = hits in the top K / K.
- Recall@K     = hits in the top K / |rel|  (the plain definition, not min(|rel|, K): a user with
                 more relevant items than K cannot reach 1).
- MAP@K        = sum_j<=K Precision@j * hit_j / min(|rel|, K)  (so a top K full of relevant items
                 scores 1; with K >= n_items it equals scikit-learn's `average_precision_score`).
- NDCG@K       = DCG@K / IDCG@K with DCG@K = sum_j<=K hit_j / log2(j + 1) and the ideal DCG over
                 min(|rel|, K) relevant items at the top (Järvelin & Kekäläinen, 2002).
- MRR@K        = 1 / rank of the first relevant item within the top K, else 0.

Rows with no relevant item get 0 for every metric and are left out of the means.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp
import torch
from scipy.stats import rankdata

RANKING_METRICS: tuple[str, ...] = ("hr", "recall", "precision", "map", "ndcg", "mrr")
SINGLE_TARGET_METRICS: tuple[str, ...] = ("hr", "ndcg", "mrr")


def _as_csr(relevant: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    m = sp.csr_matrix(relevant)
    if not m.has_sorted_indices:
        # Sort a copy: the caller's matrix (often a cached property) must not change under them.
        m = m.copy()
        m.sort_indices()
    return m


def _check_ks(ks: Iterable[int], width: int) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    if max(ks) > width:
        raise ValueError(f"topk has {width} columns, fewer than the largest cut-off {max(ks)}")
    return ks


def hits(topk: np.ndarray, relevant: sp.spmatrix | sp.sparray) -> np.ndarray:
    """(U, K) bool: whether `topk[u, j]` is a relevant item of row u of `relevant`."""
    topk = np.asarray(topk, dtype=np.int64)
    rel = _as_csr(relevant)
    if topk.ndim != 2 or topk.shape[0] != rel.shape[0]:
        raise ValueError(f"topk {topk.shape} and relevant {rel.shape} must have the same rows")
    n_items = rel.shape[1]
    # One sorted key per relevant (row, item) pair, so a hit test is a binary search.
    rows = np.repeat(np.arange(rel.shape[0], dtype=np.int64), np.diff(rel.indptr))  # (nnz,)
    keys = rows * n_items + rel.indices.astype(np.int64)  # (nnz,) sorted
    if keys.size == 0:
        return np.zeros(topk.shape, dtype=bool)
    query = np.arange(topk.shape[0], dtype=np.int64)[:, None] * n_items + topk  # (U, K)
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)  # (U, K)
    return (keys[pos] == query) & (topk >= 0)


def ranking_metrics_per_user(
    topk: np.ndarray, relevant: sp.spmatrix | sp.sparray, ks: Iterable[int] = (5, 10, 20)
) -> dict[str, np.ndarray]:
    """Per-user HR, Recall, Precision, MAP, NDCG and MRR at each K: `{"ndcg@10": (U,), ...}`."""
    topk = np.asarray(topk, dtype=np.int64)
    ks = _check_ks(ks, topk.shape[1])
    h = hits(topk, relevant)[:, : max(ks)].astype(np.float64)  # (U, K)
    n_rel = np.diff(_as_csr(relevant).indptr).astype(np.float64)  # (U,)
    ranks = np.arange(1, h.shape[1] + 1, dtype=np.float64)  # (K,)
    discount = 1.0 / np.log2(ranks + 1.0)  # (K,)

    n_hits = h.cumsum(axis=1)  # (U, K) hits within the top j
    dcg = (h * discount).cumsum(axis=1)  # (U, K)
    ideal = np.concatenate([[0.0], discount.cumsum()])  # (K+1,) ideal DCG of i relevant items
    ap_sum = (n_hits / ranks * h).cumsum(axis=1)  # (U, K)
    first = np.where(h.any(axis=1), h.argmax(axis=1), h.shape[1])  # (U,) 0-based first hit

    out: dict[str, np.ndarray] = {}
    for k in ks:
        c = n_hits[:, k - 1]  # (U,)
        cap = np.minimum(n_rel, k).astype(np.int64)  # (U,)
        safe_cap = np.maximum(cap, 1)
        out[f"hr@{k}"] = (c > 0).astype(np.float64)
        out[f"recall@{k}"] = c / np.maximum(n_rel, 1.0)
        out[f"precision@{k}"] = c / k
        out[f"map@{k}"] = ap_sum[:, k - 1] / safe_cap
        out[f"ndcg@{k}"] = dcg[:, k - 1] / ideal[safe_cap]
        out[f"mrr@{k}"] = np.where(first < k, 1.0 / (first + 1.0), 0.0)
    return out


def ranking_metrics(
    topk: np.ndarray, relevant: sp.spmatrix | sp.sparray, ks: Iterable[int] = (5, 10, 20)
) -> dict[str, float]:
    """Means of `ranking_metrics_per_user` over users with >= 1 relevant item, plus `n_users`."""
    per_user = ranking_metrics_per_user(topk, relevant, ks)
    evaluated = np.diff(_as_csr(relevant).indptr) > 0  # (U,)
    return mean_over(per_user, evaluated)


def mean_over(per_user: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, float]:
    """Means of per-user metric arrays over the rows in `mask` (NaNs ignored), plus `n_users`."""
    out: dict[str, float] = {}
    for name, v in per_user.items():
        kept = v[mask]
        kept = kept[~np.isnan(kept)]
        out[name] = float(kept.mean()) if kept.size else float("nan")
    out["n_users"] = int(mask.sum())
    return out


def single_target_metrics(rank: np.ndarray, ks: Iterable[int] = (1, 5, 10)) -> dict[str, np.ndarray]:
    """HR, NDCG and MRR at each K when each row has exactly one relevant item at 0-based `rank`.

    This is the sampled protocol's case: with a single relevant item NDCG@K = 1 / log2(rank + 2)
    and MRR@K = 1 / (rank + 1) when rank < K, else 0.
    """
    rank = np.asarray(rank, dtype=np.int64)  # (N,)
    ks = tuple(int(k) for k in ks)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        inside = rank < k
        out[f"hr@{k}"] = inside.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(inside, 1.0 / np.log2(rank + 2.0), 0.0)
        out[f"mrr@{k}"] = np.where(inside, 1.0 / (rank + 1.0), 0.0)
    return out


def auc(scores_pos: np.ndarray, scores_neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties counting 1/2 (Mann-Whitney U / n+ n-)."""
    pos = np.asarray(scores_pos, dtype=np.float64).ravel()
    neg = np.asarray(scores_neg, dtype=np.float64).ravel()
    if pos.size == 0 or neg.size == 0:
        raise ValueError(f"AUC needs positives and negatives, got {pos.size} and {neg.size}")
    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks resolve ties as 1/2
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def _average_ranks(ordered: np.ndarray) -> np.ndarray:
    """(U, n) 1-based ranks of row-sorted values, tied values sharing their average rank."""
    n = ordered.shape[1]
    idx = np.broadcast_to(np.arange(n), ordered.shape)  # (U, n)
    starts = np.ones(ordered.shape, dtype=bool)  # (U, n) first of its tie group
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones(ordered.shape, dtype=bool)  # (U, n) last of its tie group
    ends[:, :-1] = starts[:, 1:]
    first = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)  # (U, n)
    # The group's last index, found by the same running max on the reversed rows.
    last = n - 1 - np.maximum.accumulate(np.where(ends, n - 1 - idx, 0)[:, ::-1], axis=1)[:, ::-1]
    return (first + last) / 2.0 + 1.0


def per_user_auc(
    scores: np.ndarray | torch.Tensor,
    relevant: sp.spmatrix | sp.sparray,
    exclude: sp.spmatrix | sp.sparray | None = None,
) -> np.ndarray:
    """(U,) AUC of each row's relevant items against its other items, from full (U, n_items) scores.

    Items in `exclude` (typically the training items) are neither positives nor negatives. Ties
    count 1/2. A row with no positive or no negative left gets NaN.
    """
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    s = np.array(scores, dtype=np.result_type(scores.dtype, np.float32))  # (U, n_items), a copy
    pos = _as_csr(relevant).toarray() > 0  # (U, n_items)
    if exclude is not None:
        excl = _as_csr(exclude).toarray() > 0  # (U, n_items)
        pos &= ~excl
    else:
        excl = np.zeros_like(pos)
    # Excluded items sink below everything, so each positive's rank counts them exactly once.
    s[excl] = -np.inf
    order = np.argsort(s, axis=1)  # (U, n_items)
    ranks = _average_ranks(np.take_along_axis(s, order, axis=1))  # (U, n_items), in sorted order
    pos_sorted = np.take_along_axis(pos, order, axis=1)  # (U, n_items)
    n_pos = pos.sum(axis=1).astype(np.float64)  # (U,)
    n_excl = excl.sum(axis=1).astype(np.float64)  # (U,)
    n_neg = s.shape[1] - n_pos - n_excl  # (U,)
    u_stat = (ranks * pos_sorted).sum(axis=1) - n_pos * n_excl - n_pos * (n_pos + 1) / 2  # (U,)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = u_stat / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), out, np.nan)


def log_loss(y_true: np.ndarray, y_prob: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities, clipped to [eps, 1 - eps] so it stays finite."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.clip(np.asarray(y_prob, dtype=np.float64).ravel(), eps, 1.0 - eps)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error."""
    d = np.asarray(y_pred, dtype=np.float64).ravel() - np.asarray(y_true, dtype=np.float64).ravel()
    return float(np.sqrt(np.mean(d * d)))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error."""
    d = np.asarray(y_pred, dtype=np.float64).ravel() - np.asarray(y_true, dtype=np.float64).ravel()
    return float(np.mean(np.abs(d)))


def catalogue_coverage(topk: np.ndarray, n_items: int) -> float:
    """Share of the catalogue recommended to at least one user (-1 padding ignored)."""
    items = np.asarray(topk, dtype=np.int64).ravel()
    items = items[items >= 0]
    return float(np.count_nonzero(np.bincount(items, minlength=n_items)) / n_items)
