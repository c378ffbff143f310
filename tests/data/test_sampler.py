"""Balanced multi-domain sampling: balance, chunks, determinism, foreground share, sharding."""

from __future__ import annotations

import numpy as np
import pytest

from pedseg.data.sampler import BalancedSampler, DomainPool, domain_counts
from pedseg.errors import ConfigError


def _pools() -> list[DomainPool]:
    a = DomainPool(indices=np.arange(10, 30), foreground=np.arange(20) % 5 == 0)  # 4 fg slices
    b = DomainPool(indices=np.arange(0, 7), foreground=np.zeros(7, dtype=bool))  # none
    c = DomainPool(indices=np.arange(100, 140), foreground=np.ones(40, dtype=bool))
    return [a, b, c]


def test_counts_balanced_with_rotating_remainder() -> None:
    assert domain_counts(32, 2) == [16, 16]
    assert domain_counts(11, 3, step=0) == [4, 4, 3]
    assert domain_counts(11, 3, step=1) == [3, 4, 4]
    assert domain_counts(11, 3, step=2) == [4, 3, 4]
    totals = np.sum([domain_counts(10, 3, step=s) for s in range(3)], axis=0)
    assert totals.tolist() == [10, 10, 10]


def test_batch_is_ordered_chunks_from_each_pool() -> None:
    pools = _pools()
    sampler = BalancedSampler(pools, batch_size=13, seed=1)
    batch = sampler.batch(epoch=1, step=4)
    assert batch.size == 13
    assert [k for k, _ in batch.chunks] == [0, 1, 2]
    assert [n for _, n in batch.chunks] == domain_counts(13, 3, step=4)
    for pool, indices in zip(pools, batch.indices, strict=True):
        assert np.isin(indices, pool.indices).all()
    assert batch.all_positions.tolist() == list(range(13))


def test_seeded_per_epoch_and_step_independent_of_history() -> None:
    first = BalancedSampler(_pools(), batch_size=12, seed=3)
    second = BalancedSampler(_pools(), batch_size=12, seed=3)
    for step in range(5):  # draw other batches first: must not matter
        first.batch(epoch=0, step=step)
    a, b = first.batch(epoch=2, step=7), second.batch(epoch=2, step=7)
    assert all(np.array_equal(x, y) for x, y in zip(a.indices, b.indices, strict=True))
    other_step = second.batch(epoch=2, step=8)
    other_seed = BalancedSampler(_pools(), batch_size=12, seed=4).batch(epoch=2, step=7)
    assert any(not np.array_equal(x, y) for x, y in zip(a.indices, other_step.indices, strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(a.indices, other_seed.indices, strict=True))


def test_foreground_oversampling() -> None:
    pool = DomainPool(indices=np.arange(200), foreground=np.arange(200) < 4)  # 2 % foreground
    sampler = BalancedSampler([pool], batch_size=30, seed=0, fg_fraction=1 / 3)
    fg_share = np.mean([np.mean(sampler.batch(0, s).indices[0] < 4) for s in range(20)])
    assert fg_share >= 1 / 3  # at least the oversampled third (plus the uniform draws' few)
    uniform = BalancedSampler([pool], batch_size=30, seed=0, fg_fraction=0.0)
    assert np.mean([np.mean(uniform.batch(0, s).indices[0] < 4) for s in range(20)]) < 0.1


def test_small_pool_is_drawn_with_replacement_and_large_without() -> None:
    pool = DomainPool(indices=np.arange(3), foreground=np.zeros(3, dtype=bool))
    big = DomainPool(indices=np.arange(1000), foreground=np.zeros(1000, dtype=bool))
    batch = BalancedSampler([pool, big], batch_size=16, seed=0).batch(0, 0)
    assert batch.indices[0].size == 8 and set(batch.indices[0]) <= {0, 1, 2}
    assert len(set(batch.indices[1].tolist())) == 8


def test_shards_are_disjoint_and_keep_chunks() -> None:
    sampler = BalancedSampler(_pools(), batch_size=24, seed=0, world_size=2)
    batch = sampler.batch(1, 1)
    shards = [batch.shard(rank, 2) for rank in range(2)]
    for shard in shards:
        assert [k for k, _ in shard.chunks] == [0, 1, 2]
        assert min(n for _, n in shard.chunks) >= 2
    positions = np.concatenate([s.all_positions for s in shards])
    assert sorted(positions.tolist()) == list(range(24))
    for k in range(3):
        joined = np.concatenate([s.indices[k] for s in shards])
        assert np.array_equal(joined, batch.indices[k])


def test_batch_too_small_per_domain_and_rank() -> None:
    with pytest.raises(ConfigError, match=r"batch_size must be >= 2 per domain per rank \(got 11"):
        BalancedSampler(_pools(), batch_size=11, seed=0, world_size=2)
    with pytest.raises(ConfigError, match="fg_fraction"):
        BalancedSampler(_pools(), batch_size=12, seed=0, fg_fraction=1.5)
    with pytest.raises(ConfigError, match="at least one training slice"):
        DomainPool(indices=np.zeros(0), foreground=np.zeros(0))
