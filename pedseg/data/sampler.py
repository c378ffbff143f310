"""Balanced multi-domain batch sampling, seeded per (seed, epoch, step).

Every batch holds slices of *every* training domain, as consecutive per-domain chunks
``[(domain, count), ...]`` in domain order: the supervised contrastive loss (Eq. 3) needs at least two
samples per domain and each domain-specific batch norm needs a real batch. ``batch_size // K`` slices
come from each of the ``K`` domains; the remainder ``r`` goes to ``r`` domains chosen by rotating with
the step number, so that over an epoch every domain gets its share.

Foreground oversampling (on by default, ``fg_fraction = 1/3``): ``round(count * fg_fraction)`` of each
domain's samples are drawn from the slices whose label map contains foreground, the rest uniformly
from all the domain's training slices. Within one step a domain's slices are drawn without
replacement when the pool is large enough; steps are independent draws (with replacement across
steps), so an "epoch" is a defined number of steps rather than a pass over the data.

Every draw uses its own generator seeded from ``(seed, epoch, step, domain)``, so a batch does not
depend on what was drawn before it, on worker threads or on the number of ranks: under DDP every
rank draws the same global batch and keeps its own disjoint shard (:meth:`SampledBatch.shard`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pedseg.errors import ConfigError

__all__ = ["BalancedSampler", "DomainPool", "SampledBatch", "domain_counts", "seeded_rng"]

_SAMPLER_STREAM = 0x5A3D


def seeded_rng(*keys: int) -> np.random.Generator:
    """A numpy generator determined by the integer ``keys`` only."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(k) for k in keys])))


@dataclass(frozen=True)
class DomainPool:
    """The training slices of one domain: indices into its slice cache and which hold foreground."""

    indices: np.ndarray
    foreground: np.ndarray

    def __post_init__(self) -> None:
        indices = np.asarray(self.indices, dtype=np.int64).reshape(-1)
        fg = np.asarray(self.foreground, dtype=bool).reshape(-1)
        if indices.size == 0:
            raise ConfigError("a domain pool must hold at least one training slice, got none")
        if fg.shape != indices.shape:
            raise ConfigError(
                f"foreground flags ({fg.size}) must match the slice indices ({indices.size})"
            )
        object.__setattr__(self, "indices", indices)
        object.__setattr__(self, "foreground", fg)

    def __len__(self) -> int:
        return int(self.indices.size)


@dataclass(frozen=True)
class SampledBatch:
    """Slice indices per domain (into each domain's cache), in chunk order, and their positions.

    ``positions[k]`` are the positions of ``indices[k]`` within the *global* batch of the step, so that
    per-sample random parameters (augmentation) drawn for the global batch can be picked per shard.
    """

    indices: tuple[np.ndarray, ...]
    positions: tuple[np.ndarray, ...]

    @property
    def chunks(self) -> list[tuple[int, int]]:
        return [(k, int(ix.size)) for k, ix in enumerate(self.indices) if ix.size > 0]

    @property
    def size(self) -> int:
        return int(sum(ix.size for ix in self.indices))

    @property
    def all_positions(self) -> np.ndarray:
        return np.concatenate(self.positions)

    def shard(self, rank: int, world_size: int) -> SampledBatch:
        """This rank's disjoint part: every domain's chunk split over the ranks (rank order)."""
        if world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"rank must be in [0, {world_size}), got {rank}")
        if world_size == 1:
            return self
        idx: list[np.ndarray] = []
        pos: list[np.ndarray] = []
        for ix, ps in zip(self.indices, self.positions, strict=True):
            parts = np.array_split(np.arange(ix.size), world_size)[rank]
            idx.append(ix[parts])
            pos.append(ps[parts])
        return SampledBatch(indices=tuple(idx), positions=tuple(pos))


def domain_counts(batch_size: int, num_domains: int, *, step: int = 0) -> list[int]:
    """Per-domain sample counts of a step: ``batch_size // K`` each, remainder rotating with ``step``."""
    if num_domains < 1:
        raise ConfigError(f"num_domains must be >= 1, got {num_domains}")
    base, remainder = divmod(batch_size, num_domains)
    counts = [base] * num_domains
    for i in range(remainder):
        counts[(step + i) % num_domains] += 1
    return counts


class BalancedSampler:
    """Draws balanced multi-domain batches; see the module docstring.

    Args:
        pools: one :class:`DomainPool` per domain, in domain order.
        batch_size: global batch size of a step.
        seed: run seed.
        fg_fraction: share of each domain's samples drawn from foreground slices.
        min_per_domain: smallest per-domain count allowed in any rank's shard.
        world_size: number of ranks the batch is split over (for validation only).
    """

    def __init__(
        self,
        pools: Sequence[DomainPool],
        *,
        batch_size: int,
        seed: int,
        fg_fraction: float = 1 / 3,
        min_per_domain: int = 2,
        world_size: int = 1,
    ) -> None:
        if not pools:
            raise ConfigError("the sampler needs at least one domain pool, got none")
        if not 0.0 <= fg_fraction <= 1.0:
            raise ConfigError(f"fg_fraction must be in [0, 1], got {fg_fraction}")
        smallest = batch_size // len(pools) // world_size
        if smallest < min_per_domain:
            raise ConfigError(
                f"batch_size must be >= {min_per_domain} per domain per rank (got {batch_size} for "
                f"{len(pools)} domains on {world_size} rank(s)); use at least "
                f"{min_per_domain * len(pools) * world_size}"
            )
        self.pools = tuple(pools)
        self.batch_size = batch_size
        self.seed = seed
        self.fg_fraction = fg_fraction

    @property
    def num_domains(self) -> int:
        return len(self.pools)

    @property
    def total_slices(self) -> int:
        return sum(len(p) for p in self.pools)

    def default_steps_per_epoch(self) -> int:
        """Training slices // batch size, at least 1."""
        return max(1, self.total_slices // self.batch_size)

    def batch(self, epoch: int, step: int) -> SampledBatch:
        """The global batch of ``(epoch, step)``; the same on every call, rank and worker."""
        counts = domain_counts(self.batch_size, self.num_domains, step=step)
        indices: list[np.ndarray] = []
        positions: list[np.ndarray] = []
        offset = 0
        for k, (pool, count) in enumerate(zip(self.pools, counts, strict=True)):
            rng = seeded_rng(_SAMPLER_STREAM, self.seed, epoch, step, k)
            indices.append(self._draw(pool, count, rng))
            positions.append(np.arange(offset, offset + count, dtype=np.int64))
            offset += count
        return SampledBatch(indices=tuple(indices), positions=tuple(positions))

    def _draw(self, pool: DomainPool, count: int, rng: np.random.Generator) -> np.ndarray:
        fg_pool = pool.indices[pool.foreground]
        n_fg = round(count * self.fg_fraction) if fg_pool.size > 0 else 0
        picked = [
            _choose(fg_pool, n_fg, rng),
            _choose(pool.indices, count - n_fg, rng),
        ]
        return np.concatenate(picked).astype(np.int64, copy=False)


def _choose(pool: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    if count <= 0:
        return np.empty(0, dtype=np.int64)
    return rng.choice(pool, size=count, replace=bool(pool.size < count))
