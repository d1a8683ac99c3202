"""Where training runs, and the mixed-precision policy that goes with it."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch


def resolve_device(name: str) -> torch.device:
    """`"auto"` -> CUDA when available, else CPU; `"cuda"` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA GPU is available; use 'auto' or 'cpu'")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; expected 'auto', 'cpu' or 'cuda'")
    return torch.device(name)


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """The autocast dtype on this device: bf16 where supported, else fp16; None off CUDA.

    CPU autocast is left off: it is slower than fp32 for the small matmuls of recommenders.
    """
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """`torch.autocast` for `dtype`, or a no-op context when mixed precision is off."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move a batch's tensors to `device`; non-blocking so host-to-GPU copies overlap compute."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        for k, v in batch.items()
    }
