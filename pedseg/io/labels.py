"""Label maps: integer checks, declared label values and image/label geometry agreement."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable

import numpy as np

from pedseg.errors import VolumeError
from pedseg.io.readers import read_volume
from pedseg.io.volume import DEFAULT_MAX_BYTES, Volume

_MAX_LABEL = 65535
_SHOWN = 10  # values listed in a message at most


def format_values(values: Iterable[int | float]) -> str:
    """``{1, 2, 5}`` (at most ten values, then ``...``)."""
    items = sorted(values)
    shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in items[:_SHOWN])
    more = ", ..." if len(items) > _SHOWN else ""
    return "{" + shown + more + "}"


def format_ranges(values: Iterable[int]) -> str:
    """``0-3, 5, 7-8`` for a set of integers."""
    items = sorted(set(values))
    if not items:
        return "none"
    parts: list[str] = []
    start = prev = items[0]
    for v in [*items[1:], None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if v is not None:
            start = prev = v
    return ", ".join(parts)


def to_label_array(
    array: np.ndarray, *, path: object, allowed: Collection[int] | None = None
) -> np.ndarray:
    """Check that ``array`` holds whole non-negative label values and cast it to uint8/uint16."""
    if array.dtype.kind == "b":
        out = array.astype(np.uint8)
    elif array.dtype == np.uint8:
        out = array  # the common case: nothing to check but the declared values
    else:
        if array.dtype.kind == "f":
            fractional = array != np.rint(array)
            if fractional.any():
                bad = np.unique(array[fractional])
                raise VolumeError(
                    path,
                    f"label map holds non-integer values {format_values(bad.tolist())}; "
                    "labels must be whole numbers (was the map resampled with linear "
                    "interpolation?)",
                )
        elif array.dtype.kind not in "iu":
            raise VolumeError(path, f"label map has voxel type {array.dtype}; expected integers")
        lo = array.min() if array.size else 0
        hi = array.max() if array.size else 0
        if lo < 0:
            bad = np.unique(array[array < 0])
            raise VolumeError(
                path,
                f"label values {format_values(_as_ints(bad))} are negative; "
                f"labels are 0..{_MAX_LABEL}",
            )
        if hi > _MAX_LABEL:
            raise VolumeError(path, f"label value {int(hi)} exceeds the maximum {_MAX_LABEL}")
        out = array.astype(np.uint8 if hi <= 255 else np.uint16, copy=False)
    if allowed is not None:
        present = (
            np.flatnonzero(np.bincount(out.ravel(order="K"))) if out.size else np.array([], int)
        )
        declared = {int(v) for v in allowed}
        undeclared = sorted(int(v) for v in present if int(v) not in declared)
        if undeclared:
            raise VolumeError(
                path,
                f"label values {format_values(undeclared)} are not declared; "
                f"declared: {format_ranges(declared)}",
            )
    return out


def _as_ints(values: np.ndarray) -> list[int]:
    return [int(v) for v in values.tolist()]


def read_label(
    path: str | os.PathLike[str],
    *,
    allowed: Collection[int] | None = None,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
) -> Volume:
    """Like :func:`read_volume` for a label map: whole values (float storage allowed when all values
    are integral), cast to uint8 (or uint16 above 255); values outside ``allowed`` are refused."""
    volume = read_volume(path, max_bytes=max_bytes)
    where = volume.path if volume.path is not None else path
    return volume.with_array(to_label_array(volume.array, path=where, allowed=allowed))


def _fmt(values: Iterable[float]) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def check_pair(image: Volume, label: Volume, *, atol: float = 1e-3) -> None:
    """Raise :class:`VolumeError` (naming the label file) unless ``label`` lies on ``image``'s grid.

    Compared in canonical orientation: shape, spacing (mm), voxel axis directions and origin (mm).
    """
    where = label.path if label.path is not None else "label"
    against = f"image {image.path}" if image.path is not None else "the image"
    if image.array.shape[:3] != label.array.shape[:3]:
        raise VolumeError(
            where,
            f"label shape {label.array.shape[:3]} does not match {against} shape "
            f"{image.array.shape[:3]} (after reorientation to RAS+)",
        )
    if not np.allclose(image.spacing, label.spacing, rtol=0.0, atol=atol):
        raise VolumeError(
            where,
            f"label spacing {_fmt(label.spacing)} mm does not match {against} spacing "
            f"{_fmt(image.spacing)} mm",
        )
    image_dirs = image.affine[:3, :3] / np.asarray(image.spacing)
    label_dirs = label.affine[:3, :3] / np.asarray(label.spacing)
    if not np.allclose(image_dirs, label_dirs, rtol=0.0, atol=atol):
        raise VolumeError(
            where,
            f"label direction {_fmt(label_dirs.T.ravel())} does not match {against} direction "
            f"{_fmt(image_dirs.T.ravel())} (voxel axes in RAS+)",
        )
    if not np.allclose(image.affine[:3, 3], label.affine[:3, 3], rtol=0.0, atol=atol):
        raise VolumeError(
            where,
            f"label origin {_fmt(label.affine[:3, 3])} mm does not match {against} origin "
            f"{_fmt(image.affine[:3, 3])} mm (RAS+)",
        )
