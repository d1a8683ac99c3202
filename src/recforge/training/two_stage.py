"""Two-stage recommendation: any retriever's top-N candidates, reranked by any ranker trained on
those candidates (Covington, Adams & Sargin 2016, "Deep Neural Networks for YouTube
Recommendations", §2: candidate generation narrows the catalogue to hundreds, ranking orders them).

What makes the chain work is that the ranker learns on the retriever's candidates, not on uniform
negatives: the training period is cut in time into a head and a tail (`label_fraction` of the
training rows, by timestamp); a copy of the retriever is refitted on the head with the trained
retriever's own configs, its top-N candidates for the tail's users are labelled with what those
users then did in the tail (positives weighted by engagement: the event weight, or the rating on
rating rows), and the ranker — built on the head, so none of its history features sees the labels
— is fitted on them with weighted logistic regression (the paper's §4.2). At test time the trained
retriever (fitted on the whole training period) proposes N unseen items per test user and the
ranker orders them.

Reported per chain: candidate recall@N (the ceiling of any reranking), the reranked and the
retriever-alone ranking metrics on the same users, users left without candidates, and the
end-to-end latency per 1,000 users.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field

from recforge.data.interactions import InteractionData
from recforge.encoders.ann import AnnConfig
from recforge.evaluation.metrics import hits, ranking_metrics
from recforge.models.registry import get_family
from recforge.training.config import TrainConfig
from recforge.training.engagement import DEFAULT_EVENT_WEIGHTS, engagement_weights, weighted_logistic_loss
from recforge.training.recommender import Recommender

logger = logging.getLogger(__name__)

CANDIDATE_COLUMNS = ("split", "user_idx", "rank", "item_idx", "score", "label", "weight")


class ChainConfig(BaseModel):
    """One retriever -> ranker chain (`params:two_stage.chains[i]`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    retriever: str
    ranker: str
    n: int = Field(100, ge=1)  # candidates per user handed to the ranker
    model: dict[str, Any] = {}  # overrides of the ranker's `params:<ranker>.model`
    training: dict[str, Any] = {}  # overrides of the ranker's `params:<ranker>.training`

    @property
    def name(self) -> str:
        """The chain's folder and leaderboard row: `<retriever>__<ranker>`."""
        return f"{self.retriever}__{self.ranker}"


class TwoStageConfig(BaseModel):
    """`params:two_stage`: the chains and what they share."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    chains: tuple[ChainConfig, ...] = ()
    label_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # the training tail whose rows are the labels
    weighting: Literal["engagement", "none"] = "engagement"
    event_weights: dict[str, float] = DEFAULT_EVENT_WEIGHTS
    ks: tuple[int, ...] = (10,)
    batch_size: int = Field(1024, ge=1)
    # retrieval of factored retrievers (bpr, als, mf, gmf, youtube_candidates, sasrec, narm, tcn, cnn3d) via faiss:
    # exact flat by default, ivf / hnsw for large catalogues; other retrievers score every item
    index: AnnConfig = AnnConfig()

    def chain(self, name: str, stage: str = "two_stage") -> ChainConfig:
        """The chain named `<retriever>__<ranker>`; a ValueError (prefixed with `stage`) when
        none is declared."""
        for chain in self.chains:
            if chain.name == name:
                return chain
        raise ValueError(f"{stage}: no chain {name!r} in params:two_stage.chains")

    def n_for(self, retriever: str) -> int:
        """The most candidates any chain asks of `retriever` (0 when none does)."""
        return max((c.n for c in self.chains if c.retriever == retriever), default=0)


# ------------------------------------------------------------------------------------ splits
def subset(data: InteractionData, mask: np.ndarray) -> InteractionData:
    """The rows of `data` where `mask` holds, with the same id-map sizes."""
    pick = lambda a: None if a is None else a[mask]  # noqa: E731
    return InteractionData(
        user_idx=data.user_idx[mask], item_idx=data.item_idx[mask], value=data.value[mask],
        timestamp=data.timestamp[mask], n_users=data.n_users, n_items=data.n_items,
        session=pick(data.session), event=pick(data.event),
    )


def head_tail(train: InteractionData, label_fraction: float) -> tuple[InteractionData, InteractionData]:
    """The training period cut at the (1 - label_fraction) quantile of its timestamps: rows
    before the cut (the head the retriever copy and the ranker are fitted on) and from it on
    (the tail whose interactions label the candidates)."""
    if len(train) == 0:
        raise ValueError("two_stage: the training split is empty")
    cut = np.quantile(train.timestamp, 1.0 - label_fraction)
    late = train.timestamp >= cut
    if late.all():  # every row at one timestamp: fall back to the row order
        late = np.arange(len(train)) >= int(round(len(train) * (1.0 - label_fraction)))
    if not late.any() or late.all():
        raise ValueError(f"two_stage: label_fraction={label_fraction} leaves an empty head or tail")
    return subset(train, ~late), subset(train, late)


# -------------------------------------------------------------------------------- candidates
def generate_candidates(
    retriever: Recommender, users: np.ndarray, n: int, batch_size: int = 1024, index: AnnConfig | None = None,
) -> pd.DataFrame:
    """The retriever's top-`n` unseen items for each of `users`: user_idx, rank, item_idx, score,
    through the faiss `index` when the retriever's scores factor (`Recommender.recommend`).

    `n` larger than the catalogue is refused. A user with fewer than `n` unseen items gets only
    those; one with none gets no rows (counted by `evaluate_chain`). NaN scores are refused,
    naming the retriever and the users."""
    n_items = retriever._require_fitted().n_items
    if n > n_items:
        raise ValueError(
            f"two_stage: n={n} candidates per user exceeds the catalogue of {n_items} items "
            f"(retriever {retriever.name!r}); lower `n` in params:two_stage.chains"
        )
    users = np.asarray(users, dtype=np.int64)
    parts = []
    for start in range(0, len(users), batch_size):
        u = users[start : start + batch_size]
        idx, sc = retriever.recommend(u, k=n, filter_already_liked_items=True, index=index)  # (B, n)
        bad = np.isnan(sc).any(axis=1)
        if bad.any():
            raise ValueError(
                f"two_stage: retriever {retriever.name!r} returned NaN scores for user_idx {u[bad][:20].tolist()}"
            )
        keep = np.isfinite(sc)  # -inf: a seen item, when fewer than n are unseen
        rows, cols = np.nonzero(keep)
        parts.append(pd.DataFrame({
            "user_idx": u[rows], "rank": (cols + 1).astype(np.int32),
            "item_idx": idx[rows, cols].astype(np.int64), "score": sc[rows, cols].astype(np.float32),
        }))
    if not parts:
        return pd.DataFrame({"user_idx": np.zeros(0, np.int64), "rank": np.zeros(0, np.int32),
                             "item_idx": np.zeros(0, np.int64), "score": np.zeros(0, np.float32)})
    return pd.concat(parts, ignore_index=True)


def label_candidates(candidates: pd.DataFrame, labels: InteractionData, weights: np.ndarray) -> pd.DataFrame:
    """`candidates` with `label` (1 where the user met the item in `labels`) and `weight` (the
    pair's largest engagement weight for a positive, 1 for a negative)."""
    n_items = labels.n_items
    key = labels.user_idx * n_items + labels.item_idx  # (N,)
    order = np.lexsort((weights, key))
    key, w = key[order], weights[order]
    last = np.r_[key[1:] != key[:-1], True] if len(key) else np.zeros(0, bool)
    key, w = key[last], w[last]  # one row per pair, its largest weight
    query = candidates["user_idx"].to_numpy() * n_items + candidates["item_idx"].to_numpy()
    pos = np.minimum(np.searchsorted(key, query), max(len(key) - 1, 0))
    hit = (key[pos] == query) if len(key) else np.zeros(len(query), bool)
    out = candidates.copy()
    out["label"] = hit.astype(np.float32)
    out["weight"] = np.where(hit, w[pos] if len(key) else 1.0, 1.0).astype(np.float32)
    return out


def refit_on_head(retriever: Recommender, head: InteractionData, item_vectors: Any = None) -> Recommender:
    """A copy of the trained retriever, refitted on the head with its own configs and its item
    side (`item_vectors`: what its training received — vector tables, item content such as
    youtube_candidates' words and demographics, feature tables)."""
    if retriever.family.warm_start_from and getattr(retriever.config, "pretrain", False):
        raise ValueError(
            f"two_stage: retriever {retriever.name!r} starts from other trained models "
            f"({', '.join(retriever.family.warm_start_from)}), which the head refit does not have; "
            "set its `pretrain: false` or choose another retriever (bpr, als, sasrec, youtube_candidates ...)"
        )
    copy = Recommender(retriever.name, retriever.config, head_train_config(retriever))
    copy.fit(head, item_vectors=item_vectors)
    return copy


def head_train_config(retriever: Recommender) -> TrainConfig:
    """The retriever's training config for its head refit: there is no validation split there to
    stop on, so early stopping is off and the refit runs as many epochs as the trained retriever
    kept (its best epoch + 1, or the epochs it ran)."""
    config = retriever.train_config
    if config.early_stopping_metric is None:
        return config
    history = retriever.history
    if history is not None and history.epochs:
        epochs = (history.best_epoch if history.best_epoch is not None else history.epochs - 1) + 1
    else:
        epochs = config.epochs
    return config.model_copy(update={"early_stopping_metric": None, "epochs": max(1, epochs)})


def training_candidates(
    retriever: Recommender, train: InteractionData, n: int, config: TwoStageConfig, item_vectors: Any = None,
) -> tuple[pd.DataFrame, InteractionData]:
    """Labelled candidates for the ranker (split "train") and the head it is built on;
    `item_vectors`: the retriever's item side, for its refit on the head."""
    head, tail = head_tail(train, config.label_fraction)
    copy = refit_on_head(retriever, head, item_vectors)
    users = np.unique(tail.user_idx)
    weights = (engagement_weights(tail, config.event_weights) if config.weighting == "engagement"
               else np.ones(len(tail), dtype=np.float32))
    cands = label_candidates(generate_candidates(copy, users, n, config.batch_size, config.index), tail, weights)
    logger.info("two_stage: %s proposed %d candidates for %d tail users (%.1f%% positive)",
                retriever.name, len(cands), len(users), 100 * cands["label"].mean() if len(cands) else 0.0)
    return cands, head


# -------------------------------------------------------------------------------------- ranker
def candidate_batches(candidates: pd.DataFrame, batch_size: int, generator: torch.Generator):
    """One epoch over labelled candidates in a seeded random order: {user, item, label, weight}."""
    user = torch.tensor(candidates["user_idx"].to_numpy(np.int64))
    item = torch.tensor(candidates["item_idx"].to_numpy(np.int64))
    label = torch.tensor(candidates["label"].to_numpy(np.float32))
    weight = torch.tensor(candidates["weight"].to_numpy(np.float32))
    order = torch.randperm(len(user), generator=generator)
    for start in range(0, len(user), batch_size):
        b = order[start : start + batch_size]
        yield {"user": user[b], "item": item[b], "label": label[b], "weight": weight[b]}


def weighted_logistic(network, batch) -> torch.Tensor:
    """`weighted_logistic_loss` (Covington et al. 2016 §4.2) of the ranker's logits on a batch of
    labelled candidates."""
    return weighted_logistic_loss(network(batch["user"], batch["item"]), batch["label"], batch["weight"])


def fit_ranker(
    ranker: str, model: dict[str, Any], training: dict[str, Any], head: InteractionData,
    candidates: pd.DataFrame, item_vectors: Any = None, serve: InteractionData | None = None,
) -> Recommender:
    """`ranker` built on the head and fitted on the labelled candidates with `weighted_logistic`.

    With `serve` (the whole training period), the fitted parameters then move into a network
    built on it, so the ranker's history features (buffers: the user's items, last times per
    category ...) are as of the end of training when it reranks test candidates."""
    fam = get_family(ranker)
    if not fam.trainable:
        raise ValueError(f"two_stage: ranker {ranker!r} has nothing to train; choose a family that scores (user, item) pairs")
    train = candidates[candidates["split"] == "train"] if "split" in candidates else candidates
    if len(train) == 0 or train["label"].sum() == 0:
        raise ValueError(f"two_stage: no positive training candidates for ranker {ranker!r}: the "
                         "retriever proposed none of the items the users met in the training tail")
    rec = Recommender(ranker, model, training)

    def batches(network, data, config, batch_size, generator):
        return candidate_batches(train, batch_size, generator)

    def loss(network, batch, config):
        try:
            return weighted_logistic(network, batch)
        except NotImplementedError:
            raise ValueError(f"two_stage: ranker {ranker!r} cannot score (user, item) pairs with a "
                             "trainable forward; choose youtube_ranking, neumf, deepfm, wide_deep ...") from None

    rec.fit(head, item_vectors=item_vectors, batches=batches, loss=loss)
    if serve is not None:
        refresh(rec, serve, item_vectors)
    return rec


def refresh(rec: Recommender, data: InteractionData, item_vectors: Any = None) -> None:
    """Rebuild `rec`'s network on `data` and keep its trained parameters: what the network
    derived from its training data (buffers) is then as of `data`, and `data` is what
    `recommend` filters."""
    trained = rec._require_fitted()
    device = next((p.device for p in trained.parameters()), torch.device("cpu"))
    fresh = rec.family.build(rec.config, data, item_vectors)
    params = dict(trained.named_parameters())
    with torch.no_grad():
        for name, p in fresh.named_parameters():
            p.copy_(params[name])
    rec.network = fresh.to(device).eval()
    rec._seen = data.csr.astype(np.float32)


def rerank(ranker: Recommender, candidates: pd.DataFrame, batch_size: int = 65536) -> np.ndarray:
    """(C,) the ranker's score of each candidate pair; NaN scores are refused, naming the users."""
    score = ranker.pair_score_fn()
    user = torch.tensor(candidates["user_idx"].to_numpy(np.int64))
    item = torch.tensor(candidates["item_idx"].to_numpy(np.int64))
    out = np.concatenate([score(user[s : s + batch_size], item[s : s + batch_size]).cpu().numpy()
                          for s in range(0, len(user), batch_size)]) if len(user) else np.zeros(0, np.float32)
    bad = np.isnan(out)
    if bad.any():
        users = np.unique(candidates["user_idx"].to_numpy()[bad])[:20].tolist()
        raise ValueError(f"two_stage: ranker {ranker.name!r} returned NaN scores for user_idx {users}")
    return out


def top_lists(candidates: pd.DataFrame, users: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """(U, k) item indices per user of `users` ordered by `score` (best first), -1 padded."""
    row = np.searchsorted(users, candidates["user_idx"].to_numpy())
    order = np.lexsort((-score, row))
    row, item = row[order], candidates["item_idx"].to_numpy()[order]
    start = np.searchsorted(row, np.arange(len(users)))
    rank = np.arange(len(row)) - start[row]
    out = np.full((len(users), k), -1, dtype=np.int64)
    keep = rank < k
    out[row[keep], rank[keep]] = item[keep]
    return out


def evaluate_chain(
    candidates: pd.DataFrame, ranker: Recommender, test: InteractionData, n: int,
    ks: tuple[int, ...] = (10,), retrieval_seconds_per_user: float = 0.0,
) -> dict[str, Any]:
    """Candidate recall@n, reranked and retriever-alone metrics at `ks` on the test users, users
    without candidates, and the latency per 1,000 users (retrieval + reranking)."""
    users = np.unique(test.user_idx)
    cands = candidates[candidates["rank"] <= n]
    cands = cands[np.isin(cands["user_idx"].to_numpy(), users)]
    relevant = test.csr[users]
    started = time.perf_counter()
    scores = rerank(ranker, cands)
    rerank_s = time.perf_counter() - started
    width = max(max(ks), 1)
    pool = top_lists(cands, users, -cands["rank"].to_numpy(np.float64), n)  # (U, n) retriever order
    n_rel = np.diff(relevant.indptr)
    recall = hits(pool, relevant).sum(axis=1) / np.maximum(n_rel, 1)
    reranked = ranking_metrics(top_lists(cands, users, scores, width), relevant, ks)
    alone = ranking_metrics(pool[:, :width], relevant, ks)
    no_candidates = np.setdiff1d(users, cands["user_idx"].to_numpy())
    if len(no_candidates):
        logger.warning("two_stage: %d test user(s) without candidates (every item seen), e.g. user_idx %s",
                       len(no_candidates), no_candidates[:10].tolist())
    return {
        "n": n,
        "n_users": int(len(users)),
        f"candidate_recall@{n}": float(recall[n_rel > 0].mean()) if (n_rel > 0).any() else None,
        "reranked": reranked,
        "retriever": alone,
        "users_without_candidates": int(len(no_candidates)),
        "latency_ms_per_1k_users": 1000.0 * (retrieval_seconds_per_user * 1000.0 + rerank_s / max(len(users), 1) * 1000.0),
    }


def candidates_for(
    retriever: Recommender, test: InteractionData, n: int, batch_size: int = 1024, index: AnnConfig | None = None,
) -> tuple[pd.DataFrame, float]:
    """The trained retriever's candidates for the users of `test` (unlabelled) and the
    retrieval seconds per user."""
    users = np.unique(test.user_idx)
    started = time.perf_counter()
    cands = generate_candidates(retriever, users, n, batch_size, index)
    seconds = (time.perf_counter() - started) / max(len(users), 1)
    cands["label"] = np.float32(np.nan)
    cands["weight"] = np.float32(np.nan)
    return cands, seconds

