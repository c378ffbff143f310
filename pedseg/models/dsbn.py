"""Domain-specific batch normalisation (DSBN, Eq. 1 of the paper) and the shared ("joint") one.

A batch is a sequence of consecutive per-domain *chunks*: ``chunks = [(domain, count), ...]`` means
the first ``count`` samples belong to ``domain``, the next chunk follows, and so on. Instead of a
chunk list, an ``int`` says "the whole batch is this domain" (the fast path of inference/export).

Both norm layers take ``(x, chunks)`` so that the network threads the same routing everywhere:

* :class:`DomainBatchNorm2d` holds one :class:`torch.nn.BatchNorm2d` per domain (own affine
  parameters and running statistics) and normalises each chunk with its own domain's layer;
* :class:`SharedBatchNorm2d` is one :class:`torch.nn.BatchNorm2d` for every domain (the paper's
  ``joint`` scheme); it ignores the routing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

import torch
from torch import Tensor, nn

from pedseg.errors import ModelError

__all__ = [
    "ChunkedNorm",
    "Chunks",
    "DomainBatchNorm2d",
    "InitKind",
    "NormKind",
    "Route",
    "SharedBatchNorm2d",
    "check_chunks",
    "make_norm",
]

Chunks = Sequence[tuple[int, int]]
"""Consecutive per-domain chunks of a batch: ``(domain index, number of samples)``."""

Route = Chunks | int
"""Either chunks, or one domain index meaning that the whole batch belongs to that domain."""

NormKind = Literal["dsbn", "bn"]
InitKind = Literal["mean", "default"]


def check_chunks(chunks: Chunks, *, batch_size: int, num_domains: int) -> None:
    """Raise :class:`ModelError` unless ``chunks`` describe a batch of ``batch_size`` samples.

    Every domain index must be in ``[0, num_domains)``, appear at most once, and every count must be
    at least 1; the counts must add up to the batch size.
    """
    if len(chunks) == 0:
        raise ModelError("chunks must list at least one (domain, count) pair, got none")
    seen: set[int] = set()
    for domain, count in chunks:
        if not 0 <= domain < num_domains:
            raise ModelError(
                f"chunk domain index must be in [0, {num_domains}), got {domain}; "
                f"the model has {num_domains} domain(s)"
            )
        if domain in seen:
            raise ModelError(
                f"domain {domain} appears in more than one chunk; group each domain's samples "
                "into one consecutive chunk"
            )
        if count < 1:
            raise ModelError(f"chunk count must be >= 1, got {count} for domain {domain}")
        seen.add(domain)
    total = sum(count for _, count in chunks)
    if total != batch_size:
        raise ModelError(
            f"chunk counts add up to {total} but the batch holds {batch_size} samples; "
            "make the counts match the batch"
        )


class ChunkedNorm(nn.Module):
    """Base class of the norm layers: ``forward(x, route)`` and ``add_domain``."""

    def forward(self, x: Tensor, route: Route) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def add_domain(self, *, init: InitKind = "mean") -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class DomainBatchNorm2d(ChunkedNorm):
    """One :class:`~torch.nn.BatchNorm2d` per domain; each chunk is normalised by its own domain's.

    Args:
        num_features: channels of the input.
        num_domains: number of domains (one BN set each).
        eps: added to the variance (the paper's 1e-5).
        momentum: running-statistics momentum, as in :class:`~torch.nn.BatchNorm2d`.
    """

    def __init__(
        self, num_features: int, num_domains: int, *, eps: float = 1e-5, momentum: float = 0.1
    ) -> None:
        super().__init__()
        if num_domains < 1:
            raise ModelError(f"num_domains must be >= 1, got {num_domains}")
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.bns = nn.ModuleList(
            nn.BatchNorm2d(num_features, eps=eps, momentum=momentum) for _ in range(num_domains)
        )

    @property
    def num_domains(self) -> int:
        return len(self.bns)

    def forward(self, x: Tensor, route: Route) -> Tensor:
        if isinstance(route, int):
            return self.bns[route](x)
        if len(route) == 1:  # one domain: no split, no concatenation
            return self.bns[route[0][0]](x)
        parts = torch.split(x, [count for _, count in route], dim=0)
        return torch.cat(
            [self.bns[domain](part) for (domain, _), part in zip(route, parts, strict=True)], dim=0
        )

    def add_domain(self, *, init: InitKind = "mean") -> None:
        """Append a BN set for a new domain.

        ``init="mean"`` starts it from the mean of the existing domains' affine parameters and
        running statistics (a sensible start for fine-tuning a trained model); ``"default"`` from
        PyTorch's defaults (weight 1, bias 0, mean 0, variance 1).
        """
        reference = cast(nn.BatchNorm2d, self.bns[0]).weight
        bn = nn.BatchNorm2d(self.num_features, eps=self.eps, momentum=self.momentum)
        bn.to(device=reference.device, dtype=reference.dtype)
        bn.train(self.training)
        if init == "mean":
            with torch.no_grad():
                for name in ("weight", "bias", "running_mean", "running_var"):
                    stacked = torch.stack([getattr(b, name) for b in self.bns])
                    getattr(bn, name).copy_(stacked.mean(dim=0))
        elif init != "default":
            raise ModelError(f"init must be 'mean' or 'default', got {init!r}")
        self.bns.append(bn)

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_domains={self.num_domains}"


class SharedBatchNorm2d(ChunkedNorm):
    """One :class:`~torch.nn.BatchNorm2d` for all domains (``joint`` scheme); ignores the route."""

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, eps=eps, momentum=momentum)

    def forward(self, x: Tensor, route: Route) -> Tensor:
        return self.bn(x)

    def add_domain(self, *, init: InitKind = "mean") -> None:
        """Nothing to add: the statistics are shared by every domain."""


def make_norm(kind: NormKind, num_features: int, num_domains: int) -> ChunkedNorm:
    """The norm layer for ``kind``: ``"dsbn"`` (one BN per domain) or ``"bn"`` (one shared BN)."""
    if kind == "dsbn":
        return DomainBatchNorm2d(num_features, num_domains)
    if kind == "bn":
        return SharedBatchNorm2d(num_features)
    raise ModelError(f"norm must be 'dsbn' or 'bn', got {kind!r}")
