"""Building networks from their configuration, and cost accounting (parameters, FLOPs).

The configuration and the registry of architectures live in :mod:`pedseg.models.config`, which
imports no torch (reading a run's card needs them, predicting with ONNX Runtime needs no torch);
they are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from pedseg.errors import ConfigError, UnknownNameError
from pedseg.models.config import ARCHITECTURES, Architecture, ModelConfig
from pedseg.models.dsbn import NormKind
from pedseg.models.unet import MultiDomainUNet

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "ModelConfig",
    "build_model",
    "count_flops",
    "count_parameters",
]


def _build(config: ModelConfig, num_classes: Sequence[int], *, attention: bool) -> MultiDomainUNet:
    return MultiDomainUNet(
        num_classes=num_classes,
        in_channels=config.in_channels,
        base_width=config.base_width,
        depth=config.depth,
        attention=attention,
        norm=cast(NormKind, config.norm),
    )


def build_unet(config: ModelConfig, num_classes: Sequence[int]) -> MultiDomainUNet:
    """The ``unet`` architecture (registered in :data:`~pedseg.models.config.ARCHITECTURES`)."""
    return _build(config, num_classes, attention=False)


def build_attention_unet(config: ModelConfig, num_classes: Sequence[int]) -> MultiDomainUNet:
    """The ``attention-unet`` architecture."""
    return _build(config, num_classes, attention=True)


def build_model(config: ModelConfig, *, num_classes: Sequence[int]) -> MultiDomainUNet:
    """The network ``config`` describes, with one head of ``num_classes[k]`` outputs per domain."""
    architecture = ARCHITECTURES.get(config.arch)
    if architecture is None:
        raise UnknownNameError("architecture", config.arch, ARCHITECTURES)
    network = architecture.load()(config, num_classes)
    if not isinstance(network, MultiDomainUNet):
        raise ConfigError(
            f"architecture {config.arch!r} ({architecture.builder}) built a "
            f"{type(network).__name__}, not a MultiDomainUNet"
        )
    return network


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(
    model: MultiDomainUNet, image_size: int | tuple[int, int], *, domain: int = 0
) -> int:
    """Forward FLOPs for one slice of ``image_size`` through ``domain``'s path.

    Counts the multiply-adds of convolutions and transposed convolutions, times 2 (norms, ReLUs,
    pooling and biases are negligible and not counted). Every layer's grid scales with the input
    area, so the count is measured exactly by one forward pass at the smallest valid size
    (``size_multiple`` squared) and scaled; ``model`` is left as it was (mode, statistics).
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    multiple = model.size_multiple
    if height < 1 or width < 1 or height % multiple or width % multiple:
        raise ConfigError(
            f"image size must be positive multiples of {multiple} for depth {model.depth}, "
            f"got {height}x{width}"
        )
    total = 0

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        conv = cast(nn.Conv2d | nn.ConvTranspose2d, module)
        kh, kw = conv.kernel_size
        macs_per_position = (conv.in_channels // conv.groups) * conv.out_channels * kh * kw
        # A convolution does its work per output position; a transposed one per input position.
        grid = output if isinstance(conv, nn.Conv2d) else inputs[0]
        total += 2 * macs_per_position * int(grid.shape[-2]) * int(grid.shape[-1])

    handles = [
        module.register_forward_hook(hook)
        for module in model.modules()
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d)
    ]
    reference = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            probe = torch.zeros(
                1,
                model.in_channels,
                multiple,
                multiple,
                device=reference.device,
                dtype=reference.dtype,
            )
            model.forward_domain(probe, domain)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total * (height // multiple) * (width // multiple)
