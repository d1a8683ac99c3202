"""Two-stage nodes: a retriever's candidates in, a ranker trained on them and the chain's report
out. Thin: the work is in `training.two_stage`."""

import logging
from collections.abc import Sequence
from typing import Any

import pandas as pd

from recforge.data.interactions import InteractionData
from recforge.models.registry import get_family
from recforge.pipelines.training.pipeline import ITEM_VECTORS
from recforge.training import two_stage
from recforge.training.inputs import item_side
from recforge.training.recommender import Recommender
from recforge.training.two_stage import TwoStageConfig

logger = logging.getLogger(__name__)


def _data(frame: pd.DataFrame, user_map: pd.DataFrame, item_map: pd.DataFrame, name: str) -> InteractionData:
    return InteractionData.from_frame(frame, len(user_map), len(item_map), name=name)


def _with_ids(cands: pd.DataFrame, split: str, user_map: pd.DataFrame, item_map: pd.DataFrame) -> pd.DataFrame:
    out = cands.copy()
    out.insert(0, "split", split)
    out["user_id"] = user_map["user_id"].to_numpy(dtype=object)[out["user_idx"].to_numpy()]
    out["item_id"] = item_map["item_id"].to_numpy(dtype=object)[out["item_idx"].to_numpy()]
    return out.astype({"split": "string", "user_id": "string", "item_id": "string"})


def generate_candidates(
    model: Recommender, train: pd.DataFrame, test: pd.DataFrame, user_map: pd.DataFrame,
    item_map: pd.DataFrame, two_stage_config: TwoStageConfig, *upstream: Any,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The retriever's candidates (data/05_model_input/candidates/<retriever>/): split "train"
    (a head-refitted copy's top-N for the training tail, labelled) and "test" (the trained
    retriever's top-N for the test users); N is the largest any chain asks of it."""
    n = two_stage_config.n_for(model.name)
    if n == 0:
        raise ValueError(f"two_stage: no chain in params:two_stage.chains uses retriever {model.name!r}")
    train_data = _data(train, user_map, item_map, "train")
    vectors, _ = item_side(model.family, model.config, list(upstream), item_map, ITEM_VECTORS.get(model.name, ()))
    labelled, _ = two_stage.training_candidates(model, train_data, n, two_stage_config, vectors)
    served, seconds = two_stage.candidates_for(model, _data(test, user_map, item_map, "test"), n,
                                                two_stage_config.batch_size, two_stage_config.index)
    frame = pd.concat([_with_ids(labelled, "train", user_map, item_map),
                       _with_ids(served, "test", user_map, item_map)], ignore_index=True)
    return frame, {"retriever": model.name, "n": n, "retrieval_seconds_per_user": seconds}


def make_fit_ranker(chain: str):
    """The `fit_ranker` node of one chain."""

    def fit_ranker(
        candidates: pd.DataFrame, train: pd.DataFrame, user_map: pd.DataFrame, item_map: pd.DataFrame,
        two_stage_config: TwoStageConfig, ranker_params: dict[str, Any], *upstream: Any,
    ) -> Recommender:
        """The chain's ranker, built on the training head and fitted on the labelled candidates."""
        c = two_stage_config.chain(chain)
        model = {**(ranker_params or {}).get("model", {}), **c.model}
        training = {**(ranker_params or {}).get("training", {}), **c.training}
        training.pop("early_stopping_metric", None)  # no validation candidates in the ranker's fit
        fam = get_family(c.ranker)
        config = fam.config.model_validate(model)
        vectors, _ = item_side(fam, config, list(upstream), item_map, ITEM_VECTORS.get(c.ranker, ()))
        data = _data(train, user_map, item_map, "train")
        head, _ = two_stage.head_tail(data, two_stage_config.label_fraction)
        labelled = candidates[(candidates["split"] == "train") & (candidates["rank"] <= c.n)]
        return two_stage.fit_ranker(c.ranker, model, training, head, labelled, vectors, serve=data)

    fit_ranker.__qualname__ = "fit_ranker"
    return fit_ranker


def make_evaluate_chain(chain: str):
    """The `evaluate_chain` node of one chain."""

    def evaluate_chain(
        candidates: pd.DataFrame, stats: dict[str, Any], ranker: Recommender, test: pd.DataFrame,
        user_map: pd.DataFrame, item_map: pd.DataFrame, two_stage_config: TwoStageConfig,
    ) -> dict[str, Any]:
        """Candidate recall@N, reranked vs retriever-alone metrics and latency of the chain."""
        c = two_stage_config.chain(chain)
        served = candidates[candidates["split"] == "test"]
        out = two_stage.evaluate_chain(served, ranker, _data(test, user_map, item_map, "test"), c.n,
                                       two_stage_config.ks, stats["retrieval_seconds_per_user"])
        return {"chain": chain, "retriever": c.retriever, "ranker": c.ranker, **out}

    evaluate_chain.__qualname__ = "evaluate_chain"
    return evaluate_chain


def report_two_stage(**metrics: dict[str, Any]) -> str:
    """The chains' leaderboard as Markdown: recall@N, reranked vs retriever-alone NDCG/HR."""
    lines = ["# Two-stage chains", "",
             "| chain | N | candidate recall@N | reranked NDCG@10 | retriever NDCG@10 | reranked HR@10 | "
             "retriever HR@10 | users without candidates | ms per 1k users |",
             "|---|---|---|---|---|---|---|---|---|"]
    fmt = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
    for name, m in sorted(metrics.items()):
        recall = m.get(f"candidate_recall@{m['n']}")
        lines.append(
            f"| {name} | {m['n']} | {fmt(recall)} | "
            f"{fmt(m['reranked'].get('ndcg@10'))} | {fmt(m['retriever'].get('ndcg@10'))} | "
            f"{fmt(m['reranked'].get('hr@10'))} | {fmt(m['retriever'].get('hr@10'))} | "
            f"{m['users_without_candidates']} | {m['latency_ms_per_1k_users']:.1f} |"
        )
    return "\n".join(lines) + "\n"


__all__: Sequence[str] = ("generate_candidates", "make_fit_ranker", "make_evaluate_chain", "report_two_stage")
