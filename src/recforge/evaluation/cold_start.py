"""The cold-start protocol: items and users unseen in training, as plain callables (like
`evaluation.protocols`).

- `cold_item_ranking` ranks a known user's cold test items (`cold_items_of`) among all items and
  among the cold items alone;
- `cold_user_ranking` folds in a cold user's first test rows (`fold_in_users`) and ranks the rest;
- `cold_start_slices` runs both, turning `ColdStartUnsupported` into None plus a reason.

A fitted model's slices (`cold_start_metrics`) and the leaderboard across families are in
`evaluation.cold_start_report`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recforge.data.errors import DataError
from recforge.evaluation.metrics import mean_over, ranking_metrics_per_user
from recforge.evaluation.protocols import ScoreFn, Split, seen_matrix
from recforge.models.base import ColdStartUnsupported


# `ColdItemScoreFn(user (B,)) -> (B, C)` scores the C items of the test split unseen in training
# (`cold_items_of`), from their content; `ColdUserScoreFn(history (B, n_items)) -> (B, n_items)`
# scores users unseen in training from a fold-in history. Both may raise ColdStartUnsupported.
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
    train_csr = seen_matrix(train)
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
    n_items = seen_matrix(train).shape[1]
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
