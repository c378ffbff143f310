"""Voxel-to-world geometry: validation, LPS/RAS conversion and reorientation to canonical RAS+.

Every array pedseg works on is in the *canonical* orientation: the voxel axes are permuted and
flipped so that they point as closely as possible to +x (Right), +y (Anterior) and +z (Superior) of
the RAS+ world, exactly like :func:`nibabel.as_closest_canonical`. The orientation array ``ornt``
(nibabel convention) maps an on-disk array to canonical; :func:`from_canonical` undoes it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel import orientations

from pedseg.errors import VolumeError
from pedseg.io.volume import AffineSource

# Diagonal flipping the first two world axes: LPS (ITK, DICOM) <-> RAS (NIfTI, pedseg).
_LPS_RAS = np.diag([-1.0, -1.0, 1.0])
_MIN_SPACING = 1e-6  # mm; anything smaller is a broken header, not a real voxel size
_MIN_VOLUME_RATIO = 1e-6  # |det| / prod(spacing): 0 for collinear axes, 1 for orthogonal ones
XFORM_TOLERANCE_MM = 0.05
"""qform and sform closer than this agree. A qform is a rotation stored as a float32 quaternion:
for a slightly sheared sform it differs by a few micrometres at the corners (seen on the real
pelvis scans: up to 3 um), which is no disagreement; an edited or stale transform differs by mm."""


@dataclass(frozen=True)
class ItkGeometry:
    """ITK-style geometry of an image as read from disk (LPS world, row-major direction)."""

    origin: tuple[float, ...]
    spacing: tuple[float, ...]
    direction: tuple[float, ...]


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each voxel axis of a 4x4 affine (the column norms)."""
    norms = np.sqrt(np.sum(np.asarray(affine, dtype=np.float64)[:3, :3] ** 2, axis=0))
    return (float(norms[0]), float(norms[1]), float(norms[2]))


def validate_affine(affine: np.ndarray, path: object) -> None:
    """Raise :class:`VolumeError` if ``affine`` is not a usable voxel-to-world transform."""
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4):
        raise VolumeError(path, f"affine must be 4x4, got shape {aff.shape}")
    if not np.all(np.isfinite(aff)):
        raise VolumeError(path, "affine contains NaN or infinite values; fix the file's header")
    spacing = spacing_of(aff)
    if min(spacing) < _MIN_SPACING:
        pretty = ", ".join(f"{s:g}" for s in spacing)
        raise VolumeError(
            path, f"voxel spacing ({pretty}) has a zero axis; fix the file's header (pixdim/sform)"
        )
    ratio = abs(float(np.linalg.det(aff[:3, :3]))) / float(np.prod(spacing))
    if ratio < _MIN_VOLUME_RATIO:
        raise VolumeError(
            path,
            "affine is singular (voxel axes are collinear); fix the file's header (sform/qform)",
        )


def canonical_ornt(affine: np.ndarray, path: object) -> np.ndarray:
    """Orientation array mapping on-disk voxel axes to the closest canonical (RAS+) axes."""
    ornt = orientations.io_orientation(np.asarray(affine, dtype=np.float64))
    if np.any(np.isnan(ornt)):
        raise VolumeError(
            path, "cannot determine the orientation of the voxel axes from the affine"
        )
    return np.asarray(ornt, dtype=np.float64)


def is_identity_ornt(ornt: np.ndarray) -> bool:
    """True when ``ornt`` neither permutes nor flips any axis."""
    return bool(np.array_equal(ornt, [[0, 1], [1, 1], [2, 1]]))


