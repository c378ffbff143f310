"""Synthetic volumes for the io tests: NIfTI with chosen qform/sform, oblique affines, DICOM."""

from __future__ import annotations

import locale
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

NiftiMaker = Callable[..., Path]
SeriesWriter = Callable[..., Path]


def rotation(angles: Sequence[float]) -> np.ndarray:
    """3x3 rotation from three Euler angles (radians)."""
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return np.asarray(rx @ ry @ rz)


def make_affine(
    *,
    perm: Sequence[int] = (0, 1, 2),
    flips: Sequence[int] = (1, 1, 1),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    angles: Sequence[float] = (0.0, 0.0, 0.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """Voxel->RAS affine: voxel axis i points along world axis perm[i] * flips[i], then rotated."""
    columns = np.zeros((3, 3))
    for axis, (world, sign, size) in enumerate(zip(perm, flips, spacing, strict=True)):
        columns[world, axis] = sign * size
    affine = np.eye(4)
    affine[:3, :3] = rotation(angles) @ columns
    affine[:3, 3] = origin
    return affine


def save_nifti(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    qform_affine: np.ndarray | None = None,
    qform_code: int = 1,
    sform_code: int = 1,
    nifti2: bool = False,
    descrip: str = "",
) -> Path:
    """Write ``data`` with sform ``affine`` and qform ``qform_affine`` (default: the same)."""
    cls = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    img = cls(data, np.eye(4))
    img.set_sform(affine, code=sform_code)
    img.set_qform(affine if qform_affine is None else qform_affine, code=qform_code)
    if descrip:
        img.header["descrip"] = descrip
    nib.save(img, path)
    return path


@pytest.fixture
def make_nifti(tmp_path: Path) -> NiftiMaker:
    """``make_nifti(name, data, affine=..., **save_nifti options)`` -> path under tmp_path."""

    def make(
        name: str, data: np.ndarray, affine: np.ndarray | None = None, **options: object
    ) -> Path:
        aff = np.diag([1.0, 1.0, 1.0, 1.0]) if affine is None else affine
        return save_nifti(tmp_path / name, data, aff, **options)  # type: ignore[arg-type]

    return make


def write_dicom_series(
    folder: Path,
    volume_zyx: np.ndarray,
    *,
    uid: str,
    description: str,
    spacing: Sequence[float] = (0.8, 0.9, 2.5),
    origin: Sequence[float] = (-10.0, 20.0, 5.0),
    direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1),
    prefix: str = "slice",
) -> Path:
    """Write an int16 volume as one DICOM file per slice of a series ``uid`` (SimpleITK/GDCM).

    GDCM's writer resets the process locale to "C" (Python's default text encoding then becomes
    ASCII); the caller's locale is restored so later tests see the environment they started with.
    """
    saved = locale.setlocale(locale.LC_ALL)
    try:
        return _write_dicom_series(
            folder,
            volume_zyx,
            uid=uid,
            description=description,
            spacing=spacing,
            origin=origin,
            direction=direction,
            prefix=prefix,
        )
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_dicom_series(
    folder: Path,
    volume_zyx: np.ndarray,
    *,
    uid: str,
    description: str,
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float],
    prefix: str,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(volume_zyx.astype(np.int16))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetOrigin(tuple(float(o) for o in origin))
    image.SetDirection(tuple(float(d) for d in direction))
    d = direction
    common = [
        ("0008|0060", "MR"),
        ("0008|0008", "DERIVED\\SECONDARY"),
        ("0020|000d", "1.2.826.0.1.3680043.2.1125.1"),
        ("0020|000e", uid),
        ("0008|103e", description),
        ("0020|0037", "\\".join(str(float(v)) for v in (d[0], d[3], d[6], d[1], d[4], d[7]))),
    ]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for i in range(image.GetDepth()):
        plane = image[:, :, i]
        for tag, value in common:
            plane.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, i))
        plane.SetMetaData("0020|0032", "\\".join(str(p) for p in position))
        plane.SetMetaData("0020|0013", str(i + 1))
        plane.SetMetaData("0008|0018", f"{uid}.{i + 1}")
        writer.SetFileName(str(folder / f"{prefix}{i:03d}.dcm"))
        writer.Execute(plane)
    return folder


@pytest.fixture
def dicom_writer() -> SeriesWriter:
    """The :func:`write_dicom_series` helper as a fixture."""
    return write_dicom_series
