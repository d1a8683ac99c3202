"""The Optuna objective built from the registry, and the study that runs it.

`tune(family, base_model, base_training, tuning, train, valid)` samples a configuration per
trial, fits it with THE fit loop (`Recommender.fit`, early stopping on the validation metric),
reports that metric to the trial every epoch so a pruner can stop bad trials, and returns a
`TuningResult`. Only the train and valid splits are ever passed in: the test split is not an
argument of anything here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
import scipy.sparse as sp
import torch

from recforge.data.interactions import InteractionData
from recforge.evaluation.selection import Metric, check_metric, parse_metric
from recforge.models.base import Family
from recforge.models.registry import get_family
from recforge.training.config import TrainConfig
from recforge.training.recommender import Recommender, uses_ratings
from recforge.tuning.config import TuningConfig
from recforge.tuning.space import SearchSpace, decode_params, suggest, validate_space
from recforge.tuning.storage import open_storage, redact

logger = logging.getLogger(__name__)

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


class TuningFailed(RuntimeError):
    """No trial of the run completed; the message shows the first failure."""


def default_metric(family: Family, model: Mapping[str, Any]) -> str:
    """rmse for rating families, next_item_mrr@20 for next-item ones, else ndcg@10."""
    if uses_ratings(family, family.config.model_validate(dict(model))):
        return "rmse"
    return "next_item_mrr@20" if family.next_item else "ndcg@10"


@dataclass(frozen=True)
class Plan:
    """A family's study, checked before any trial runs."""

    family: Family
    tuning: TuningConfig
    metric: Metric
    second: Metric | None  # coverage@K, or None (fit_seconds needs no metric)
    space: SearchSpace
    base_model: dict[str, Any]
    base_training: dict[str, Any]

    @property
    def directions(self) -> list[str]:
        """Optuna directions: the metric's, then the second objective's."""
        dirs = [self.metric.direction]
        if self.tuning.second_objective == "fit_seconds":
            dirs.append("minimize")
        elif self.second is not None:
            dirs.append(self.second.direction)
        return dirs

    @property
    def objective_names(self) -> list[str]:
        names = [self.metric.name]
        if self.tuning.second_objective:
            names.append(self.tuning.second_objective)
        return names


def plan_study(
    family: str,
    base_model: Mapping[str, Any] | Any,
    base_training: Mapping[str, Any] | Any,
    tuning: TuningConfig | Mapping[str, Any],
) -> Plan:
    """Everything a study needs, validated: family, metric (fits the family), space (fits its
    config classes). Raises a `ValueError` naming the family, the key and the problem."""
    fam = get_family(family)
    tuning = tuning if isinstance(tuning, TuningConfig) else TuningConfig.model_validate(dict(tuning))
    model = _as_dict(base_model)
    training = _as_dict(base_training)
    fam.config.model_validate(model)
    TrainConfig.model_validate(training)
    metric = check_metric(tuning.metric or default_metric(fam, model), fam, uses_ratings(fam, fam.config.model_validate(model)))
    second = None
    if tuning.second_objective and tuning.second_objective != "fit_seconds":
        second = parse_metric(tuning.second_objective)
    space = validate_space(fam, tuning.space, model, training)
    return Plan(fam, tuning, metric, second, space, model, training)


def _as_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "model_dump"):
        return config.model_dump(exclude_unset=True)
    return dict(config)


class PruningCallback:
    """The fit loop's per-epoch hook: reports the validation metric to the trial (step = epoch)
    and raises `optuna.TrialPruned` when the pruner says so; the loop lets it through, and
    nothing is saved for a pruned trial."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial, self.metric = trial, metric

    def on_epoch_end(self, epoch: int, logs: dict[str, Any]) -> bool | None:
        value = logs["metrics"].get(self.metric)
        if value is None or not math.isfinite(value):
            return None
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch + 1} with {self.metric} {value:.5f}")
        return None


class _PerTrialSeed(optuna.samplers.BaseSampler):
    """Reseeds the wrapped sampler from `(seed, trial.number)` before each trial.

    Trial numbers come from the storage, so the suggestions are a function of the seed and the
    storage state; a resumed study does not replay its first configurations, and two workers that
    start together on one study do not draw the same ones.
    """

    def __init__(self, sampler: optuna.samplers.BaseSampler, seed: int) -> None:
        self._sampler, self._seed = sampler, seed

    def _reseed(self, seed: int) -> None:
        for obj in (self._sampler, getattr(self._sampler, "_random_sampler", None)):
            rng = getattr(obj, "_rng", None)
            if rng is not None and hasattr(rng, "rng"):
                rng.rng.seed(seed % 2**32)

    def before_trial(self, study, trial) -> None:
        # a hash of (seed, number): studies seeded 1 and 2 do not share draws one trial apart
        self._reseed(int(np.random.SeedSequence([self._seed, trial.number]).generate_state(1)[0]))
        self._sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self._sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler.reseed_rng()


def make_sampler(tuning: TuningConfig, n_objectives: int = 1) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded."""
    seed = tuning.seed
    if tuning.sampler == "tpe":
        base: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(tuning.startup_trials, 1))
    elif tuning.sampler == "random":
        base = optuna.samplers.RandomSampler(seed=seed)
    elif tuning.sampler == "qmc":
        # QMC keeps its own position in the Sobol sequence in the storage: no per-trial reseed
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=seed, warn_independent_sampling=False)
    else:
        if n_objectives > 1:
            raise ValueError("sampler 'cmaes' optimises one objective; use 'tpe' or 'random' with second_objective")
        base = optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return _PerTrialSeed(base, seed)


