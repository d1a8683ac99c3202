"""One Optuna study per two-stage chain: N (the candidates per user) and the ranker's `model` /
`training` parameters tuned together on the validation period.

The chain is built as `training.two_stage` builds it, with the validation period in place of the
test period: the trained retriever (fitted on the training period) proposes its top-N unseen items
for the validation users; per trial, the ranker is fitted on the labelled candidates of the
training tail (a copy of the retriever refitted on the training head proposes them, the tail's
interactions label them) with the trial's N and parameters, and the trial's value is the reranked
metric (`ndcg@10` unless the study says otherwise) over the validation users. Both candidate sets
are made once per study at the largest N the space allows and cut to each trial's N, so the
retriever (and its head copy) are fitted once per study, not per trial. The test split is not an
argument of anything here.

The study reuses the tuning package: the space's `model` / `training` keys are a `SearchSpace`
(checked against the ranker's config classes by `validate_space`, drawn by `suggest`), the study
is created, resumed and run by `tuning.study.run_study` (the sampler, storage, baseline trial,
`max_trials` and failure rules of every study), and the result is a `TuningResult` whose trials
table and Markdown page are `tuning.report`'s.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import optuna
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recforge.data.interactions import InteractionData
from recforge.evaluation.selection import parse_metric
from recforge.models.registry import get_family
from recforge.training import two_stage
from recforge.training.config import TrainConfig
from recforge.training.recommender import Recommender
from recforge.training.two_stage import ChainConfig, TwoStageConfig
from recforge.tuning import report
from recforge.tuning.config import TuningConfig
from recforge.tuning.space import CategoricalDist, IntDist, SearchSpace, SpaceError, decode_params, suggest, validate_space
from recforge.tuning.storage import redact
from recforge.tuning.study import Plan, TuningResult, baseline_params, run_study

logger = logging.getLogger(__name__)

N_PARAM = "n"  # the Optuna name of the candidates per user
# the loop's early stopping reads a validation pass the ranker's fit on candidates does not make
_NO_EARLY_STOPPING = ("early_stopping_metric", "early_stopping_mode")


class ChainSpace(SearchSpace):
    """A chain's space: `n` (int range or categorical of positive ints) and the ranker's
    `model` / `training` keys as in `SearchSpace`."""

    n: Annotated[IntDist | CategoricalDist, Field(discriminator="type")]

    @field_validator("n")
    @classmethod
    def _positive_n(cls, n: IntDist | CategoricalDist) -> IntDist | CategoricalDist:
        problem = n.bounds_problem()
        if problem:
            raise ValueError(problem)
        values = n.choices if isinstance(n, CategoricalDist) else [n.low]
        bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        if bad:
            raise ValueError(f"candidates per user must be positive integers, got {bad}")
        return n

    def n_max(self) -> int:
        """The largest N a trial can draw."""
        if isinstance(self.n, CategoricalDist):
            return max(self.n.choices)
        return self.n.low + (self.n.high - self.n.low) // self.n.step * self.n.step

    def n_values(self) -> list[int]:
        if isinstance(self.n, CategoricalDist):
            return list(self.n.choices)
        return list(range(self.n.low, self.n.high + 1, self.n.step))


class ChainTuningConfig(TuningConfig):
    """A chain's study: `TuningConfig` with a `ChainSpace`. Its ranker is fitted on candidates
    without a validation pass per epoch, so there is nothing to prune or early-stop on:
    `pruner` is `none`, `patience` and `second_objective` are not accepted."""

    pruner: Literal["none", "median", "successive_halving", "hyperband"] = "none"
    space: ChainSpace  # type: ignore[assignment]

    @field_validator("pruner")
    @classmethod
    def _no_pruner(cls, v: str) -> str:
        if v != "none":
            raise ValueError(f"pruner={v!r}: a chain's ranker reports no metric per epoch, so its trials "
                             "cannot be pruned; set pruner: none")
        return v

    @field_validator("patience")
    @classmethod
    def _no_patience(cls, v: int | None) -> int | None:
        if v is not None:
            raise ValueError("patience: the ranker's fit on candidates has no validation pass to stop on")
        return v

    @field_validator("second_objective")
    @classmethod
    def _one_objective(cls, v: str | None) -> str | None:
        if v is not None:
            raise ValueError(f"second_objective={v!r}: a chain's study optimises its reranked metric alone")
        return v


class TwoStageTuningConfig(BaseModel):
    """`params:two_stage_tuning`: `defaults` (the study of every chain) and `chains` (per chain
    name `<retriever>__<ranker>`, keys that replace those of `defaults`, `space` as a whole)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    defaults: dict[str, Any] = Field(default_factory=dict)
    chains: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _every_block_validates(self) -> TwoStageTuningConfig:
        self.resolve("defaults", {})
        for name, block in self.chains.items():
            self.resolve(name, block)
        return self

    def resolve(self, name: str, block: Mapping[str, Any]) -> ChainTuningConfig:
        """`defaults` updated with `block`, validated; a problem raises `SpaceError` naming the
        chain and the parameter."""
        try:
            return ChainTuningConfig.model_validate({**self.defaults, **dict(block or {})})
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int)) or "tuning"
            msg = err["msg"].removeprefix("Value error, ")
            raise SpaceError(name, loc, f"{msg} (got {err.get('input')!r})") from None

    def for_chain(self, chain: str) -> ChainTuningConfig:
        """The study of `chain`."""
        return self.resolve(chain, self.chains.get(chain, {}))

    def check_chains(self, declared: tuple[ChainConfig, ...]) -> None:
        """Every block under `chains` names a declared chain."""
        names = {c.name for c in declared}
        unknown = sorted(set(self.chains) - names)
        if unknown:
            raise ValueError(f"two_stage_tuning.chains names {unknown}, which params:two_stage.chains does not "
                             f"declare; declared chains: {sorted(names)}")


