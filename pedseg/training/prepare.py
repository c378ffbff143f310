"""Training data: slice caches, the deterministic validation split, sampler pools and label mappings.

Validation split: per domain, ``max(1, round(val_fraction * n))`` cases (at most ``n - 1``) are held
out, chosen by a permutation seeded from ``(seed, domain name)`` -- independent of the order and number
of the other domains. Explicit ``val_cases`` replace that choice for their domain.

Label mapping (the classes a domain's head predicts): for ``dsl``/``dsl-contrastive``/``baseline``,
domain ``k``'s label with position ``j`` in its descriptor (1-based) is class ``j`` of head ``k``. For
``joint`` there is one head over the *union* of labels, kept disjoint per domain: domain ``k``'s label
``j`` is global class ``offset_k + j`` with ``offset_k`` = the number of labels of the domains before
``k``. A joint prediction of another domain's class counts as background for this domain.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pedseg.data.cache import SliceCache, build_cache
from pedseg.data.sampler import DomainPool, seeded_rng
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, TrainingError
from pedseg.models.mapping import LabelMapping, label_mappings
from pedseg.training.config import TrainConfig

__all__ = [
    "DomainData",
    "prepare_domains",
    "resolve_image_size",
    "split_cases",
]

logger = logging.getLogger(__name__)
_SPLIT_STREAM = 0x5B1D


@dataclass(frozen=True, eq=False)
class DomainData:
    """One domain's training and validation slices."""

    index: int
    spec: DomainSpec
    cache: SliceCache
    train_cases: tuple[str, ...]
    val_cases: tuple[str, ...]
    pool: DomainPool
    mapping: LabelMapping


def resolve_image_size(config: TrainConfig, specs: Sequence[DomainSpec]) -> tuple[int, int]:
    """The configured size, or the descriptors' common one."""
    if config.image_size is not None:
        return config.image_size
    sizes = {tuple(spec.image_size) for spec in specs}
    if len(sizes) != 1:
        listing = ", ".join(f"{s.name}: {s.image_size[0]}x{s.image_size[1]}" for s in specs)
        raise ConfigError(
            f"the domains' image sizes differ ({listing}); pass one image size for all of them"
        )
    height, width = next(iter(sizes))
    return (int(height), int(width))


def split_cases(
    case_ids: Sequence[str],
    *,
    domain: str,
    seed: int,
    val_fraction: float,
    explicit: Sequence[str] = (),
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(train, validation)`` case ids, both sorted; see the module docstring."""
    ids = sorted(case_ids)
    if len(ids) < 2:
        raise TrainingError(
            f"domain {domain!r} has {len(ids)} case(s); training needs at least 2 so that one "
            "can be held out for validation"
        )
    if explicit:
        unknown = sorted(set(explicit) - set(ids))
        if unknown:
            raise ConfigError(
                f"val_cases for domain {domain!r} names unknown case {unknown[0]!r}; "
                f"known cases: {', '.join(ids)}"
            )
        val = sorted(set(explicit))
        if len(val) >= len(ids):
            raise ConfigError(
                f"val_cases for domain {domain!r} holds out all {len(ids)} cases; "
                "leave at least one for training"
            )
    else:
        count = min(len(ids) - 1, max(1, round(val_fraction * len(ids))))
        rng = seeded_rng(_SPLIT_STREAM, seed, zlib.crc32(domain.encode("utf-8")))
        val = sorted(ids[i] for i in rng.permutation(len(ids))[:count])
    train = [c for c in ids if c not in set(val)]
    return tuple(train), tuple(val)


def prepare_domains(
    config: TrainConfig,
    specs: Sequence[DomainSpec],
    *,
    cache_root: Path | None,
    image_size: tuple[int, int],
) -> list[DomainData]:
    """Open (building when needed) each domain's slice cache and split its cases."""
    mappings = label_mappings(specs, scheme=config.scheme)
    out: list[DomainData] = []
    for k, spec in enumerate(specs):
        cache = build_cache(spec, cache_root=cache_root, image_size=image_size)
        train, val = split_cases(
            [c.case_id for c in cache.cases],
            domain=spec.name,
            seed=config.seed,
            val_fraction=config.val_fraction,
            explicit=config.validation_cases(spec.name),
        )
        indices = cache.slices_of(train)
        foreground = np.asarray(cache.fg[indices]) > 0
        out.append(
            DomainData(
                index=k,
                spec=spec,
                cache=cache,
                train_cases=train,
                val_cases=val,
                pool=DomainPool(indices=indices, foreground=foreground),
                mapping=mappings[k],
            )
        )
        logger.info(
            "domain %s: %d training slices from %d cases, %d validation cases",
            spec.name,
            indices.size,
            len(train),
            len(val),
        )
    return out