def canonical_affine(affine: np.ndarray, ornt: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The voxel-to-world affine of the array reoriented by ``ornt`` (as nibabel computes it)."""
    aff = np.asarray(affine, dtype=np.float64)
    if is_identity_ornt(ornt):
        return aff.copy()
    return np.asarray(aff @ orientations.inv_ornt_aff(ornt, shape[:3]), dtype=np.float64)


def to_canonical(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """A writeable copy of ``array`` (on-disk order), first three axes reoriented to canonical.

    The copy keeps the memory order of the source (``order="K"``; usually Fortran order for NIfTI),
    which is several times faster than forcing C order on large volumes.
    """
    view = array if is_identity_ornt(ornt) else orientations.apply_orientation(array, ornt)
    return np.array(view, order="K", copy=True)


def inverse_ornt(ornt: np.ndarray) -> np.ndarray:
    """The orientation array that undoes ``ornt``."""
    identity = np.array([[0, 1], [1, 1], [2, 1]], dtype=np.float64)
    return np.asarray(orientations.ornt_transform(identity, ornt), dtype=np.float64)


def from_canonical(array: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Undo :func:`to_canonical`: the first three axes go back to the on-disk voxel order."""
    if is_identity_ornt(ornt):
        return array
    return np.asarray(orientations.apply_orientation(array, inverse_ornt(ornt)))


def itk_to_ras_affine(geometry: ItkGeometry) -> np.ndarray:
    """Voxel-to-world RAS affine of a 3D ITK image (index order x, y, z; LPS world)."""
    if len(geometry.origin) != 3 or len(geometry.spacing) != 3 or len(geometry.direction) != 9:
        raise ValueError("itk_to_ras_affine expects 3D geometry")
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(geometry.spacing, dtype=np.float64)
    origin = np.asarray(geometry.origin, dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_RAS @ origin
    return affine


def ras_affine_to_itk(affine: np.ndarray) -> ItkGeometry:
    """Inverse of :func:`itk_to_ras_affine` (spacing = column norms, direction = unit columns)."""
    aff = np.asarray(affine, dtype=np.float64)
    spacing = np.asarray(spacing_of(aff))
    direction = _LPS_RAS @ aff[:3, :3] @ np.diag(1.0 / spacing)
    origin = _LPS_RAS @ aff[:3, 3]
    return ItkGeometry(
        origin=tuple(float(v) for v in origin),
        spacing=tuple(float(v) for v in spacing),
        direction=tuple(float(v) for v in direction.ravel()),
    )


def _corner_distance(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance (mm) between where two affines put the volume's corner voxels."""
    extent = [max(n - 1, 0) for n in shape[:3]]
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, extent[0]) for j in (0, extent[1]) for k in (0, extent[2])]
    )
    return float(np.max(np.linalg.norm((corners @ (a - b).T)[:, :3], axis=1)))


def nifti_affine_source(
    header: nib.Nifti1Header, shape: tuple[int, ...]
) -> tuple[AffineSource, tuple[str, ...]]:
    """Which transform nibabel's ``img.affine`` is (sform if its code is set, else qform, else the
    voxel sizes alone) and what to warn about: a qform that puts the voxels elsewhere than the
    sform used (beyond :data:`XFORM_TOLERANCE_MM`), or no transform at all."""
    sform_code, qform_code = int(header["sform_code"]), int(header["qform_code"])
    if sform_code != 0:
        if qform_code == 0:
            return "sform", ()
        try:
            qform = np.asarray(header.get_qform(), dtype=np.float64)
        except Exception:  # nibabel raises ValueError & co. for a quaternion that is not one
            qform = np.full((4, 4), np.nan)
        if not np.isfinite(qform).all():
            return "sform", (
                f"the qform is invalid; pedseg used the sform (sform_code {sform_code}, "
                f"qform_code {qform_code}); tools that prefer the qform may refuse this scan",
            )
        gap = _corner_distance(np.asarray(header.get_sform(), dtype=np.float64), qform, shape)
        if gap <= XFORM_TOLERANCE_MM:
            return "sform", ()
        return "sform", (
            f"qform and sform disagree (by up to {gap:.3g} mm at the volume's corners); pedseg "
            f"used the sform (sform_code {sform_code}, qform_code {qform_code}), as nibabel does; "
            "tools that prefer the qform place this scan differently",
        )
    if qform_code != 0:
        return "qform", ()
    return "pixdim", (
        "neither qform nor sform is set (both codes 0); pedseg used the voxel sizes only, so the "
        "scan's orientation is unknown",
    )