@dataclass(frozen=True)
class ChainPlan:
    """A chain's study, checked before anything is fitted: the ranker's `Plan` (its space's
    `model` / `training` part, base parameters, metric) and the chain."""

    chain: ChainConfig
    plan: Plan

    @property
    def space(self) -> ChainSpace:
        return self.plan.space  # type: ignore[return-value]


def plan_chain(
    chain: ChainConfig, tuning: ChainTuningConfig, ranker_params: Mapping[str, Any] | None, n_items: int | None = None
) -> ChainPlan:
    """The chain's study, validated: the base parameters are the ranker's `params:<ranker>` with
    the chain's `model` / `training` overrides (as the two_stage pipeline fits it), every space key
    must fit the ranker's config classes, N must fit the catalogue (`n_items`), and the metric
    must be a ranking metric. Errors name the chain and the parameter."""
    fam = get_family(chain.ranker)
    if not fam.trainable:
        raise ValueError(f"two_stage_tuning: chain {chain.name!r}: ranker {chain.ranker!r} has nothing to train")
    params = dict(ranker_params or {})
    base_model = {**params.get("model", {}), **chain.model}
    base_training = {k: v for k, v in {**params.get("training", {}), **chain.training}.items()
                     if k not in _NO_EARLY_STOPPING}
    try:
        fam.config.model_validate(base_model)
        TrainConfig.model_validate(base_training)
    except ValidationError as exc:
        raise ValueError(f"two_stage_tuning: chain {chain.name!r}: the ranker's base parameters do not "
                         f"validate: {exc.errors()[0]['msg']}") from None
    space = tuning.space
    if len(space):
        try:
            validate_space(fam, SearchSpace(model=space.model, training=space.training), base_model, base_training)
        except SpaceError as exc:
            raise SpaceError(chain.name, exc.key, exc.problem) from None
    if n_items is not None and space.n_max() > n_items:
        raise SpaceError(chain.name, N_PARAM, f"up to {space.n_max()} candidates per user, but the catalogue "
                                              f"holds {n_items} items; lower the range")
    metric = parse_metric(tuning.metric or "ndcg@10")
    if metric.kind != "ranking":
        raise SpaceError(chain.name, "metric", f"{metric.name!r} is not a ranking metric; the reranked "
                                               "lists are judged with e.g. ndcg@10, hr@10, recall@10")
    return ChainPlan(chain, Plan(fam, tuning, metric, None, space, base_model, base_training))


