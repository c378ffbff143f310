"""Profiling a trained model's embedding per domain at the end of a run (domain recognition).

Profile slices: the central 80 % of every training case's slices, a seeded subsample of at most
:data:`~pedseg.runfolder.profiles.MAX_PROFILE_SLICES` per domain, each embedded with its own
domain's batch norm; cross centroids from the other domains' training scans (see
:mod:`pedseg.runfolder.profiles`).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from pedseg.data.sampler import seeded_rng
from pedseg.domains.spec import DomainSpec
from pedseg.runfolder.profiles import (
    MAX_PROFILE_SLICES,
    DomainProfile,
    central_range,
    cross_slices,
    store_profile,
)
from pedseg.training.prepare import DomainData, training_images

__all__ = ["profile_run", "training_slices"]

_PROFILE_STREAM = 0xD0C5


def training_slices(
    data: DomainData, *, limit: int = MAX_PROFILE_SLICES, seed: int = 0
) -> np.ndarray:
    """The profile slices of a domain's training cases (see the module docstring): (N, H, W)."""
    train = set(data.train_cases)
    ranges = [
        np.arange(case.start + lo, case.start + hi)
        for case in data.cache.cases
        if case.case_id in train
        for lo, hi in [central_range(case.num_slices)]
    ]
    indices = np.concatenate(ranges) if ranges else np.zeros(0, dtype=np.int64)
    if indices.size > limit:
        rng = seeded_rng(_PROFILE_STREAM, seed, zlib.crc32(data.spec.name.encode("utf-8")))
        indices = np.sort(rng.choice(indices, size=limit, replace=False))
    return np.asarray(data.cache.images[indices], dtype=np.float32)


def profile_run(
    out: Path,
    domains: Sequence[DomainData],
    *,
    specs: Sequence[DomainSpec],
    image_size: tuple[int, int],
    seed: int,
    device: torch.device | None,
    carry: Mapping[str, DomainProfile] | None = None,
    source: str = "training",
) -> Path | None:
    """Profile the run ``out``'s saved weights on ``domains``' training slices (plus the cross
    centroids of ``specs``' other domains) and store the profiles, with ``carry``'s."""
    slices = {d.spec.name: training_slices(d, seed=seed) for d in domains}
    cross = cross_slices(specs, training_images(domains), image_size=image_size)
    return store_profile(out, slices, carry=carry, cross=cross, source=source, device=device)
