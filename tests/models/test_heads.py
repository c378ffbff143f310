"""Per-domain 1x1 segmentation heads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pedseg.errors import ConfigError, ModelError
from pedseg.models.heads import DomainHeads


def test_each_chunk_gets_its_own_head() -> None:
    heads = DomainHeads(3, [4, 2, 3])
    u = torch.randn(5, 3, 6, 6)
    out = heads(u, [(2, 2), (0, 3)])
    assert [tuple(o.shape) for o in out] == [(2, 3, 6, 6), (3, 4, 6, 6)]
    for logits, part, domain in ((out[0], u[:2], 2), (out[1], u[2:], 0)):
        head = heads.heads[domain]
        torch.testing.assert_close(logits, F.conv2d(part, head.weight, head.bias))
    torch.testing.assert_close(heads(u, 1)[0], heads.forward_domain(u, 1))
    assert heads.num_classes == (4, 2, 3)


def test_add_head_and_errors() -> None:
    heads = DomainHeads(3, [2])
    assert heads.add_head(5) == 1
    assert heads.num_classes == (2, 5)
    with pytest.raises(ModelError, match=r"domain index must be in \[0, 2\), got 2"):
        heads.forward_domain(torch.zeros(1, 3, 2, 2), 2)
    with pytest.raises(ConfigError, match=r"num_classes\[1\] must be an integer >= 2"):
        DomainHeads(3, [3, 1])
    with pytest.raises(ConfigError, match="one class count per domain"):
        DomainHeads(3, [])
