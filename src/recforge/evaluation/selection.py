"""Model-selection metrics on the validation split: early stopping and Optuna tuning.

One metric name says what is measured and how, and the same name is used everywhere (the fit
loop's `early_stopping_metric`, a tuning study's `metric`, the per-epoch logs):

| name | kind | protocol | better |
|---|---|---|---|
| `ndcg@K`, `hr@K`, `recall@K`, `precision@K`, `map@K`, `mrr@K` | ranking | full ranking of valid, train masked | higher |
| `coverage@K` | ranking | share of the catalogue in the top-K lists of the valid users | higher |
| `rmse`, `mae` | rating | predicted against the valid split's ratings | lower |
| `next_item_mrr@K`, `next_item_recall@K` | session | every position of the valid sessions | higher |

Rating metrics need a family trained on ratings (`Recommender.uses_ratings`); session metrics a
family whose network scores an ordered prefix (`Family.next_item`). `check_metric` says so before
anything is trained.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recforge.data.interactions import InteractionData
from recforge.data.schema import EVENTS
from recforge.evaluation.metrics import catalogue_coverage

RANKING = ("ndcg", "hr", "recall", "precision", "map", "mrr", "coverage")
RATING = ("rmse", "mae")
SESSION = ("next_item_mrr", "next_item_recall")
_AT_K = re.compile(r"^(?P<base>[a-z_]+)@(?P<k>[1-9][0-9]*)$")


@dataclass(frozen=True)
class Metric:
    """A parsed model-selection metric."""

    name: str
    kind: Literal["ranking", "rating", "session"]
    base: str
    k: int | None
    direction: Literal["maximize", "minimize"]

    @property
    def mode(self) -> Literal["max", "min"]:
        """The fit loop's `early_stopping_mode` for this metric."""
        return "max" if self.direction == "maximize" else "min"


def known_metrics() -> list[str]:
    """Every accepted form, for error messages."""
    return [f"{b}@K" for b in RANKING] + list(RATING) + [f"{b}@K" for b in SESSION]


def parse_metric(name: str) -> Metric:
    """`Metric` of `name`; an unknown name raises `ValueError` listing the accepted ones."""
    text = str(name).strip().lower()
    if text in RATING:
        return Metric(text, "rating", text, None, "minimize")
    m = _AT_K.match(text)
    if m and m["base"] in RANKING:
        return Metric(text, "ranking", m["base"], int(m["k"]), "maximize")
    if m and m["base"] in SESSION:
        return Metric(text, "session", m["base"], int(m["k"]), "maximize")
    raise ValueError(f"unknown metric {name!r}; known: {', '.join(known_metrics())} (K a positive integer)")


def check_metric(metric: str | Metric, family: Any, uses_ratings: bool) -> Metric:
    """The parsed metric, or `ValueError` when it does not fit `family` (a `models.base.Family`)."""
    m = metric if isinstance(metric, Metric) else parse_metric(metric)
    if m.kind == "rating" and not uses_ratings:
        raise ValueError(
            f"metric {m.name!r} does not fit family {family.name!r}: it is not trained on ratings "
            "(implicit feedback only); use a ranking metric such as 'ndcg@10'"
        )
    if m.kind == "session" and not getattr(family, "next_item", False):
        raise ValueError(
            f"metric {m.name!r} does not fit family {family.name!r}: its network does not score an "
            "ordered prefix; use a ranking metric such as 'ndcg@10'"
        )
    return m


def _rating_rows(valid: InteractionData) -> InteractionData:
    if valid.event is None:
        return valid
    keep = valid.event == EVENTS.index("rating")
    return InteractionData(
        valid.user_idx[keep], valid.item_idx[keep], valid.value[keep], valid.timestamp[keep],
        valid.n_users, valid.n_items,
    )  # fmt: skip


def _session_frame(valid: InteractionData) -> pd.DataFrame:
    """The valid split as the session protocols read it (a session per user when it has none)."""
    frame = pd.DataFrame({
        "user_id": valid.user_idx.astype(str),
        "item_idx": valid.item_idx,
        "timestamp": valid.timestamp,
    })  # fmt: skip
    if valid.session is not None:
        frame["session_id"] = valid.session.astype(str)
    return frame


def make_validator(
    recommender: Any,
    valid: InteractionData,
    metrics: Iterable[str | Metric],
    *,
    batch_size: int = 1024,
) -> Callable[[torch.nn.Module], dict[str, float]]:
    """`validate(network) -> {metric name: value}` for the fit loop, over a fitted-in-place
    `training.recommender.Recommender` and the valid split. Ranking metrics share one full-ranking
    pass; every metric is named as asked (e.g. `ndcg@10`)."""
    from recforge.evaluation.protocols import rank_users, rating_prediction
    from recforge.evaluation.sessions import prefix_scorer, session_examples, target_ranks
    from recforge.evaluation.metrics import single_target_metrics

    parsed = [m if isinstance(m, Metric) else parse_metric(m) for m in metrics]
    ranking = [m for m in parsed if m.kind == "ranking"]
    ks = tuple(sorted({m.k for m in ranking if m.base != "coverage"} | {10})) if ranking else ()
    top = max([m.k for m in ranking] + [max(ks, default=1)]) if ranking else 0
    ratings = _rating_rows(valid) if any(m.kind == "rating" for m in parsed) else None
    sessions = None
    if any(m.kind == "session" for m in parsed):
        sessions = _session_frame(valid)

    def validate(network: torch.nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        if ranking:
            seen: sp.csr_matrix = recommender._seen
            ranked = rank_users(recommender.score_fn(), seen, valid, tuple(sorted(set(ks) | {top})),
                                batch_size=batch_size)  # fmt: skip
            summary = ranked.summary()
            for m in ranking:
                if m.base == "coverage":
                    out[m.name] = float(catalogue_coverage(ranked.topk[:, : m.k], valid.n_items))
                else:
                    out[m.name] = float(summary[m.name])
        if ratings is not None:
            result = rating_prediction(recommender.pair_score_fn(), ratings, binary=False) if len(ratings) else {}
            for m in parsed:
                if m.kind == "rating":
                    out[m.name] = float(result.get(m.name, float("nan")))
        if sessions is not None:
            scorer = prefix_scorer(network)
            if scorer is None:
                raise ValueError(f"{recommender.name}: its network cannot score a prefix for next-item metrics")
            max_len = int(getattr(network, "max_len", 50))
            prefixes, targets, _ = session_examples(sessions, max_len, "all")
            tensors = [*network.parameters(), *network.buffers()]
            device = tensors[0].device if tensors else torch.device("cpu")
            ranks = target_ranks(scorer, prefixes, targets, batch_size=batch_size, device=device)
            per = single_target_metrics(ranks, sorted({m.k for m in parsed if m.kind == "session"}))
            for m in parsed:
                if m.kind == "session":
                    key = f"{'mrr' if m.base == 'next_item_mrr' else 'hr'}@{m.k}"
                    out[m.name] = float(np.mean(per[key])) if len(ranks) else float("nan")
        return out

    return validate
