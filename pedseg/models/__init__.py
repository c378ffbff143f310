"""The network: a multi-domain 2D UNet with domain-specific batch norms and heads.

Names are imported on first use: :mod:`pedseg.models.config` and :mod:`pedseg.models.mapping`
need no torch (a run's card and ONNX prediction use them); the networks and
:func:`build_model` import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pedseg.models.build import build_model, count_flops, count_parameters
    from pedseg.models.config import ARCHITECTURES, Architecture, ModelConfig
    from pedseg.models.dsbn import DomainBatchNorm2d, SharedBatchNorm2d, check_chunks
    from pedseg.models.heads import DomainHeads
    from pedseg.models.unet import DomainView, MultiDomainUNet, SegOutput

_WHERE: dict[str, str] = {
    "ARCHITECTURES": "config",
    "Architecture": "config",
    "ModelConfig": "config",
    "build_model": "build",
    "count_flops": "build",
    "count_parameters": "build",
    "DomainBatchNorm2d": "dsbn",
    "SharedBatchNorm2d": "dsbn",
    "check_chunks": "dsbn",
    "DomainHeads": "heads",
    "DomainView": "unet",
    "MultiDomainUNet": "unet",
    "SegOutput": "unet",
}

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


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'pedseg.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pedseg.models.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
