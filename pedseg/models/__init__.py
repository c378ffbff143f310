"""The network: a multi-domain 2D UNet with domain-specific batch norms and heads.

Importing this package imports torch; keep it out of the CLI's ``--help`` path.
"""

from pedseg.models.build import (
    ARCHITECTURES,
    Architecture,
    ModelConfig,
    build_model,
    count_flops,
    count_parameters,
)
from pedseg.models.dsbn import DomainBatchNorm2d, SharedBatchNorm2d, check_chunks
from pedseg.models.heads import DomainHeads
from pedseg.models.unet import DomainView, MultiDomainUNet, SegOutput

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "DomainBatchNorm2d",
    "DomainHeads",
    "DomainView",
    "ModelConfig",
    "MultiDomainUNet",
    "SegOutput",
    "SharedBatchNorm2d",
    "build_model",
    "check_chunks",
    "count_flops",
    "count_parameters",
]
