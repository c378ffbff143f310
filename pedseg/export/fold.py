"""Batch-norm folding: one domain's inference graph with every norm folded into its convolution.

In eval mode a batch norm is an affine map per channel, so ``bn(conv(x))`` equals one convolution with
rescaled weights and a bias (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`). A per-domain copy of
the network replaces each :class:`~pedseg.models.dsbn.DomainBatchNorm2d` by that domain's
:class:`~torch.nn.BatchNorm2d` (or the shared one of ``joint``), folds it into the preceding
convolution and leaves a pass-through in its place. The original model is not modified.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pedseg.errors import ModelError
from pedseg.models.dsbn import DomainBatchNorm2d, Route, SharedBatchNorm2d
from pedseg.models.segmenter import DomainSegmenter
from pedseg.models.unet import AttentionGate, ConvBlock, MultiDomainUNet

__all__ = ["FOLD_PAIRS", "PassThrough", "fold_batchnorm", "fold_segmenter"]

FOLD_PAIRS: dict[type[nn.Module], tuple[tuple[str, str], ...]] = {
    ConvBlock: (("conv1", "norm1"), ("conv2", "norm2")),
    AttentionGate: (("w_g", "norm_g"), ("w_x", "norm_x"), ("psi", "norm_psi")),
}
"""Per block type, the (convolution, norm that directly follows it) attribute pairs."""


class PassThrough(nn.Module):
    """Stands in for a folded norm layer: ``forward(x, route) = x``."""

    def forward(self, x: Tensor, route: Route) -> Tensor:
        return x


def domain_batchnorm(norm: nn.Module, domain: int) -> nn.BatchNorm2d:
    """The plain batch norm that ``norm`` applies to ``domain``'s samples."""
    if isinstance(norm, DomainBatchNorm2d):
        if not 0 <= domain < norm.num_domains:
            raise ModelError(f"domain index must be in [0, {norm.num_domains}), got {domain}")
        bn = norm.bns[domain]
    elif isinstance(norm, SharedBatchNorm2d):
        bn = norm.bn
    else:
        raise ModelError(f"cannot fold a {type(norm).__name__}; expected a batch-norm layer")
    if not isinstance(bn, nn.BatchNorm2d):  # pragma: no cover - ModuleList typing
        raise ModelError(f"cannot fold a {type(bn).__name__}; expected BatchNorm2d")
    return bn


def fold_batchnorm(net: MultiDomainUNet, domain: int) -> MultiDomainUNet:
    """A copy of ``net`` (eval mode) for ``domain`` with every batch norm folded (module doc)."""
    folded = copy.deepcopy(net).eval()
    for module in list(folded.modules()):
        for conv_name, norm_name in FOLD_PAIRS.get(type(module), ()):
            conv = getattr(module, conv_name)
            bn = domain_batchnorm(getattr(module, norm_name), domain)
            if not isinstance(conv, nn.Conv2d):
                raise ModelError(f"cannot fold into a {type(conv).__name__}; expected Conv2d")
            setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
            setattr(module, norm_name, PassThrough())
    left = [
        name
        for name, module in folded.named_modules()
        if isinstance(module, DomainBatchNorm2d | SharedBatchNorm2d | nn.BatchNorm2d)
    ]
    if left:
        raise ModelError(
            f"batch norm {left[0]!r} could not be folded (it does not follow a known convolution); "
            "export this architecture without folding"
        )
    return folded


def fold_segmenter(segmenter: DomainSegmenter) -> DomainSegmenter:
    """The same segmenter with its network's batch norms folded for its head's domain."""
    folded = DomainSegmenter(
        fold_batchnorm(segmenter.net, segmenter.head),
        head=segmenter.head,
        classes=segmenter.classes,
    )
    return folded.eval()
