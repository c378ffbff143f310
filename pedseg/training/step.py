"""One training step: gather a batch from the caches, augment it on the device, compute the losses.

Losses per scheme: ``dsl-contrastive`` = Eq. 2 cross-entropy + ``lam`` x SupCon(z, domain) (Eq. 3,
temperature ``tau``); ``dsl``, ``joint`` and ``baseline`` = the cross-entropy only. With
``seg_loss="dice-ce"`` (not the paper's) every scheme adds the multi-domain soft Dice loss. For ``joint`` the
whole batch goes through the single shared head (route ``[(0, N)]``) against union-space targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from pedseg.data.augment import (
    AugmentConfig,
    apply_augmentation,
    augmentation_generator,
    sample_params,
)
from pedseg.data.sampler import SampledBatch
from pedseg.training.losses import (
    multi_domain_cross_entropy,
    multi_domain_soft_dice,
    supervised_contrastive_loss,
)
from pedseg.training.prepare import DomainData

__all__ = ["HostBatch", "LossTerms", "compute_losses", "gather_batch", "to_device"]


@dataclass(frozen=True)
class HostBatch:
    """A batch on the host: images (N, 1, H, W) float32, class targets (N, H, W) int64."""

    images: np.ndarray
    targets: np.ndarray
    chunks: list[tuple[int, int]]
    positions: np.ndarray


@dataclass(frozen=True)
class LossTerms:
    """The loss terms of one step; ``dice`` is 0 unless ``seg_loss="dice-ce"``."""

    ce: Tensor
    contrastive: Tensor
    total: Tensor
    dice: Tensor

    def stacked(self) -> Tensor:
        """``[ce, contrastive, total, dice]``, detached (for logging and all-reduce)."""
        return torch.stack(
            [self.ce.detach(), self.contrastive.detach(), self.total.detach(), self.dice.detach()]
        )


def gather_batch(domains: Sequence[DomainData], batch: SampledBatch) -> HostBatch:
    """Read the batch's slices from the memory-mapped caches; map labels to class targets."""
    images: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    for data, indices in zip(domains, batch.indices, strict=True):
        if indices.size == 0:
            continue
        images.append(np.asarray(data.cache.images[indices], dtype=np.float32))
        labels = np.asarray(data.cache.labels[indices])
        targets.append(data.mapping.target_lut()[labels])
    return HostBatch(
        images=np.concatenate(images)[:, None],
        targets=np.concatenate(targets),
        chunks=batch.chunks,
        positions=batch.all_positions,
    )


def to_device(
    host: HostBatch,
    *,
    device: torch.device,
    channels_last: bool,
    augment: AugmentConfig | None,
    global_size: int,
    seed: int,
    epoch: int,
    step: int,
) -> tuple[Tensor, Tensor]:
    """Move a batch to ``device`` and augment it there (parameters drawn for the global batch)."""
    non_blocking = device.type == "cuda"
    images = torch.from_numpy(host.images).to(device, non_blocking=non_blocking)
    targets = torch.from_numpy(host.targets).to(device, non_blocking=non_blocking)
    if augment is not None:
        generator = augmentation_generator(seed, epoch, step)
        params = sample_params(global_size, config=augment, generator=generator)
        images, targets = apply_augmentation(images, targets, params.select(host.positions))
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets


def route_of(chunks: Sequence[tuple[int, int]], *, scheme: str) -> list[tuple[int, int]]:
    """The model's routing: per-domain chunks, or one chunk through the shared head (joint)."""
    if scheme == "joint":
        return [(0, sum(count for _, count in chunks))]
    return list(chunks)


def compute_losses(
    model: nn.Module,
    images: Tensor,
    targets: Tensor,
    chunks: Sequence[tuple[int, int]],
    *,
    scheme: str,
    tau: float,
    lam: float,
    seg_loss: str = "ce",
) -> LossTerms:
    """Forward the batch and return the loss terms (fp32)."""
    route = route_of(chunks, scheme=scheme)
    output = model(images, route)
    logits = [chunk.float() for chunk in output.logits]
    parts = list(torch.split(targets, [count for _, count in route], dim=0))
    ce = multi_domain_cross_entropy(logits, parts)
    if seg_loss == "dice-ce":
        dice = multi_domain_soft_dice(logits, parts)
        segmentation = ce + dice
    else:
        dice = torch.zeros((), device=ce.device, dtype=ce.dtype)
        segmentation = ce
    if scheme == "dsl-contrastive" and lam > 0:
        domains = torch.cat([torch.full((count,), k, dtype=torch.long) for k, count in chunks]).to(
            images.device
        )
        contrastive = supervised_contrastive_loss(
            output.embedding.float(), domains, temperature=tau
        )
        total = segmentation + lam * contrastive
    else:
        contrastive = torch.zeros((), device=ce.device, dtype=ce.dtype)
        total = segmentation
    return LossTerms(ce=ce, contrastive=contrastive, total=total, dice=dice)
