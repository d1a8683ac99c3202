"""`TrainConfig`: the fit loop's hyper-parameters, shared by every family."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """How to fit a network: optimiser, schedule, device, early stopping, seed.

    Frozen and strict (unknown keys are rejected) so a typo in `parameters_*.yml` fails before any
    node runs. Sparse embeddings (`nn.Embedding(sparse=True)`) need `sparse_adam`, `sgd` or
    `adagrad`; they never receive `weight_decay` (it would densify their gradient), so regularise
    them in the family's loss instead. The learning rate is set per epoch by `lr_schedule`;
    `step` multiplies it by `gamma` every `step_size` epochs. `fused` steps the dense parameters
    with torch's fused optimiser kernels where the device has them (CPU and CUDA): the same
    update up to float rounding, several times faster on CPU. `num_threads` sets torch's CPU
    threads for the fit (restored after it; None keeps the process's setting): the small
    per-batch ops of embedding models can run faster on one thread than on two when the cores
    are shared, since every op then waits for a sleeping OpenMP worker to wake.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(10, ge=0)
    batch_size: int = Field(1024, gt=0)
    optimizer: Literal["adam", "adamw", "sgd", "sparse_adam", "adagrad"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    lr_schedule: Literal["constant", "cosine", "step", "linear_warmup_cosine"] = "constant"
    warmup_epochs: int = Field(0, ge=0)
    step_size: int = Field(10, gt=0)
    gamma: float = Field(0.1, gt=0, le=1)
    grad_clip: float | None = Field(None, gt=0)
    fused: bool = True
    num_threads: int | None = Field(None, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True
    early_stopping_metric: str | None = None
    early_stopping_mode: Literal["max", "min"] = "max"
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0)
    seed: int = Field(0, ge=0)
    log_every: int = Field(0, ge=0)
    progress: bool = False
