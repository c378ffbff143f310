"""Compute setup: device, mixed precision, memory format, threads and seeding."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

from pedseg.errors import ConfigError, DeviceError

__all__ = [
    "autocast",
    "configure_threads",
    "resolve_amp",
    "resolve_channels_last",
    "resolve_device",
    "seed_everything",
]

logger = logging.getLogger(__name__)
THREADS_ENV = "PEDSEG_NUM_THREADS"


_FALLBACK_WARNED: set[str] = set()


def resolve_device(
    name: str, *, local_rank: int = 0, allow_cpu_fallback: bool = False
) -> torch.device:
    """``auto`` = CUDA when available (this rank's GPU under DDP), else CPU. A CUDA device that is
    not there is a :class:`DeviceError`, or, with ``allow_cpu_fallback``, the CPU with a warning
    (logged once per process): every part of a command (recognition, torch and onnx backends)
    asks here, so the fallback holds for all of them."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if allow_cpu_fallback:
            if name not in _FALLBACK_WARNED:
                _FALLBACK_WARNED.add(name)
                logger.warning(
                    "--device %s: PyTorch sees no CUDA GPU; running on the CPU "
                    "(--allow-cpu-fallback)",
                    name,
                )
            return torch.device("cpu")
        raise DeviceError(
            f"device {name!r} was requested but no CUDA GPU is available; use --device cpu, "
            "or --allow-cpu-fallback to run on the CPU"
        )
    if name == "cuda":
        index = local_rank % torch.cuda.device_count()
        return torch.device("cuda", index)
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(
            f"device {name!r} does not exist: {torch.cuda.device_count()} GPU(s) are visible"
        )
    return device


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 on a GPU that supports it (``auto``), ``None`` for fp32."""
    if mode == "off":
        return None
    if mode == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if mode == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise DeviceError(f"amp 'bf16' was requested but {device} does not support bfloat16")
        return torch.bfloat16
    raise ConfigError(f"amp must be 'auto', 'bf16' or 'off', got {mode!r}")


def resolve_channels_last(setting: bool | None, device: torch.device) -> bool:
    return device.type == "cuda" if setting is None else setting


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Autocast to ``dtype`` on ``device``; a no-op for fp32."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def configure_threads() -> None:
    """Honour ``PEDSEG_NUM_THREADS`` (torch's own default otherwise)."""
    raw = os.environ.get(THREADS_ENV)
    if not raw:
        return
    try:
        threads = int(raw)
    except ValueError:
        raise ConfigError(f"{THREADS_ENV} must be a positive integer, got {raw!r}") from None
    if threads < 1:
        raise ConfigError(f"{THREADS_ENV} must be a positive integer, got {raw!r}")
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
        logger.info("using %d torch threads (%s)", threads, THREADS_ENV)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
