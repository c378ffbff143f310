"""Profiling a trained model's embedding per domain at the end of a run (domain recognition).

Profile slices: the central 80 % of every training case's slices, a seeded subsample of at most
:data:`~pedseg.runfolder.profiles.MAX_PROFILE_SLICES` per domain, each embedded with its own
domain's batch norm; cross centroids from the other domains' training scans (see
:mod:`pedseg.runfolder.profiles`).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from pedseg.data.dataset import list_cases
from pedseg.data.sampler import seeded_rng
from pedseg.domains.spec import DomainSpec
from pedseg.errors import PedsegError
from pedseg.io import read_label, read_volume
from pedseg.io.volume import Volume
from pedseg.runfolder.acquisition import AcquisitionSummary
from pedseg.runfolder.profiles import (
    MAX_PROFILE_SLICES,
    DomainProfile,
    central_range,
    cross_slices,
    store_profile,
)
from pedseg.training.prepare import DomainData

__all__ = ["profile_run", "training_slices"]

logger = logging.getLogger(__name__)
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
    """Profile the run ``out``'s saved weights on ``domains``' training slices, with the cross
    centroids of ``specs``' other domains and each domain's acquisition summary (geometry,
    intensities, label volumes of its training cases), and store them with ``carry``'s. Each
    training case is read once; one that cannot be read is skipped (logged): profiles refine a
    run, they never fail it."""
    slices = {d.spec.name: training_slices(d, seed=seed) for d in domains}
    summaries = {d.spec.name: AcquisitionSummary(d.spec) for d in domains}
    cross = cross_slices(specs, _training_scans(domains, summaries), image_size=image_size)
    acquisition = {name: summary.profile() for name, summary in summaries.items()}
    return store_profile(
        out,
        slices,
        carry=carry,
        cross=cross,
        acquisition=acquisition,
        source=source,
        device=device,
    )


def _training_scans(
    domains: Sequence[DomainData], summaries: Mapping[str, AcquisitionSummary]
) -> Iterator[tuple[str, Volume]]:
    """Each domain's training scans, one in memory at a time, summarised on the way."""
    for data in domains:
        train = set(data.train_cases)
        for case in list_cases(data.spec):
            if case.case_id not in train:
                continue
            try:
                image = read_volume(case.image)
                label = read_label(case.label) if case.label is not None else None
            except PedsegError as exc:
                logger.info("profile of %s: skipped %s (%s)", data.spec.name, case.image, exc)
                continue
            summaries[data.spec.name].add(image, label)
            yield data.spec.name, image