@dataclass
class ChainTuningResult(TuningResult):
    """A chain's `TuningResult`: the best N beside the ranker's parameters."""

    chain: ChainConfig | None = None

    def best_trial(self) -> optuna.trial.FrozenTrial:
        return self.best_trials[0]

    def best_params(self) -> dict[str, Any]:
        """The summary of `TuningResult.best_params` plus the chain, the best N and
        `two_stage_chain`: the block to paste into `two_stage.chains` (N and the chain's
        `model` / `training` overrides, tuned keys included)."""
        out = super().best_params()
        best = self.best_trial()
        model_over, train_over = decode_params(self.plan.space, best.params)
        n = int(best.params[N_PARAM])
        out["training"] = TrainConfig.model_validate({**self.plan.base_training, **train_over}).model_dump(
            mode="json", exclude=set(_NO_EARLY_STOPPING))
        paste = ChainConfig(retriever=self.chain.retriever, ranker=self.chain.ranker, n=n,
                            model={**self.chain.model, **model_over}, training={**self.chain.training, **train_over})
        out.update(
            family=self.plan.family.name, chain=self.chain.name, retriever=self.chain.retriever, split="valid",
            n=n,
            candidate_recall=best.user_attrs.get("candidate_recall"),
            retriever_value=best.user_attrs.get("retriever_value"),
            two_stage_chain=paste.model_dump(mode="json"),
        )
        return out


def _split_candidates(retriever: Recommender, train: InteractionData, valid: InteractionData, n: int,
                      config: TwoStageConfig, retriever_vectors: Any = None):
    """Labelled training candidates (head-refitted retriever copy, tail labels), the head, the
    validation candidates of the trained retriever and its seconds per user: all at `n`."""
    labelled, head = two_stage.training_candidates(retriever, train, n, config, retriever_vectors)
    served, seconds = two_stage.candidates_for(retriever, valid, n, config.batch_size, config.index)
    return labelled, head, served, seconds


def tune_chain(
    chain_plan: ChainPlan,
    retriever: Recommender,
    train: InteractionData,
    valid: InteractionData,
    storage_url: str,
    config: TwoStageConfig,
    *,
    name: str | None = None,
    item_vectors: Any = None,
    retriever_vectors: Any = None,
) -> ChainTuningResult:
    """Run `n_trials` trials (or until `timeout` / `max_trials`) of the chain's study `name` on
    `storage_url` (created, or resumed) and return the result.

    `retriever`: the chain's trained retriever (a `Recommender` fitted on `train`; its item side
    `retriever_vectors` for the head refit); `item_vectors`: the ranker's item side. Each trial
    draws N and the ranker's parameters, fits the ranker on the training tail's candidates cut to
    N (`training.two_stage.fit_ranker`, then served on the whole training period) and returns its
    reranked metric over `valid`'s users and their top-N candidates. Failed trials are recorded
    (`fail_reason`) and the study goes on; `TuningFailed` when none of this run completed."""
    chain, plan = chain_plan.chain, chain_plan.plan
    if len(valid) == 0:
        raise ValueError(f"two_stage_tuning: chain {chain.name!r}: the valid split is empty, there is nothing to tune on")
    if retriever.name != chain.retriever:
        raise ValueError(f"two_stage_tuning: chain {chain.name!r} needs retriever {chain.retriever!r}, got {retriever.name!r}")
    n_items = retriever._require_fitted().n_items
    plan_chain(chain, plan.tuning, {"model": plan.base_model, "training": plan.base_training}, n_items)
    space, metric, tuning = chain_plan.space, plan.metric, plan.tuning
    n_max = space.n_max()
    started = time.perf_counter()
    labelled, head, served, retrieval_s = _split_candidates(retriever, train, valid, n_max, config, retriever_vectors)
    logger.info("two_stage_tuning %s: candidates at N=%d in %.1f s (%d train, %d valid rows)",
                chain.name, n_max, time.perf_counter() - started, len(labelled), len(served))

    def objective(trial: optuna.Trial) -> float:
        try:
            if isinstance(space.n, CategoricalDist):
                n = int(trial.suggest_categorical(N_PARAM, space.n.choices))
            else:
                n = trial.suggest_int(N_PARAM, space.n.low, space.n.high, step=space.n.step)
            model_over, train_over = suggest(trial, space)
            model = {**plan.base_model, **model_over}
            training = {**plan.base_training, **train_over}
            ranker = two_stage.fit_ranker(chain.ranker, model, training, head, labelled[labelled["rank"] <= n],
                                          item_vectors, serve=train)  # fmt: skip
            scores = two_stage.evaluate_chain(served, ranker, valid, n, (metric.k,), retrieval_s)
            if metric.name not in scores["reranked"]:
                raise ValueError(f"metric {metric.name!r} is not among the reranked metrics {sorted(scores['reranked'])}")
            value = float(scores["reranked"][metric.name])
            if not math.isfinite(value):
                raise ValueError(f"the validation {metric.name} is {value} (no validation user with candidates?)")
            trial.set_user_attr("candidate_recall", scores[f"candidate_recall@{n}"])
            trial.set_user_attr("retriever_value", float(scores["retriever"][metric.name]))
            trial.set_user_attr("epochs", ranker.history.epochs if ranker.history else None)
            trial.set_user_attr("fit_seconds", round(ranker.fit_seconds or 0.0, 4))
            logger.info("two_stage_tuning %s trial %d: N=%d, reranked %s %.5f (retriever alone %.5f)", chain.name,
                        trial.number, n, metric.name, value, scores["retriever"][metric.name])  # fmt: skip
            return value
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("fail_reason", reason[:2000])
            logger.warning("two_stage_tuning %s trial %d failed: %s", chain.name, trial.number, reason)
            raise

    start = baseline_params(plan) if tuning.try_defaults and chain.n in space.n_values() else None
    study, mine, seconds = run_study(
        plan, storage_url, objective, name=name or chain.name, subject=f"two_stage_tuning: chain {chain.name!r}",
        pruner=optuna.pruners.NopPruner(), baseline=None if start is None else {**start, N_PARAM: chain.n},
        attrs={"chain": chain.name},
    )  # fmt: skip
    return ChainTuningResult(study, plan, redact(storage_url), seconds, [t.number for t in mine], chain)


