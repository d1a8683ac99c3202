"""Search spaces as data: typed distributions per key of a family's `model` or `training` config.

A space is what `conf/base/parameters_tuning.yml` declares under a family's `space:`

    space:
      model:
        dim: {type: int, low: 16, high: 128, log: true}
        layers: {type: categorical, choices: [[64, 32, 16], [128, 64, 32]]}
      training:
        lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}

`validate_space` checks it against the family's config class and `TrainConfig` before any trial
runs; `suggest` draws one configuration from an Optuna trial.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recforge.training.config import TrainConfig

Section = Literal["model", "training"]
# the loop's own bookkeeping: the tuning study sets these, a space may not
RESERVED_TRAINING = ("early_stopping_metric", "early_stopping_mode", "device", "progress", "log_every", "seed")


class SpaceError(ValueError):
    """A search space that cannot be sampled: names the family, the key and the problem."""

    def __init__(self, family: str, key: str, problem: str) -> None:
        self.family, self.key, self.problem = family, key, problem
        super().__init__(f"tuning space of {family!r}, key {key!r}: {problem}")


class _Dist(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FloatDist(_Dist):
    """`trial.suggest_float(low, high, log=, step=)`."""

    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(None, gt=0)

    def bounds_problem(self) -> str | None:
        if self.low >= self.high:
            return f"low ({self.low}) must be below high ({self.high})"
        if self.log and self.low <= 0:
            return f"a log range needs low > 0, got low={self.low}"
        if self.log and self.step is not None:
            return "log and step cannot be combined"
        return None

    def edges(self) -> list[Any]:
        return [self.low, self.high]


class IntDist(_Dist):
    """`trial.suggest_int(low, high, log=, step=)`."""

    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(1, gt=0)

    def bounds_problem(self) -> str | None:
        if self.low >= self.high:
            return f"low ({self.low}) must be below high ({self.high})"
        if self.log and self.low <= 0:
            return f"a log range needs low > 0, got low={self.low}"
        if self.log and self.step != 1:
            return "log and step cannot be combined"
        return None

    def edges(self) -> list[Any]:
        return [self.low, self.high]


class CategoricalDist(_Dist):
    """`trial.suggest_categorical(choices)`; a choice may be a list (an MLP layer stack), which
    Optuna stores as its JSON text and `suggest` turns back into the list."""

    type: Literal["categorical"]
    choices: list[Any]

    @model_validator(mode="after")
    def _scalars_or_lists(self) -> CategoricalDist:
        for c in self.choices:
            if isinstance(c, dict):
                raise ValueError(f"a choice must be a number, string, bool, null or list; got {c!r}")
        return self

    def bounds_problem(self) -> str | None:
        if not self.choices:
            return "an empty choice list"
        texts = [json.dumps(c) for c in self.choices]
        if len(set(texts)) != len(texts):
            return f"repeated choices {self.choices}"
        return None

    def edges(self) -> list[Any]:
        return list(self.choices)

    def optuna_choices(self) -> list[Any]:
        return [json.dumps(c) if isinstance(c, list) else c for c in self.choices]

    def decode(self, value: Any) -> Any:
        if isinstance(value, str) and any(isinstance(c, list) for c in self.choices):
            for c in self.choices:
                if isinstance(c, list) and json.dumps(c) == value:
                    return c
        return value


Distribution = Annotated[FloatDist | IntDist | CategoricalDist, Field(discriminator="type")]


class SearchSpace(BaseModel):
    """Distributions per key of the family's `model` config and of `TrainConfig`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: dict[str, Distribution] = Field(default_factory=dict)
    training: dict[str, Distribution] = Field(default_factory=dict)

    def items(self) -> list[tuple[Section, str, Distribution]]:
        """(section, key, distribution), model keys first, each in declaration order."""
        return [("model", k, d) for k, d in self.model.items()] + [
            ("training", k, d) for k, d in self.training.items()
        ]

    def __len__(self) -> int:
        return len(self.model) + len(self.training)


def param_name(section: Section, key: str) -> str:
    """The Optuna parameter name of a key: `model.dim`, `training.lr`."""
    return f"{section}.{key}"


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{err['msg']} (got {err.get('input')!r})"


def validate_space(
    family: Any, space: SearchSpace | dict[str, Any], base_model: dict[str, Any], base_training: dict[str, Any]
) -> SearchSpace:
    """The space, checked against `family.config` and `TrainConfig`; raises `SpaceError`.

    Each key must be a field of its config class (and not one the study itself sets); each range
    must be sound (low < high, log only with low > 0, a non-empty choice list); and every edge of
    the range (low, high and each choice) must be a value the config class accepts together with
    the family's base parameters.
    """
    name = family.name
    if not isinstance(space, SearchSpace):
        try:
            space = SearchSpace.model_validate(space or {})
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise SpaceError(name, loc or "space", err["msg"]) from None
    if not len(space):
        raise SpaceError(name, "space", "no keys to tune; declare at least one under space.model or space.training")
    classes = {"model": family.config, "training": TrainConfig}
    bases = {"model": dict(base_model or {}), "training": dict(base_training or {})}
    for section, key, dist in space.items():
        cls = classes[section]
        if key not in cls.model_fields:
            raise SpaceError(
                name, f"{section}.{key}",
                f"{cls.__name__} has no field {key!r}; its fields: {sorted(cls.model_fields)}",
            )  # fmt: skip
        if section == "training" and key in RESERVED_TRAINING:
            raise SpaceError(name, f"{section}.{key}", "set by the tuning study itself; it cannot be searched")
        problem = dist.bounds_problem()
        if problem:
            raise SpaceError(name, f"{section}.{key}", problem)
        for value in dist.edges():
            try:
                cls.model_validate({**bases[section], key: value})
            except ValidationError as exc:
                raise SpaceError(
                    name, f"{section}.{key}", f"{cls.__name__} rejects {value!r}: {_first_error(exc)}"
                ) from None
    return space


def suggest(trial: Any, space: SearchSpace) -> tuple[dict[str, Any], dict[str, Any]]:
    """One draw from `trial` (an `optuna.Trial`): (model overrides, training overrides)."""
    out: dict[str, dict[str, Any]] = {"model": {}, "training": {}}
    for section, key, dist in space.items():
        pname = param_name(section, key)
        if isinstance(dist, FloatDist):
            value = trial.suggest_float(pname, dist.low, dist.high, log=dist.log, step=dist.step)
        elif isinstance(dist, IntDist):
            value = trial.suggest_int(pname, dist.low, dist.high, log=dist.log, step=dist.step)
        else:
            value = dist.decode(trial.suggest_categorical(pname, dist.optuna_choices()))
        out[section][key] = value
    return out["model"], out["training"]


def decode_params(space: SearchSpace, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's stored `params` (Optuna names) back into (model, training) overrides."""
    out: dict[str, dict[str, Any]] = {"model": {}, "training": {}}
    for section, key, dist in space.items():
        pname = param_name(section, key)
        if pname in params:
            value = params[pname]
            out[section][key] = dist.decode(value) if isinstance(dist, CategoricalDist) else value
    return out["model"], out["training"]
