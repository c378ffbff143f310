"""Distributed data parallel training (``torchrun --nproc-per-node N -m pedseg train ...``).

A run is distributed when the environment says so (``WORLD_SIZE`` > 1, with ``RANK`` and
``LOCAL_RANK``, as ``torchrun`` sets them). The process group uses NCCL on GPUs and Gloo on CPUs.
Every rank draws the same global batch and trains on its own disjoint shard (per-domain chunks kept),
gradients are averaged by :class:`~torch.nn.parallel.DistributedDataParallel` and rank 0's batch-norm
buffers are broadcast before each forward (``broadcast_buffers=True``), so the domain-specific
statistics stay per domain and identical on every rank. Only rank 0 writes files and reports events.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from pedseg.errors import TrainingError

__all__ = [
    "DistInfo",
    "all_reduce_mean",
    "barrier",
    "detect",
    "init_process_group",
    "shutdown",
    "wrap_model",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise TrainingError(
            f"environment variable {name} must be an integer, got {raw!r}"
        ) from None


def detect() -> DistInfo:
    """Read ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; a single process when they are absent."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise TrainingError(
            f"inconsistent distributed environment: WORLD_SIZE={world}, RANK={rank}, "
            f"LOCAL_RANK={local}; launch with torchrun"
        )
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def init_process_group(info: DistInfo, device: torch.device) -> bool:
    """Join the process group (NCCL for CUDA, Gloo otherwise); return whether this call created it."""
    if not info.enabled or dist.is_initialized():
        return False
    if not dist.is_available():
        raise TrainingError("this torch build has no torch.distributed; run on a single process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    logger.info("rank %d/%d joined the %s process group", info.rank, info.world_size, backend)
    return True


def shutdown(created: bool) -> None:
    """Leave the process group if :func:`init_process_group` created it."""
    if created and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: Tensor, info: DistInfo) -> Tensor:
    """The mean of ``values`` over the ranks (a non-finite value on any rank reaches every rank)."""
    if not info.enabled or not dist.is_initialized():
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def broadcast_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank."""
    if not info.enabled or not dist.is_initialized():
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(value, src=0)
    return bool(value.item() > 0.5)


def broadcast_int(value: int, info: DistInfo, device: torch.device) -> int:
    """Rank 0's ``value`` on every rank."""
    if not info.enabled or not dist.is_initialized():
        return value
    tensor = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.broadcast(tensor, src=0)
    return int(tensor.item())


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """``model`` in :class:`DistributedDataParallel` when distributed, else unchanged.

    Every domain is in every rank's batch, so every parameter gets a gradient each step and
    ``find_unused_parameters`` stays off. Buffers (the DSBN running statistics) are broadcast from
    rank 0 at every forward, DDP's default, so all ranks keep identical per-domain statistics; the
    default is left implicit because passing ``broadcast_buffers`` now raises a FutureWarning.
    """
    if not info.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" and device.index is not None else None
    return DistributedDataParallel(model, device_ids=device_ids)