def chain_trials_table(result: ChainTuningResult) -> pd.DataFrame:
    """`tuning.report.trials_table` with N first among the parameters and each trial's candidate
    recall@N and retriever-alone metric on the validation users."""
    table = report.trials_table(result)
    attrs = {t.number: t.user_attrs for t in result.study.trials}
    metric = result.plan.metric.name
    table["candidate_recall"] = [attrs[n].get("candidate_recall") for n in table["number"]]
    table[f"retriever_{metric}"] = [attrs[n].get("retriever_value") for n in table["number"]]
    table = table.drop(columns=["best_epoch"], errors="ignore")
    if N_PARAM in table:
        table[N_PARAM] = table[N_PARAM].astype("Int64")
    return table


def chain_trials_markdown(result: ChainTuningResult, table: pd.DataFrame) -> str:
    """The study summary (best N, the block to paste into `two_stage.chains`) and its trials."""
    import json

    best = result.best_params()
    _, _, rest = report.trials_markdown(result, table).partition("\n")
    lines = [
        f"# Two-stage tuning: {best['chain']}", "",
        f"- best N (candidates per user): {best['n']}; candidate recall@N {_fmt(best['candidate_recall'])}, "
        f"retriever alone {best['metric']} {_fmt(best['retriever_value'])}",
        f"- paste into `two_stage.chains` (conf/base/parameters_two_stage.yml): "
        f"`{json.dumps(best['two_stage_chain'])}`",
    ]
    return "\n".join(lines) + "\n" + rest.removeprefix("\n")


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.5f}"


def chain_history_figure(result: ChainTuningResult):
    """`tuning.report.history_figure`, titled with the chain."""
    fig = report.history_figure(result)
    fig.axes[0].set_title(f"{result.chain.name}: optimisation history (valid {result.plan.metric.name})")
    return fig


__all__ = ["ChainSpace", "ChainTuningConfig", "TwoStageTuningConfig", "ChainPlan", "plan_chain", "tune_chain",
           "ChainTuningResult", "chain_trials_table", "chain_trials_markdown", "chain_history_figure"]
