"""Volume -> 2D slices the network sees, and back. Training and inference share these functions.

Orientation convention
----------------------
Volumes arrive in canonical RAS+ voxel order (see :mod:`pedseg.io.geometry`): array axes 0, 1, 2
point to +x (Right), +y (Anterior), +z (Superior). The slice axis ``a`` is moved first with
``np.moveaxis(array, a, 0)``; the two remaining canonical axes keep their order and become the
slice's rows and columns, without flips or transposes:

* ``a = 2`` (axial):    slice[row, col] = array[row, col, s]   rows along x, columns along y
* ``a = 1`` (coronal):  slice[row, col] = array[row, s, col]   rows along x, columns along z
* ``a = 0`` (sagittal): slice[row, col] = array[s, row, col]   rows along y, columns along z

Slices are resized in plane to ``image_size`` = (H, W) with pixel-centre alignment
(``align_corners=False``): bilinear with antialiasing for images, nearest (``nearest-exact``) for
labels. :func:`restore_slices` resizes (bilinear) back to the original in-plane grid and moves the
slice axis back, so ``restore_slices`` of a prediction lies on the input volume's canonical grid.

Intensities are normalised over the whole volume (the domain's registered normalisation) before
slicing, so every slice of a scan shares one transform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pedseg.data.resize import bilinear_sources, resize_slices
from pedseg.domains.registry import get_normalization
from pedseg.domains.spec import DomainSpec, SliceAxis
from pedseg.errors import VolumeError
from pedseg.io.volume import Volume

SPACING_RTOL = 1e-3  # spacings within 0.1 % of the largest count as tied for "auto"


@dataclass(frozen=True, eq=False)
class SliceStack:
    """The slices of one volume, ready for the network (or the cache)."""

    images: np.ndarray  # (S, H, W) float32, normalised
    labels: np.ndarray | None  # (S, H, W) uint8
    axis: int  # canonical axis the slices were taken along
    in_plane_shape: tuple[int, int]  # original (rows, cols) of a slice, before resizing

    @property
    def num_slices(self) -> int:
        return int(self.images.shape[0])


def axis_for_spacing(slice_axis: SliceAxis, spacing: tuple[float, float, float]) -> int:
    """The slice axis for a descriptor: ``auto`` = the axis of largest spacing (ties: last)."""
    if slice_axis != "auto":
        return int(slice_axis)
    values = np.asarray(spacing, dtype=np.float64)
    largest = float(values.max())
    tied = np.flatnonzero(values >= largest * (1.0 - SPACING_RTOL))
    return int(tied[-1])


def resolve_slice_axis(spec: DomainSpec, volume: Volume) -> int:
    """The canonical axis ``spec`` slices ``volume`` along (see :func:`axis_for_spacing`)."""
    return axis_for_spacing(spec.slice_axis, volume.spacing)


def prepare_volume(
    volume: Volume,
    spec: DomainSpec,
    *,
    image_size: tuple[int, int] | None = None,
    label: Volume | None = None,
    picks: np.ndarray | None = None,
) -> SliceStack:
    """Normalise ``volume``, slice it along the domain's axis, resize each slice to ``image_size``.

    ``image_size`` defaults to the descriptor's. ``label`` (same grid as ``volume``) is resized with
    nearest neighbours and must only hold 0 and the declared label ids. ``picks``: only these slice
    indices (the normalisation still sees the whole volume), e.g. the few slices recognition
    embeds; :func:`slice_count` tells how many there are without preparing any.
    """
    size = _check_size(image_size if image_size is not None else spec.image_size)
    axis = resolve_slice_axis(spec, volume)
    normalized = np.asarray(get_normalization(spec.normalization)(volume.array), dtype=np.float32)
    slices = np.moveaxis(normalized, axis, 0)
    in_plane = (int(slices.shape[1]), int(slices.shape[2]))
    if picks is not None:
        slices = slices[np.asarray(picks, dtype=np.int64)]
    images = resize_slices(slices, size, mode="bilinear")
    labels = None
    if label is not None:
        label_slices = np.moveaxis(_label_array(label, volume, spec), axis, 0)
        if picks is not None:
            label_slices = label_slices[np.asarray(picks, dtype=np.int64)]
        labels = resize_slices(label_slices, size, mode="nearest").astype(np.uint8)
    return SliceStack(images=images, labels=labels, axis=axis, in_plane_shape=in_plane)


def slice_count(volume: Volume, spec: DomainSpec) -> int:
    """How many slices :func:`prepare_volume` makes of ``volume`` for ``spec``."""
    return int(volume.shape[resolve_slice_axis(spec, volume)])


def restore_slices(probs: np.ndarray, *, in_plane_shape: tuple[int, int], axis: int) -> np.ndarray:
    """Invert :func:`prepare_volume`'s geometry for per-slice outputs.

    ``probs`` (S, C, h, w) float32 is resized (bilinear) to ``in_plane_shape`` and the slice axis is
    moved back to ``axis``: the result is (X, Y, Z, C) on the volume's canonical grid.
    """
    if probs.ndim != 4:
        raise ValueError(f"probs must be (slices, channels, h, w), got shape {probs.shape}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    size = _check_size(in_plane_shape)
    n, c, h, w = probs.shape
    if (h, w) == size:
        resized = np.asarray(probs, dtype=np.float32)
    else:
        flat = np.ascontiguousarray(probs, dtype=np.float32).reshape(n * c, h, w)
        # Upsampling needs no anti-aliasing (and plain bilinear is what restore_argmax inverts).
        shrink = size[0] < h or size[1] < w
        resized = resize_slices(flat, size, mode="bilinear", antialias=shrink).reshape(n, c, *size)
    # (S, C, A, B) -> (S, A, B, C) -> slice axis back in place, channels last.
    out = np.moveaxis(resized.transpose(0, 2, 3, 1), 0, axis)
    return np.ascontiguousarray(out)


def restore_argmax(probs: np.ndarray, *, in_plane_shape: tuple[int, int]) -> np.ndarray:
    """``argmax`` over the classes of :func:`restore_slices`' output, slice axis first: (S, A, B)
    class indices, equal to ``restore_slices(probs, ..., axis=0).argmax(-1)`` but without the
    full-resolution probabilities when upsampling.

    Bilinear upsampling makes each output pixel a convex combination of the (at most 4) input
    pixels around it, and a class that is the largest at each of them is the largest of any convex
    combination. So a pixel whose 2x2 input neighbourhood agrees takes that class directly; only
    the pixels near a boundary (a few percent of a slice) are interpolated.
    """
    size = _check_size(in_plane_shape)
    h, w = probs.shape[2:]
    if size[0] < h or size[1] < w:  # downsampling: anti-aliased, no shortcut
        return restore_slices(probs, in_plane_shape=in_plane_shape, axis=0).argmax(-1)
    # Class indices in the smallest integer type: the full-resolution gathers below move 1 byte
    # per pixel instead of 8 (the values are those of argmax's int64 result).
    index = np.uint8 if probs.shape[1] <= 256 else np.int64
    low = np.asarray(probs.argmax(axis=1)).astype(index, copy=False)
    if (h, w) == size:
        return low
    y0, y1, wy = bilinear_sources(size[0], h)
    x0, x1, wx = bilinear_sources(size[1], w)
    below, right = np.minimum(np.arange(h) + 1, h - 1), np.minimum(np.arange(w) + 1, w - 1)
    agree = (low == low[:, below]) & (low == low[:, :, right]) & (low == low[:, below][:, :, right])
    out = np.take(np.take(low, y0, axis=1), x0, axis=2)
    boundary = np.take(np.take(~agree, y0, axis=1), x0, axis=2)
    slices, rows, cols = np.nonzero(boundary)
    if slices.size:
        a, b, wa, wb = y0[rows], y1[rows], wy[rows, None], wx[cols, None]
        left, other = x0[cols], x1[cols]
        mixed = (1 - wa) * ((1 - wb) * probs[slices, :, a, left] + wb * probs[slices, :, a, other])
        mixed += wa * ((1 - wb) * probs[slices, :, b, left] + wb * probs[slices, :, b, other])
        out[slices, rows, cols] = mixed.argmax(axis=1)
    return out


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or any(int(v) < 1 for v in size):
        raise ValueError(f"size must be two positive integers, got {size!r}")
    return (int(size[0]), int(size[1]))


def _label_array(label: Volume, image: Volume, spec: DomainSpec) -> np.ndarray:
    """The label map as an integer array after checking its grid and values."""
    where = label.path if label.path is not None else "label"
    if label.array.shape != image.array.shape:
        raise VolumeError(
            where,
            f"label shape {label.array.shape} does not match image shape {image.array.shape}",
        )
    array = label.array
    if not np.issubdtype(array.dtype, np.integer):
        raise VolumeError(where, f"label map must hold integers, got dtype {array.dtype}")
    if array.size and int(array.min()) < 0:
        raise VolumeError(where, "label map holds negative values")
    present = np.flatnonzero(np.bincount(array.ravel()))
    undeclared = sorted(set(present.tolist()) - {0, *spec.label_ids})
    if undeclared:
        raise VolumeError(
            where,
            f"label values {set(undeclared)} are not declared in domain {spec.name!r}; "
            f"declared: 0-{max(spec.label_ids)}",
        )
    return array
