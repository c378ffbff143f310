"""The in-memory volume: a canonical (RAS+) array plus what is needed to write results back."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pedseg.errors import ConfigError

MAX_BYTES_ENV = "PEDSEG_MAX_VOLUME_BYTES"
_FALLBACK_MAX_BYTES = 4 * 1024**3
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}

FORMATS = ("nifti", "mha", "nrrd", "dicom")

# Where a volume's voxel-to-world affine came from: the NIfTI sform or qform, the NIfTI voxel
# sizes alone (both codes 0: no orientation), or ITK's origin/spacing/direction (MHA, NRRD, DICOM).
AffineSource = Literal["sform", "qform", "pixdim", "itk"]


def parse_byte_size(text: str, *, source: str = MAX_BYTES_ENV) -> int:
    """Parse ``"4294967296"``, ``"512M"``, ``"4G"`` or ``"4GiB"`` into a number of bytes."""
    cleaned = text.strip().upper().replace("_", "").removesuffix("IB").removesuffix("B")
    unit = cleaned[-1:] if cleaned[-1:] in _UNITS else ""
    number = cleaned[: len(cleaned) - len(unit)]
    try:
        value = int(float(number) * _UNITS[unit])
    except ValueError:
        raise ConfigError(
            f"{source} must be a byte count such as 4294967296 or 4G, got {text!r}"
        ) from None
    if value <= 0:
        raise ConfigError(f"{source} must be a positive byte count, got {text!r}")
    return value


def _default_max_bytes() -> tuple[int, str | None]:
    raw = os.environ.get(MAX_BYTES_ENV)
    if raw is None or not raw.strip():
        return _FALLBACK_MAX_BYTES, None
    try:
        return parse_byte_size(raw), None
    except ConfigError as error:
        return _FALLBACK_MAX_BYTES, str(error)


# Largest decoded voxel payload a reader accepts (checked from the header, before decoding).
DEFAULT_MAX_BYTES, _ENV_ERROR = _default_max_bytes()


def resolve_max_bytes(max_bytes: int | None) -> int | None:
    """Validate a ``max_bytes`` argument; ``None`` means no limit."""
    if max_bytes is None:
        return None
    if max_bytes == DEFAULT_MAX_BYTES and _ENV_ERROR is not None:
        raise ConfigError(_ENV_ERROR)
    if max_bytes <= 0:
        raise ConfigError(f"max_bytes must be a positive byte count or None, got {max_bytes}")
    return int(max_bytes)


@dataclass(frozen=True, eq=False)
class SourceGeometry:
    """Everything needed to write an array back with the input's exact on-disk geometry.

    ``header`` is a nibabel ``Nifti1Header``/``Nifti2Header`` copy for NIfTI input (identifying
    fields cleared) and a :class:`pedseg.io.geometry.ItkGeometry` (LPS origin, spacing, direction)
    for MHA, NRRD and DICOM input. ``affine_source`` says which part of the header ``affine`` was
    taken from (see :data:`AffineSource`; None where unknown).
    """

    shape: tuple[int, ...]
    affine: np.ndarray
    ornt: np.ndarray
    format: str
    header: object | None
    affine_source: AffineSource | None = None


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D volume in canonical RAS+ orientation with its native dtype.

    ``array`` is a writeable array owned by the volume; its memory order is whatever was fastest to
    produce (usually Fortran order): call ``np.ascontiguousarray`` where C order matters.
    ``warnings`` holds what reading noticed but did not refuse (one sentence each), e.g. a qform
    and sform that disagree; they are logged when read and belong in a prediction's report.
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    source: SourceGeometry
    path: Path | None = None
    warnings: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        """Canonical shape of :attr:`array`."""
        shape = self.array.shape
        return (int(shape[0]), int(shape[1]), int(shape[2]))

    def with_array(self, array: np.ndarray) -> Volume:
        """A copy of this volume holding ``array`` (same canonical shape, any dtype)."""
        if tuple(array.shape[:3]) != self.array.shape[:3]:
            raise ValueError(f"array shape {array.shape} does not match volume {self.array.shape}")
        return Volume(
            array=array,
            spacing=self.spacing,
            affine=self.affine,
            source=self.source,
            path=self.path,
            warnings=self.warnings,
        )
