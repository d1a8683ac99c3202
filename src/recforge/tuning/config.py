"""`TuningConfig`: one family's study — budget, metric, sampler, pruner, storage and space."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from recforge.evaluation.selection import parse_metric
from recforge.tuning.space import SearchSpace


class TuningConfig(BaseModel):
    """How to tune one family (a block of `conf/base/parameters_tuning.yml` under `tuning:`).

    - `n_trials`: trials this run adds to the study (each worker of a shared study runs its own
      `n_trials`); `max_trials`, when set, stops every worker once the study holds that many
      finished trials, so re-running a killed study tops it up instead of growing it; `timeout`
      (seconds) stops this run after the trial that crosses it.
    - `metric`: a model-selection metric (`evaluation.selection`): `ndcg@10`, `rmse`,
      `next_item_mrr@20`, ...; `None` picks the family's default (rmse for rating families,
      next_item_mrr@20 for next-item families, else ndcg@10). Its direction comes with it.
    - `second_objective`: optimise the metric and `fit_seconds` (minimised) or `coverage@K`
      (maximised) together; the study then reports its Pareto front. Optuna cannot prune a
      multi-objective trial, so it needs `pruner: none`.
    - `sampler`: `tpe` (default), `random`, `cmaes` or `qmc` (Sobol), seeded by `seed`; the same
      seed and storage state give the same suggestions. `pruner`: `median`, `successive_halving`,
      `hyperband` (multi-fidelity over epochs) or `none`; `min_epochs` epochs run before a trial
      can be pruned, and `startup_trials` trials run unpruned.
    - `patience`: early-stopping patience on the metric inside each trial (None: the family's).
    - `storage`: an SQLAlchemy URL (PostgreSQL for many workers); None is the embedded SQLite file
      `data/06_models/tuning/<family>/study.db`. Kedro credentials (`tuning_storage`) override it.
      `try_defaults`: a new study's first trial is the family's own parameters (when they lie in
      the space), so the best trial is never worse on valid than the default (workers that open a
      new study at the same moment may each run it once).
      `heartbeat_seconds`: a running trial's heartbeat on a database storage; a worker that dies
      leaves its trial to be failed (and retried once) by the next worker after twice as long.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_trials: int = Field(10, description="trials this run adds")
    max_trials: int | None = Field(None, gt=0)
    timeout: float | None = Field(None, gt=0)
    metric: str | None = None
    second_objective: str | None = None
    sampler: Literal["tpe", "random", "cmaes", "qmc"] = "tpe"
    pruner: Literal["none", "median", "successive_halving", "hyperband"] = "median"
    min_epochs: int = Field(1, ge=1)
    startup_trials: int = Field(3, ge=0)
    patience: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0)
    storage: str | None = None
    study_name: str | None = None
    heartbeat_seconds: int = Field(30, ge=1)
    try_defaults: bool = Field(True, description="a new study's trial 0 is the family's base parameters")
    space: SearchSpace = Field(default_factory=SearchSpace)

    @field_validator("n_trials")
    @classmethod
    def _positive_trials(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"n_trials must be at least 1, got {v}: a study with no trials has nothing to report")
        return v

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str | None) -> str | None:
        return None if v is None else parse_metric(v).name

    @field_validator("second_objective")
    @classmethod
    def _known_second(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if v == "fit_seconds" or (v.startswith("coverage@") and parse_metric(v).kind == "ranking"):
            return v
        raise ValueError(f"second_objective must be 'fit_seconds' or 'coverage@K', got {v!r}")

    @model_validator(mode="after")
    def _no_pruning_with_two_objectives(self) -> TuningConfig:
        if self.second_objective and self.pruner != "none":
            raise ValueError(
                f"second_objective={self.second_objective!r} needs pruner: none "
                "(Optuna cannot prune multi-objective trials)"
            )
        return self
