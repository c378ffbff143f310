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

__all__ = [
    "LOSS_TERMS",
    "HostBatch",
    "LossSpec",
    "LossTerms",
    "compute_losses",
    "gather_batch",
    "route_of",
    "to_device",
]

LOSS_TERMS: tuple[str, ...] = ("ce", "dice", "contrastive", "total")
"""The named loss terms of a step, in the order of :meth:`LossTerms.stacked`."""


@dataclass(frozen=True)
class HostBatch:
    """A batch on the host: images (N, 1, H, W) float32, class targets (N, H, W) int64."""

    images: np.ndarray
    targets: np.ndarray
    chunks: list[tuple[int, int]]
    positions: np.ndarray


@dataclass(frozen=True)
class LossSpec:
    """What a step's loss is made of (see the module docstring)."""

    scheme: str
    tau: float = 0.1
    lam: float = 0.1
    seg_loss: str = "ce"

    @property
    def contrastive(self) -> bool:
        return self.scheme == "dsl-contrastive" and self.lam > 0

    def active_terms(self) -> tuple[str, ...]:
        """The terms progress reports show: always CE, contrastive (0 when unused) and the total;
        the soft Dice term only with ``seg_loss="dice-ce"``."""
        return tuple(name for name in LOSS_TERMS if name != "dice" or self.seg_loss == "dice-ce")


@dataclass(frozen=True)
class LossTerms:
    """The loss terms of one step; ``dice`` is 0 unless ``seg_loss="dice-ce"``, ``contrastive`` 0
    unless the scheme is ``dsl-contrastive`` with ``lam > 0``."""

    ce: Tensor
    dice: Tensor
    contrastive: Tensor
    total: Tensor

    def stacked(self) -> Tensor:
        """The terms in :data:`LOSS_TERMS` order, detached (for logging and all-reduce)."""
        return torch.stack([getattr(self, name).detach() for name in LOSS_TERMS])

    @staticmethod
    def named(values: Sequence[float]) -> dict[str, float]:
        """``{term: value}`` of a :meth:`stacked` vector."""
        return {name: float(v) for name, v in zip(LOSS_TERMS, values, strict=True)}


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
    flip_axes: Sequence[str] | None = None,
) -> tuple[Tensor, Tensor]:
    """Move a batch to ``device`` and augment it there (parameters drawn for the global batch).
    ``flip_axes``: per domain (the chunks' index), the axis its flip mirrors (default width)."""
    non_blocking = device.type == "cuda"
    images = torch.from_numpy(host.images).to(device, non_blocking=non_blocking)
    targets = torch.from_numpy(host.targets).to(device, non_blocking=non_blocking)
    if augment is not None:
        generator = augmentation_generator(seed, epoch, step)
        params = sample_params(global_size, config=augment, generator=generator)
        params = params.select(host.positions)
        if flip_axes is not None and any(axis != "width" for axis in flip_axes):
            per_sample = [flip_axes[k] for k, count in host.chunks for _ in range(count)]
            params = params.with_flip_axes(per_sample)
        images, targets = apply_augmentation(images, targets, params)
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
    loss: LossSpec,
    route: Sequence[tuple[int, int]] | None = None,
) -> LossTerms:
    """Forward the batch and return the loss terms (fp32). ``chunks``: (domain, count) of the
    batch, which the contrastive term groups by; ``route``: the (head, count) the network runs
    (default :func:`route_of` the chunks)."""
    route = list(route) if route is not None else route_of(chunks, scheme=loss.scheme)
    output = model(images, route)
    logits = [chunk.float() for chunk in output.logits]
    parts = list(torch.split(targets, [count for _, count in route], dim=0))
    ce = multi_domain_cross_entropy(logits, parts)
    if loss.seg_loss == "dice-ce":
        dice = multi_domain_soft_dice(logits, parts)
        segmentation = ce + dice
    else:
        dice = torch.zeros((), device=ce.device, dtype=ce.dtype)
        segmentation = ce
    if loss.contrastive:
        domains = torch.cat([torch.full((count,), k, dtype=torch.long) for k, count in chunks]).to(
            images.device
        )
        contrastive = supervised_contrastive_loss(
            output.embedding.float(), domains, temperature=loss.tau
        )
        total = segmentation + loss.lam * contrastive
    else:
        contrastive = torch.zeros((), device=ce.device, dtype=ce.dtype)
        total = segmentation
    return LossTerms(ce=ce, dice=dice, contrastive=contrastive, total=total)