def make_pruner(tuning: TuningConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    """The configured pruner; steps are epochs (multi-fidelity over epochs)."""
    if tuning.pruner == "none":
        return optuna.pruners.NopPruner()
    if tuning.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tuning.startup_trials, n_warmup_steps=tuning.min_epochs - 1)
    if tuning.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=tuning.min_epochs, reduction_factor=3)
    return optuna.pruners.HyperbandPruner(
        min_resource=tuning.min_epochs, max_resource=max(max_epochs, tuning.min_epochs + 1), reduction_factor=3
    )


@dataclass
class TuningResult:
    """What a run of a study gives: the study, its best configuration and this run's timing."""

    study: optuna.Study
    plan: Plan
    storage_url: str  # redacted
    seconds: float  # wall time of this run
    run_trials: list[int] = field(default_factory=list)  # numbers of the trials this run made

    @property
    def best_trials(self) -> list[optuna.trial.FrozenTrial]:
        """The best trial (one objective) or the Pareto front (two)."""
        if len(self.plan.directions) == 1:
            return [self.study.best_trial]
        return list(self.study.best_trials)

    def best_overrides(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """(model, training) overrides of the best trial (the front's best first objective)."""
        pick = max if self.plan.metric.direction == "maximize" else min
        chosen = pick(self.best_trials, key=lambda t: t.values[0])
        return decode_params(self.plan.space, chosen.params)

    def best_params(self) -> dict[str, Any]:
        """The full configs to train with (base parameters + the best overrides) and a summary."""
        model_over, train_over = self.best_overrides()
        plan = self.plan
        model = plan.family.config.model_validate({**plan.base_model, **model_over}).model_dump(mode="json")
        training = {**plan.base_training, **train_over, **_fixed_training(plan)}
        finished = [t for t in self.study.trials if t.state in FINISHED]
        complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
        best = self.best_trials
        chosen_values = [t.values for t in best]
        return {
            "family": plan.family.name,
            "study_name": self.study.study_name,
            "storage": self.storage_url,
            "metric": plan.metric.name,
            "direction": plan.metric.direction,
            "objectives": plan.objective_names,
            # one objective: its best value; two: the Pareto front, which may be a single trial
            # when one trial is best on both
            "best_value": best[0].values[0] if len(plan.objective_names) == 1 else None,
            "pareto_front": [dict(zip(plan.objective_names, v, strict=True)) for v in chosen_values]
            if len(plan.objective_names) > 1 else None,
            "model": model,
            "training": training,
            "tuned_keys": sorted([f"model.{k}" for k in model_over] + [f"training.{k}" for k in train_over]),
            "n_trials": len(finished),
            "n_complete": len(complete),
            "n_pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in finished),
            "n_failed": sum(t.state == optuna.trial.TrialState.FAIL for t in finished),
            "run_trials": len(self.run_trials),
            "tuning_seconds": round(self.seconds, 3),
            "study_seconds": round(sum(_duration(t) for t in finished), 3),
        }


def _duration(trial: optuna.trial.FrozenTrial) -> float:
    if trial.datetime_start and trial.datetime_complete:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return 0.0


def baseline_params(plan: Plan) -> dict[str, Any] | None:
    """The base parameters' values of the space's keys as Optuna params, or None when one of them
    lies outside its distribution (then the study starts from the sampler alone)."""
    from recforge.tuning.space import CategoricalDist, param_name

    configs = {
        "model": plan.family.config.model_validate(plan.base_model).model_dump(mode="json"),
        "training": TrainConfig.model_validate(plan.base_training).model_dump(mode="json"),
    }
    out: dict[str, Any] = {}
    for section, key, dist in plan.space.items():
        value = configs[section].get(key)
        if isinstance(dist, CategoricalDist):
            if value not in dist.choices:
                return None
            value = dist.optuna_choices()[dist.choices.index(value)]
        elif value is None or not dist.low <= value <= dist.high:
            return None
        elif dist.step and not math.isclose((value - dist.low) / dist.step, round((value - dist.low) / dist.step)):
            return None  # off the grid of a stepped range
        out[param_name(section, key)] = value
    return out


def trial_configs(plan: Plan, trial: optuna.Trial) -> tuple[Any, TrainConfig]:
    """The family config and TrainConfig of one trial: base parameters, then the trial's draw,
    then what the study fixes (early stopping on its metric, no progress bars)."""
    model_over, train_over = suggest(trial, plan.space)
    model = plan.family.config.model_validate({**plan.base_model, **model_over})
    training = TrainConfig.model_validate({**plan.base_training, **train_over, **_fixed_training(plan)})
    return model, training


def _fixed_training(plan: Plan) -> dict[str, Any]:
    """What the study fixes in every trial's TrainConfig: early stopping on its metric."""
    fixed: dict[str, Any] = {"early_stopping_metric": plan.metric.name, "early_stopping_mode": plan.metric.mode}
    if plan.tuning.patience is not None:
        fixed["patience"] = plan.tuning.patience
    return fixed


def make_objective(
    plan: Plan,
    train: InteractionData,
    valid: InteractionData,
    *,
    seen: sp.csr_matrix | None = None,
    item_vectors: torch.Tensor | None = None,
    warm_start: Mapping[str, Any] | None = None,
):
    """`objective(trial)`: sample, fit on train with early stopping on valid, return the metric
    (and the second objective). A raised error or a NaN is recorded on the trial as
    `fail_reason` before Optuna marks it failed."""
    pruning = plan.tuning.pruner != "none" and len(plan.directions) == 1
    extra = [plan.second.name] if plan.second is not None else []

    def objective(trial: optuna.Trial):
        try:
            model, training = trial_configs(plan, trial)
            rec = Recommender(plan.family.name, model, training)
            callbacks = [PruningCallback(trial, plan.metric.name)] if pruning else []
            history = rec.fit(
                train, valid, seen=seen, item_vectors=item_vectors, warm_start=warm_start,
                callbacks=callbacks, metrics=extra,
            )  # fmt: skip
            if history.best_metric is not None and history.best_epoch is not None:
                scores = dict(history.metrics[history.best_epoch])
            else:  # fitted in `build` (no epochs): validate the fitted model once
                scores = rec._validator(valid, extra)(rec.network)
            value = scores.get(plan.metric.name, float("nan"))
            if not math.isfinite(value):
                raise ValueError(f"the validation {plan.metric.name} is {value} (an empty or degenerate valid split?)")
            trial.set_user_attr("epochs", history.epochs)
            trial.set_user_attr("best_epoch", history.best_epoch)
            trial.set_user_attr("stop_reason", history.stop_reason)
            trial.set_user_attr("fit_seconds", round(rec.fit_seconds or 0.0, 4))
            logger.info("%s trial %d: %s %.5f (%d epochs, %.1f s)", plan.family.name, trial.number,
                        plan.metric.name, value, history.epochs, rec.fit_seconds or 0.0)  # fmt: skip
            if plan.tuning.second_objective == "fit_seconds":
                return value, float(rec.fit_seconds or 0.0)
            if plan.second is not None:
                return value, float(scores[plan.second.name])
            return value
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("fail_reason", reason[:2000])
            logger.warning("%s trial %d failed: %s", plan.family.name, trial.number, reason)
            raise

    return objective


def study_name(family: str, source: str | None, tuning: TuningConfig) -> str:
    """`tuning.study_name`, else `<family>.<source>` (one study per family and data source)."""
    return tuning.study_name or (f"{family}.{source}" if source else family)


def run_study(
    plan: Plan,
    storage_url: str,
    objective: Callable[[optuna.Trial], Any],
    *,
    name: str,
    subject: str,
    pruner: optuna.pruners.BasePruner,
    baseline: dict[str, Any] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> tuple[optuna.Study, list[optuna.trial.FrozenTrial], float]:
    """Create (or resume) the study `name` on `storage_url` with the plan's directions and
    sampler, enqueue `baseline` as the first trial of a new study, run `plan.tuning.n_trials`
    trials of `objective` (or until `timeout` / `max_trials`) and return (the study, this run's
    trials, its seconds). Failed trials are recorded and the study goes on; `TuningFailed`
    (naming `subject`) when no trial of this run completed."""
    tuning = plan.tuning
    study = optuna.create_study(
        storage=open_storage(storage_url, tuning.heartbeat_seconds),
        study_name=name,
        sampler=make_sampler(tuning, len(plan.directions)),
        pruner=pruner,
        directions=plan.directions,
        load_if_exists=True,
    )
    if list(study.directions) != [optuna.study.StudyDirection[d.upper()] for d in plan.directions]:
        raise ValueError(
            f"study {study.study_name!r} in {redact(storage_url)} was created with directions "
            f"{[d.name.lower() for d in study.directions]}, not {plan.directions}; set another study_name"
        )
    if not study.trials and baseline is not None:  # trial 0: the declared parameters, so tuned is never worse on valid
        study.enqueue_trial(baseline, user_attrs={"baseline": True})
    study.set_user_attr("metric", plan.metric.name)
    study.set_user_attr("objectives", plan.objective_names)
    for key, value in (attrs or {}).items():
        study.set_user_attr(key, value)
    callbacks = []
    if tuning.max_trials is not None:
        callbacks.append(optuna.study.MaxTrialsCallback(tuning.max_trials, states=FINISHED))
        if sum(t.state in FINISHED for t in study.trials) >= tuning.max_trials:
            logger.info("study %s already holds %d finished trials (max_trials)", study.study_name, tuning.max_trials)
    made: list[int] = []  # this run's trials (other workers may add theirs to the study meanwhile)

    def counted(trial: optuna.Trial):
        made.append(trial.number)
        return objective(trial)

    t0 = time.perf_counter()
    remaining = tuning.n_trials
    if tuning.max_trials is not None:
        remaining = min(remaining, max(tuning.max_trials - sum(t.state in FINISHED for t in study.trials), 0))
    if remaining:
        study.optimize(
            counted, n_trials=remaining, timeout=tuning.timeout, catch=(Exception,),
            callbacks=callbacks, gc_after_trial=False,
        )  # fmt: skip
    seconds = time.perf_counter() - t0
    mine = [t for t in study.trials if t.number in set(made)]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    failed = [t for t in mine if t.state == optuna.trial.TrialState.FAIL]
    if not complete or (mine and len(failed) == len(mine)):
        first = failed[0].user_attrs.get("fail_reason", "no reason recorded") if failed else None
        detail = f"the first failure (trial {failed[0].number}): {first}" if failed else "every trial was pruned"
        raise TuningFailed(
            f"{subject}: none of the {len(mine)} trial(s) of this run of study {study.study_name!r} "
            f"completed; {detail}"
        )
    return study, mine, seconds


def tune(
    plan: Plan,
    train: InteractionData,
    valid: InteractionData,
    storage_url: str,
    *,
    name: str | None = None,
    seen: sp.csr_matrix | None = None,
    item_vectors: torch.Tensor | None = None,
    warm_start: Mapping[str, Any] | None = None,
) -> TuningResult:
    """Run `plan.tuning.n_trials` trials (or until `timeout` / `max_trials`) of the study `name`
    on `storage_url` (created, or resumed when it exists) and return the result. Failed trials
    are recorded and the study goes on; `TuningFailed` when no trial of this run completed."""
    if len(valid) == 0:
        raise ValueError(f"{plan.family.name}: the valid split is empty, there is nothing to tune on")
    tuning = plan.tuning
    fit_trial = make_objective(plan, train, valid, seen=seen, item_vectors=item_vectors, warm_start=warm_start)
    pruner = make_pruner(tuning, int(plan.base_training.get("epochs", TrainConfig().epochs)))
    baseline = baseline_params(plan) if tuning.try_defaults else None
    study, mine, seconds = run_study(plan, storage_url, fit_trial, name=name or plan.family.name,
                                     subject=plan.family.name, pruner=pruner, baseline=baseline)  # fmt: skip
    result = TuningResult(study, plan, redact(storage_url), seconds, [t.number for t in mine])
    logger.info(
        "%s: %d trial(s) in %.1f s; best %s %s", plan.family.name, len(mine), seconds, plan.metric.name,
        [round(v, 5) for t in result.best_trials[:1] for v in t.values],
    )  # fmt: skip
    return result
