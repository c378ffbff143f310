"""Domain-specific segmentation layers: one 1x1 convolution per domain with |C_k| outputs.

|C_k| counts the background, so a domain with three labels has four output channels. The heads
return raw logits; the paper's softmax (psi, Sec. 2.1) belongs to the loss or the predictor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from pedseg.errors import ConfigError, ModelError
from pedseg.models.dsbn import Route

__all__ = ["DomainHeads", "check_num_classes"]


def check_num_classes(num_classes: Sequence[int]) -> tuple[int, ...]:
    """Validate per-domain class counts (background included) and return them as a tuple."""
    if isinstance(num_classes, int | str) or len(num_classes) == 0:
        raise ConfigError(f"num_classes must list one class count per domain, got {num_classes!r}")
    for index, count in enumerate(num_classes):
        if isinstance(count, bool) or not isinstance(count, int) or count < 2:
            raise ConfigError(
                f"num_classes[{index}] must be an integer >= 2 (background + at least one label), "
                f"got {count!r}"
            )
    return tuple(num_classes)


class DomainHeads(nn.Module):
    """One 1x1 convolution (with bias) per domain.

    Args:
        in_channels: channels of the decoder's last feature map.
        num_classes: per domain, the number of output classes including background.
    """

    def __init__(self, in_channels: int, num_classes: Sequence[int]) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.heads = nn.ModuleList(
            nn.Conv2d(in_channels, count, kernel_size=1) for count in check_num_classes(num_classes)
        )

    @property
    def num_domains(self) -> int:
        return len(self.heads)

    @property
    def num_classes(self) -> tuple[int, ...]:
        return tuple(cast(nn.Conv2d, head).out_channels for head in self.heads)

    def forward(self, u: Tensor, route: Route) -> list[Tensor]:
        """Logits of each chunk, ``(count, C_k, H, W)``, in chunk order."""
        if isinstance(route, int):
            return [self.heads[route](u)]
        if len(route) == 1:
            return [self.heads[route[0][0]](u)]
        parts = torch.split(u, [count for _, count in route], dim=0)
        return [self.heads[domain](part) for (domain, _), part in zip(route, parts, strict=True)]

    def forward_domain(self, u: Tensor, domain: int) -> Tensor:
        """Logits of a batch that belongs to one domain."""
        if not 0 <= domain < self.num_domains:
            raise ModelError(f"domain index must be in [0, {self.num_domains}), got {domain}")
        return self.heads[domain](u)

    def add_head(self, num_classes: int) -> int:
        """Append a freshly initialised head of ``num_classes`` outputs; return its domain index."""
        (count,) = check_num_classes([num_classes])
        reference = cast(nn.Conv2d, self.heads[0]).weight
        head = nn.Conv2d(self.in_channels, count, kernel_size=1)
        head.to(device=reference.device, dtype=reference.dtype)
        head.train(self.training)
        self.heads.append(head)
        return len(self.heads) - 1
