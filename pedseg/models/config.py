"""The network's configuration and the registry of architectures; imports no torch.

A run's card holds a :class:`ModelConfig`, so reading a card (and predicting with ONNX Runtime)
must not pay for importing torch. Each registered architecture names its builder as an entry
point, ``"module:function"``, imported only when a network is built
(:func:`pedseg.models.build.build_model`), as flake8 and setuptools name plugins.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pedseg.errors import ConfigError, UnknownNameError

__all__ = ["ARCHITECTURES", "NORMS", "Architecture", "ModelConfig"]

NORMS: tuple[str, ...] = ("dsbn", "bn")


@dataclass(frozen=True)
class Architecture:
    """A registered network: a one-line description and its builder as ``"module:function"``
    (called with the :class:`ModelConfig` and the classes per domain)."""

    description: str
    builder: str

    def __post_init__(self) -> None:
        module, _, name = self.builder.partition(":")
        if not module or not name:
            raise ConfigError(f"builder must be 'module:function', got {self.builder!r}")

    def load(self) -> Callable[..., Any]:
        """The builder function (imports its module)."""
        module, _, name = self.builder.partition(":")
        try:
            function = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"architecture builder {self.builder!r} cannot be loaded: {exc}"
            ) from exc
        if not callable(function):
            raise ConfigError(f"architecture builder {self.builder!r} is not callable")
        return function


ARCHITECTURES: dict[str, Architecture] = {
    "unet": Architecture(
        "2D UNet (Ronneberger et al. 2015) with per-domain norms and heads",
        "pedseg.models.build:build_unet",
    ),
    "attention-unet": Architecture(
        "UNet with additive attention gates on the skips (Att-UNet, Oktay et al. 2018)",
        "pedseg.models.build:build_attention_unet",
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
