"""One domain's segmenter: a multi-domain network routed through one head, softmax, projected.

For the ``joint`` scheme the union head's classes that belong to other domains are summed into the
background channel (a fixed 0/1 1x1 convolution after the softmax), so every domain's segmenter
outputs probabilities over *that domain's* classes (channel ``j`` = its ``j``-th label, 0 =
background).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from pedseg.models.unet import MultiDomainUNet

__all__ = ["DomainSegmenter"]


class DomainSegmenter(nn.Module):
    """``x -> softmax(net.forward_domain(x, head))``, projected onto one domain's classes.

    Args:
        net: the trained network (eval mode).
        head: the head (and batch-norm) index this domain uses.
        classes: for a head shared by several domains (``joint``), the head's class index of this
            domain's label ``j`` at position ``j - 1``; ``None`` when the head is the domain's own.
    """

    projection: Tensor | None

    def __init__(
        self, net: MultiDomainUNet, *, head: int, classes: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        self.net = net
        self.head = head
        self.classes: tuple[int, ...] | None = None if classes is None else tuple(classes)
        total = net.num_classes[head]
        if self.classes is None:
            self.register_buffer("projection", None, persistent=False)
        else:
            weight = torch.zeros(len(self.classes) + 1, total, 1, 1)
            for j, cls in enumerate(self.classes, start=1):
                weight[j, cls] = 1.0
            weight[0, :, 0, 0] = 1.0 - weight[1:, :, 0, 0].sum(dim=0)
            self.register_buffer("projection", weight, persistent=False)
        self.train(net.training)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return self.net.size_multiple

    @property
    def num_classes(self) -> int:
        """Output channels: the domain's labels plus background."""
        return self.net.num_classes[self.head] if self.classes is None else len(self.classes) + 1

    def forward(self, x: Tensor) -> Tensor:
        return self._project(torch.softmax(self.net.forward_domain(x, self.head), dim=1))

    def segment_and_embed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`forward`'s probabilities and the embedding ``z`` ``(N, embedding_dim)`` of the
        same pass (what :meth:`MultiDomainUNet.embed` gives for this head)."""
        logits, embedding = self.net.forward_domain_embed(x, self.head)
        return self._project(torch.softmax(logits, dim=1)), embedding

    def _project(self, probabilities: Tensor) -> Tensor:
        if self.projection is not None:
            # The network may be shared with other domains' segmenters and moved without this
            # buffer; follow the probabilities (a no-op while exporting).
            weight = self.projection.to(device=probabilities.device, dtype=probabilities.dtype)
            probabilities = nn.functional.conv2d(probabilities, weight)
        return probabilities
