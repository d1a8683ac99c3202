"""Context-aware top-K: each test event ranks every item *in its own context* (deck 002
Assignment II: Neural FM on Foursquare check-ins with user, venue, venue category and time).

For an event (user u, time t, item i) the model scores every item for (u, t); the rank of i gives
Recall@K, MAP@K and nDCG@K (one relevant item per event: Recall@K = HR@K, AP@K = 1/(rank+1) when
rank < K, nDCG@K = 1/log2(rank+2)). Items the user met in train stay in the ranking by default:
check-ins revisit venues, so a revisit is a correct answer (`filter_seen=True` masks them).

The baseline `popularity_in_context` scores an item by its train count in the event's hour of day
(or weekday), smoothed towards its overall popularity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import scipy.sparse as sp
import torch

from recforge.data.interactions import InteractionData
from recforge.evaluation.metrics import single_target_metrics

ContextScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (B,), (B,) -> (B, I)
KS = (5, 10, 20)


def context_ranking(
    score_fn: ContextScoreFn,
    test: InteractionData,
    *,
    ks: Iterable[int] = KS,
    seen: sp.csr_matrix | None = None,
    filter_seen: bool = False,
    batch_size: int = 256,
) -> dict[str, float]:
    """Recall@K, MAP@K and nDCG@K over the test events (see the module docstring), and `n_events`."""
    ks = tuple(ks)
    ranks = np.empty(len(test), dtype=np.int64)
    with torch.no_grad():
        for start in range(0, len(test), batch_size):
            sl = slice(start, start + batch_size)
            u = torch.from_numpy(test.user_idx[sl])
            scores = score_fn(u, torch.from_numpy(test.timestamp[sl])).float().cpu()  # (B, I)
            target = torch.from_numpy(test.item_idx[sl])
            if filter_seen and seen is not None:
                mask = torch.from_numpy(seen[test.user_idx[sl]].toarray() > 0)
                mask[torch.arange(len(target)), target] = False  # never mask the answer itself
                scores = scores.masked_fill(mask, float("-inf"))
            own = scores.gather(1, target[:, None])  # (B, 1)
            ranks[sl] = (scores > own).sum(1).numpy()
    per = single_target_metrics(ranks, ks)
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = float(per[f"hr@{k}"].mean()) if len(ranks) else 0.0
        out[f"map@{k}"] = float(per[f"mrr@{k}"].mean()) if len(ranks) else 0.0
        out[f"ndcg@{k}"] = float(per[f"ndcg@{k}"].mean()) if len(ranks) else 0.0
    out["n_events"] = int(len(ranks))
    return out


def _part(timestamp: np.ndarray | torch.Tensor, part: str) -> np.ndarray:
    t = np.asarray(timestamp, dtype=np.int64)
    return (t // 3600) % 24 if part == "hour" else ((t // 86400) + 3) % 7


def popularity_in_context(train: InteractionData, part: str = "hour", prior: float = 5.0) -> ContextScoreFn:
    """score(i | c) = (n(i, c) + prior · p(i)) / (n(c) + prior): the item's share of the events in
    context c, shrunk towards its overall share p(i) with `prior` pseudo-events."""
    size = 24 if part == "hour" else 7
    c = _part(train.timestamp, part)
    counts = np.zeros((size, train.n_items))
    np.add.at(counts, (c, train.item_idx), 1.0)
    overall = counts.sum(0) / max(counts.sum(), 1.0)
    table = torch.as_tensor((counts + prior * overall) / (counts.sum(1, keepdims=True) + prior), dtype=torch.float32)

    def score(user: torch.Tensor, timestamp: torch.Tensor) -> torch.Tensor:
        return table[torch.as_tensor(_part(timestamp.numpy(), part))]

    return score


def model_context_fn(recommender) -> ContextScoreFn | None:
    """The context scorer of a fitted field-aware `Recommender` whose rows read the event's
    context, else None."""
    net = recommender.network
    if net is None or not getattr(net, "has_context", False):
        return None
    dev = recommender._device()

    def score(user: torch.Tensor, timestamp: torch.Tensor) -> torch.Tensor:
        return net.score_in_context(user.to(dev), timestamp.to(dev))

    return score
