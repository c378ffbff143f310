"""Model configuration, the registry of architectures, and cost accounting (parameters, FLOPs)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from pedseg.errors import ConfigError, UnknownNameError
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

NORMS: tuple[str, ...] = ("dsbn", "bn")


@dataclass(frozen=True)
class Architecture:
    """A registered network: a one-line description and its builder."""

    description: str
    build: Callable[[ModelConfig, Sequence[int]], MultiDomainUNet]


def _build_unet(config: ModelConfig, num_classes: Sequence[int]) -> MultiDomainUNet:
    return _build(config, num_classes, attention=False)


def _build_attention_unet(config: ModelConfig, num_classes: Sequence[int]) -> MultiDomainUNet:
    return _build(config, num_classes, attention=True)


def _build(config: ModelConfig, num_classes: Sequence[int], *, attention: bool) -> MultiDomainUNet:
    return MultiDomainUNet(
        num_classes=num_classes,
        in_channels=config.in_channels,
        base_width=config.base_width,
        depth=config.depth,
        attention=attention,
        norm=cast(NormKind, config.norm),
    )


ARCHITECTURES: dict[str, Architecture] = {
    "unet": Architecture(
        "2D UNet (Ronneberger et al. 2015) with per-domain norms and heads", _build_unet
    ),
    "attention-unet": Architecture(
        "UNet with additive attention gates on the skips (Att-UNet, Oktay et al. 2018)",
        _build_attention_unet,
    ),
}
"""Every architecture ``build_model`` knows, by name."""


@dataclass(frozen=True)
class ModelConfig:
    """What defines the network (the classes per domain come from the domains).

    Attributes:
        arch: a key of :data:`ARCHITECTURES` (``"unet"`` or ``"attention-unet"``).
        base_width: channels of the first level (32 gives 32-64-128-256-512 with depth 5).
        depth: number of resolution levels (>= 2).
        in_channels: image channels.
        norm: ``"dsbn"`` (batch norm per domain) or ``"bn"`` (one shared batch norm, ``joint``).
    """

    arch: str = "unet"
    base_width: int = 32
    depth: int = 5
    in_channels: int = 1
    norm: str = "dsbn"

    def __post_init__(self) -> None:
        for name in ("arch", "norm"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ConfigError(f"{name} must be a string, got {value!r}")
        for name, minimum in (("base_width", 1), ("depth", 2), ("in_channels", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            if value < minimum:
                raise ConfigError(f"{name} must be >= {minimum}, got {value}")
        if self.arch not in ARCHITECTURES:
            raise UnknownNameError("architecture", self.arch, ARCHITECTURES)
        if self.norm not in NORMS:
            raise ConfigError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-friendly mapping; :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Build from a mapping; unknown keys are an error, missing keys take the defaults."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"model config must be a mapping, got {type(data).__name__}")
        known = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(str(key) for key in data if key not in known)
        if unknown:
            raise ConfigError(
                f"unknown model config key(s) {', '.join(unknown)}; known: {', '.join(known)}"
            )
        return cls(**data)


def build_model(config: ModelConfig, *, num_classes: Sequence[int]) -> MultiDomainUNet:
    """The network ``config`` describes, with one head of ``num_classes[k]`` outputs per domain."""
    architecture = ARCHITECTURES.get(config.arch)
    if architecture is None:
        raise UnknownNameError("architecture", config.arch, ARCHITECTURES)
    return architecture.build(config, num_classes)


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
