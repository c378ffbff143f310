"""Domain-specific batch norm: routing, isolation between domains, adding a domain."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pedseg.errors import ModelError
from pedseg.models.dsbn import (
    DomainBatchNorm2d,
    SharedBatchNorm2d,
    check_chunks,
    make_norm,
)


def _randomise(norm: DomainBatchNorm2d, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in norm.bns:
            assert isinstance(bn, nn.BatchNorm2d)
            for tensor in (bn.weight, bn.bias, bn.running_mean):
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
            bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=generator) + 0.5)


def test_single_domain_route_uses_that_domain_only() -> None:
    norm = DomainBatchNorm2d(3, 2)
    _randomise(norm, 0)
    norm.eval()
    x = torch.randn(4, 3, 5, 5)
    for route in (1, [(1, 4)]):
        expected = norm.bns[1](x)
        torch.testing.assert_close(norm(x, route), expected, rtol=0, atol=0)
        assert not torch.allclose(norm.bns[0](x), expected)


def test_chunks_are_normalised_with_their_own_batch_statistics() -> None:
    torch.manual_seed(0)
    norm = DomainBatchNorm2d(3, 3)
    # Domains with very different intensity statistics, as in Eq. 1.
    a = torch.randn(2, 3, 4, 4) * 5 + 10
    b = torch.randn(3, 3, 4, 4) - 7
    out = norm(torch.cat([a, b]), [(2, 2), (0, 3)])
    for part in (out[:2], out[2:]):
        mean = part.mean(dim=(0, 2, 3))
        var = part.var(dim=(0, 2, 3), unbiased=False)
        torch.testing.assert_close(mean, torch.zeros(3), atol=1e-5, rtol=0)
        torch.testing.assert_close(var, torch.ones(3), atol=1e-3, rtol=0)
    # Running statistics went to the chunk's domain, domain 1 saw nothing.
    assert norm.bns[2].running_mean.mean() > 0.5
    assert norm.bns[0].running_mean.mean() < -0.5
    assert int(norm.bns[1].num_batches_tracked) == 0
    torch.testing.assert_close(norm.bns[1].running_mean, torch.zeros(3), rtol=0, atol=0)


def test_shared_norm_ignores_the_route() -> None:
    norm = SharedBatchNorm2d(2)
    x = torch.randn(4, 2, 3, 3)
    torch.testing.assert_close(norm(x, [(0, 1), (1, 3)]), norm.bn(x))
    norm.add_domain()  # no-op
    assert sum(1 for _ in norm.parameters()) == 2


@pytest.mark.parametrize("init", ["mean", "default"])
def test_add_domain_initialisation(init: str) -> None:
    norm = DomainBatchNorm2d(4, 2)
    _randomise(norm, 1)
    norm.add_domain(init=init)  # type: ignore[arg-type]
    assert norm.num_domains == 3
    new = norm.bns[2]
    for name in ("weight", "bias", "running_mean", "running_var"):
        if init == "mean":
            expected = (getattr(norm.bns[0], name) + getattr(norm.bns[1], name)) / 2
        else:
            expected = getattr(nn.BatchNorm2d(4), name)
        torch.testing.assert_close(getattr(new, name).detach(), expected.detach())
    assert new.weight.requires_grad
    assert new.weight.data_ptr() != norm.bns[0].weight.data_ptr()


def test_add_domain_rejects_unknown_init() -> None:
    with pytest.raises(ModelError, match="init must be 'mean' or 'default'"):
        DomainBatchNorm2d(2, 1).add_domain(init="zeros")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([], "at least one"),
        ([(2, 4)], r"in \[0, 2\), got 2"),
        ([(0, 2), (0, 2)], "more than one chunk"),
        ([(0, 0), (1, 4)], "count must be >= 1"),
        ([(0, 1), (1, 1)], "add up to 2 but the batch holds 4"),
    ],
)
def test_check_chunks_errors(chunks: list[tuple[int, int]], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        check_chunks(chunks, batch_size=4, num_domains=2)


def test_make_norm() -> None:
    assert isinstance(make_norm("dsbn", 3, 2), DomainBatchNorm2d)
    assert isinstance(make_norm("bn", 3, 2), SharedBatchNorm2d)
    with pytest.raises(ModelError, match="norm must be"):
        make_norm("gn", 3, 2)  # type: ignore[arg-type]
