"""On-device batched augmentation: random flip, translation and rotation (the paper's).

One affine transform per sample, applied with :func:`torch.nn.functional.affine_grid` and
:func:`torch.nn.functional.grid_sample` to the whole batch at once: bilinear for images, nearest for
label maps (so labels stay in their label set). Rotation is done in pixel units (non-square images are
not sheared), translation is a fraction of the image size, the flip mirrors the width axis (or, per
sample, the height axis or nothing: :meth:`AugmentParams.with_flip_axes`, from each domain's
``augment: {flip: ...}``). Images are padded with each slice's minimum (MR background), labels with
0 (background).

The random parameters are drawn on the CPU by a :class:`torch.Generator` seeded from
``(seed, epoch, step)`` for every sample of the step's *global* batch, then moved to the device; a
sample's parameters therefore depend only on its position in the global batch, not on the device, the
rank or the worker that applies them, nor on the global RNG state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pedseg.errors import ConfigError

__all__ = [
    "AugmentConfig",
    "AugmentParams",
    "apply_augmentation",
    "augmentation_generator",
    "identity_params",
    "sample_params",
]

_AUGMENT_STREAM = 0xA06


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges; the defaults are the paper's.

    Args:
        flip_probability: probability of mirroring a slice along its width axis.
        max_translation: largest shift along each axis, as a fraction of the image size.
        max_rotation: largest rotation in degrees (uniform in ``[-max, max]``).
    """

    flip_probability: float = 0.5
    max_translation: float = 0.25
    max_rotation: float = 45.0

    def __post_init__(self) -> None:
        checks = (
            ("flip_probability", self.flip_probability, 1.0),
            ("max_translation", self.max_translation, 1.0),
            ("max_rotation", self.max_rotation, 180.0),
        )
        for name, value, high in checks:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number in [0, {high:g}], got {value!r}")
            if not 0.0 <= value <= high:
                raise ConfigError(f"{name} must be in [0, {high:g}], got {value}")


@dataclass(frozen=True)
class AugmentParams:
    """Per-sample parameters: ``flip`` (N,) bool, ``angle`` (N,) radians, ``shift`` (N, 2) as
    fractions of the width and height; ``vertical`` (N,) bool: the flip mirrors the height axis
    instead of the width axis (``None``: never)."""

    flip: Tensor
    angle: Tensor
    shift: Tensor
    vertical: Tensor | None = None

    def __len__(self) -> int:
        return int(self.flip.shape[0])

    def select(self, positions: Tensor | np.ndarray) -> AugmentParams:
        """The parameters of the samples at ``positions`` (e.g. one rank's shard)."""
        index = torch.as_tensor(np.asarray(positions), dtype=torch.long)
        vertical = None if self.vertical is None else self.vertical[index]
        return AugmentParams(self.flip[index], self.angle[index], self.shift[index], vertical)

    def to(self, device: torch.device | str) -> AugmentParams:
        vertical = None if self.vertical is None else self.vertical.to(device)
        return AugmentParams(
            self.flip.to(device), self.angle.to(device), self.shift.to(device), vertical
        )

    def with_flip_axes(self, axes: Sequence[str]) -> AugmentParams:
        """The same draws with each sample's flip on its own axis (``width``, ``height`` or
        ``none``, one per sample): the random stream does not change."""
        if len(axes) != len(self):
            raise ConfigError(f"need one flip axis per sample ({len(self)}), got {len(axes)}")
        allowed = torch.tensor([axis != "none" for axis in axes], device=self.flip.device)
        vertical = torch.tensor([axis == "height" for axis in axes], device=self.flip.device)
        return AugmentParams(self.flip & allowed, self.angle, self.shift, vertical)


def augmentation_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """A CPU generator determined by ``(seed, epoch, step)`` only."""
    sequence = np.random.SeedSequence([_AUGMENT_STREAM, int(seed), int(epoch), int(step)])
    value = int(sequence.generate_state(1, dtype=np.uint64)[0]) & ((1 << 63) - 1)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(value)
    return generator


def sample_params(n: int, *, config: AugmentConfig, generator: torch.Generator) -> AugmentParams:
    """Draw ``n`` samples' parameters on the CPU (float32)."""
    uniform = torch.rand((n, 4), generator=generator, dtype=torch.float64)
    flip = uniform[:, 0] < config.flip_probability
    angle = (uniform[:, 1] * 2.0 - 1.0) * math.radians(config.max_rotation)
    shift = (uniform[:, 2:4] * 2.0 - 1.0) * config.max_translation
    return AugmentParams(flip=flip, angle=angle.float(), shift=shift.float())


def identity_params(n: int) -> AugmentParams:
    """Parameters that leave images and labels unchanged."""
    return AugmentParams(
        flip=torch.zeros(n, dtype=torch.bool),
        angle=torch.zeros(n, dtype=torch.float32),
        shift=torch.zeros((n, 2), dtype=torch.float32),
    )


def affine_matrices(params: AugmentParams, *, height: int, width: int) -> Tensor:
    """``(N, 2, 3)`` float32 matrices mapping output to input normalised coordinates.

    The linear part is ``D^-1 R D F`` with ``D = diag(W, H)`` (rotation in pixel units), ``F`` the
    optional mirror of x; the translation is ``2 * shift`` in normalised units (the image spans 2).
    """
    angle = params.angle.float()
    cos, sin = torch.cos(angle), torch.sin(angle)
    vertical = params.vertical if params.vertical is not None else torch.zeros_like(params.flip)
    mirror_x = 1.0 - 2.0 * (params.flip & ~vertical).float()
    mirror_y = 1.0 - 2.0 * (params.flip & vertical).float()
    aspect_xy = width / height  # D^-1 R D: off-diagonals scaled by the aspect ratio
    theta = torch.zeros((len(params), 2, 3), dtype=torch.float32, device=angle.device)
    theta[:, 0, 0] = cos * mirror_x
    theta[:, 0, 1] = -sin / aspect_xy * mirror_y
    theta[:, 1, 0] = sin * aspect_xy * mirror_x
    theta[:, 1, 1] = cos * mirror_y
    theta[:, :, 2] = 2.0 * params.shift.float()
    return theta


def apply_augmentation(
    images: Tensor, labels: Tensor, params: AugmentParams
) -> tuple[Tensor, Tensor]:
    """Transform ``images`` (N, C, H, W) float and ``labels`` (N, H, W) integer alike.

    Returns the images in their input dtype and memory format and the labels as ``long``.
    """
    if images.ndim != 4 or labels.ndim != 3 or images.shape[0] != labels.shape[0]:
        raise ConfigError(
            f"augmentation needs images (N, C, H, W) and labels (N, H, W), got "
            f"{tuple(images.shape)} and {tuple(labels.shape)}"
        )
    if len(params) != images.shape[0]:
        raise ConfigError(
            f"augmentation got parameters for {len(params)} samples but {images.shape[0]} images"
        )
    n, _, height, width = images.shape
    params = params.to(images.device)
    theta = affine_matrices(params, height=height, width=width)
    grid = F.affine_grid(theta, [n, 1, height, width], align_corners=False)
    source = images.float()
    floor = source.amin(dim=(1, 2, 3), keepdim=True)
    warped = (
        F.grid_sample(
            source - floor, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        + floor
    )
    warped_labels = F.grid_sample(
        labels[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False
    )
    return warped.to(images.dtype), warped_labels[:, 0].round().long()
