"""TrainConfig validation and device resolution."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from recforge.training.config import TrainConfig
from recforge.training.device import amp_dtype, resolve_device


def test_defaults_are_valid_and_frozen():
    c = TrainConfig()
    got = (c.epochs, c.batch_size, c.optimizer, c.lr, c.device, c.amp)
    assert got == (10, 1024, "adam", 1e-3, "auto", True)
    with pytest.raises(ValidationError):
        c.lr = 0.1


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": -1},
        {"batch_size": 0},
        {"lr": 0.0},
        {"weight_decay": -0.1},
        {"momentum": 1.0},
        {"optimizer": "rmsprop"},
        {"lr_schedule": "exponential"},
        {"warmup_epochs": -1},
        {"gamma": 1.5},
        {"grad_clip": 0.0},
        {"device": "tpu"},
        {"early_stopping_mode": "up"},
        {"patience": 0},
        {"seed": -1},
        {"num_threads": 0},
        {"learning_rate": 0.1},  # unknown key
    ],
)
def test_out_of_range_values_are_rejected(bad):
    with pytest.raises(ValidationError):
        TrainConfig(**bad)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ValueError):
        resolve_device("tpu")


def test_mixed_precision_only_on_cuda():
    assert amp_dtype(torch.device("cpu"), True) is None
    if torch.cuda.is_available():
        assert amp_dtype(torch.device("cuda"), True) in (torch.bfloat16, torch.float16)
        assert amp_dtype(torch.device("cuda"), False) is None
