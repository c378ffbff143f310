"""Per-case facts of a labelled volume, the raw material of a dataset fingerprint.

Everything is measured on the volume's canonical grid (RAS+ voxel order, :mod:`pedseg.io`), before
any resizing, so the facts do not depend on the network's image size:

* per label: its voxel count; its bounding box in mm along the three canonical axes; its centroid
  in mm (voxel index times spacing, canonical axes); the voxel counts of its 26-connected
  components (largest first);
* per label, its *in-plane extents*: for every slice (along the domain's slice axis) that contains
  the label, the smaller side of the label's bounding box in that slice, as a fraction of the
  slice's size along that side: ``min(rows / R, cols / C)`` for a box of ``rows x cols`` pixels in a
  slice of ``R x C``. Resizing the slice to ``S x S`` (what the network sees) makes that side
  ``fraction * S`` network pixels;
* intensity samples of the foreground (label > 0) and of the whole image (at most
  ``MAX_SAMPLES`` voxels each, every k-th voxel in C order, so results are deterministic).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

__all__ = ["MAX_SAMPLES", "CaseFacts", "LabelCase", "case_facts", "component_sizes"]

MAX_SAMPLES = 100_000


@dataclass(frozen=True, eq=False)
class LabelCase:
    """One label in one case (present: at least one voxel)."""

    voxels: int
    bbox_mm: tuple[float, float, float]
    centroid_mm: tuple[float, float, float]
    """Mean voxel index times spacing, per canonical axis."""
    components: np.ndarray
    """Voxel counts of its 26-connected components, largest first (int64)."""
    extents: np.ndarray
    """Per slice holding the label: the smaller in-plane bounding-box side as a fraction."""


@dataclass(frozen=True, eq=False)
class CaseFacts:
    """What one labelled case contributes to its domain's fingerprint."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    axis: int
    in_plane: tuple[int, int]
    in_plane_spacing: tuple[float, float]
    foreground_sample: np.ndarray
    image_sample: np.ndarray
    labels: dict[int, LabelCase]

    @property
    def num_slices(self) -> int:
        return self.shape[self.axis]

    @property
    def voxel_mm3(self) -> float:
        return float(np.prod(self.spacing))


def case_facts(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    spacing: tuple[float, float, float],
    axis: int,
    label_ids: Sequence[int],
) -> CaseFacts:
    """The facts of one case: ``image`` and ``labels`` on the same canonical 3D grid."""
    if image.shape != labels.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and labels {labels.shape} must be one 3D grid")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    in_axes = [a for a in range(3) if a != axis]
    shape = (int(labels.shape[0]), int(labels.shape[1]), int(labels.shape[2]))
    in_plane = (shape[in_axes[0]], shape[in_axes[1]])
    lab = np.ascontiguousarray(labels)
    found: dict[int, LabelCase] = {}
    for label_id in label_ids:
        mask = lab == label_id
        box = _bbox(mask)
        if box is None:
            continue
        crop = mask[box]
        sides = [b.stop - b.start for b in box]
        where = np.nonzero(crop)
        centre = [(float(where[k].mean()) + box[k].start) * spacing[k] for k in range(3)]
        found[int(label_id)] = LabelCase(
            voxels=int(crop.sum()),
            bbox_mm=(sides[0] * spacing[0], sides[1] * spacing[1], sides[2] * spacing[2]),
            centroid_mm=(centre[0], centre[1], centre[2]),
            components=component_sizes(crop),
            extents=_slice_extents(np.moveaxis(crop, axis, 0), in_plane),
        )
    values = np.asarray(image)
    foreground = values[lab > 0]
    return CaseFacts(
        shape=shape,
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        axis=axis,
        in_plane=in_plane,
        in_plane_spacing=(float(spacing[in_axes[0]]), float(spacing[in_axes[1]])),
        foreground_sample=_sample(foreground),
        image_sample=_sample(values.ravel()),
        labels=found,
    )


def component_sizes(mask: np.ndarray) -> np.ndarray:
    """Voxel counts of the 26-connected components of a 3D boolean mask, largest first."""
    if not mask.any():
        return np.zeros(0, dtype=np.int64)
    if min(mask.shape) > 1:
        components = cc3d.connected_components(mask, connectivity=26)
    else:  # cc3d 4.1 fails on arrays with a size-1 axis (see inference.postprocess)
        components, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    counts = np.bincount(np.asarray(components).ravel())[1:]
    counts = counts[counts > 0]
    return np.sort(counts.astype(np.int64))[::-1]


def _slice_extents(slices: np.ndarray, in_plane: tuple[int, int]) -> np.ndarray:
    """``min(rows / R, cols / C)`` of the label's box in every slice of (S, r, c) that holds it."""
    rows_any: np.ndarray = np.any(slices, axis=2)
    cols_any: np.ndarray = np.any(slices, axis=1)
    present: np.ndarray = np.any(rows_any, axis=1)
    rows = _span(rows_any[present])
    cols = _span(cols_any[present])
    return np.minimum(rows / in_plane[0], cols / in_plane[1]).astype(np.float64)


def _span(flags: np.ndarray) -> np.ndarray:
    """Last minus first True index + 1 along axis 1 (every row holds a True)."""
    first = np.argmax(flags, axis=1)
    last = flags.shape[1] - 1 - np.argmax(flags[:, ::-1], axis=1)
    return (last - first + 1).astype(np.float64)


def _bbox(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    along = [np.flatnonzero(np.any(mask, axis=_others(k))) for k in range(3)]
    if along[0].size == 0:
        return None
    lo0, lo1, lo2 = (int(a[0]) for a in along)
    hi0, hi1, hi2 = (int(a[-1]) + 1 for a in along)
    return (slice(lo0, hi0), slice(lo1, hi1), slice(lo2, hi2))


def _others(axis: int) -> tuple[int, int]:
    first, second = (a for a in range(3) if a != axis)
    return (first, second)


def _sample(values: np.ndarray) -> np.ndarray:
    flat = np.asarray(values).ravel()
    if flat.size > MAX_SAMPLES:
        flat = flat[:: -(-flat.size // MAX_SAMPLES)]
    return flat.astype(np.float64)
