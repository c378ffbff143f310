"""Writing volumes: results go back with the input's exact on-disk geometry; writes are atomic."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from pedseg.errors import OutputError, VolumeError
from pedseg.io.atomic import atomic_path
from pedseg.io.dicom import itk_message
from pedseg.io.geometry import ItkGeometry, from_canonical, ras_affine_to_itk, validate_affine
from pedseg.io.readers import volume_suffix
from pedseg.io.volume import Volume

OUTPUT_SUFFIXES = {".nii": "nifti", ".nii.gz": "nifti", ".mha": "mha", ".nrrd": "nrrd"}
# dtypes no output format stores: written as the nearest type that holds every value
_PROMOTE: dict[np.dtype[Any], np.dtype[Any]] = {
    np.dtype(np.bool_): np.dtype(np.uint8),
    np.dtype(np.float16): np.dtype(np.float32),
}


def _output_format(path: Path) -> str:
    fmt = OUTPUT_SUFFIXES.get(volume_suffix(path))
    if fmt is None:
        raise VolumeError(
            path, "unsupported output file type; name it .nii.gz, .nii, .mha or .nrrd"
        )
    return fmt


def _target_dtype(path: Path, dtype: np.dtype) -> np.dtype:
    dtype = _PROMOTE.get(dtype, dtype)
    if dtype.kind not in "iuf" or dtype.itemsize > 8:
        raise VolumeError(path, f"cannot write voxel type {dtype}; use an integer or float array")
    return dtype


def _check_array(path: Path, array: np.ndarray, canonical_shape: tuple[int, ...] | None) -> None:
    if array.ndim not in (3, 4):
        raise VolumeError(
            path, f"array to write must be 3D or 4D (channels last), got shape {array.shape}"
        )
    if canonical_shape is not None and tuple(array.shape[:3]) != tuple(canonical_shape[:3]):
        raise VolumeError(
            path,
            f"array shape {array.shape} does not match the reference volume's shape "
            f"{tuple(canonical_shape[:3])}",
        )


def _fresh_nifti_header(
    affine: np.ndarray, *, qform_code: int, sform_code: int
) -> nib.Nifti1Header:
    header = nib.Nifti1Header()
    header.set_qform(affine, code=qform_code)
    header.set_sform(affine, code=sform_code)
    header.set_xyzt_units("mm", "sec")
    return header


def _save_nifti(data: np.ndarray, header: nib.Nifti1Header, path: Path, overwrite: bool) -> None:
    """Write ``data`` (on-disk voxel order) with a copy of ``header``: qform, sform, their codes
    and pixdim are kept bit for bit; the data type, shape and display/scaling fields are set."""
    hdr = header.copy()
    hdr.set_data_dtype(data.dtype)
    hdr.set_data_shape(data.shape)
    hdr.set_slope_inter(1.0, 0.0)
    hdr.set_intent("none", (), name="")
    hdr["cal_min"] = 0.0
    hdr["cal_max"] = 0.0
    image_class = nib.Nifti2Image if isinstance(hdr, nib.Nifti2Header) else nib.Nifti1Image
    image = image_class(data, None, header=hdr)  # affine None: the header's q/sform stay untouched
    with atomic_path(path, overwrite=overwrite) as tmp:
        nib.save(image, tmp)


def _save_itk(data: np.ndarray, geometry: ItkGeometry, path: Path, overwrite: bool) -> None:
    if data.ndim == 4:
        image = sitk.GetImageFromArray(
            np.ascontiguousarray(data.transpose(2, 1, 0, 3)), isVector=True
        )
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetOrigin(geometry.origin)
    image.SetSpacing(geometry.spacing)
    image.SetDirection(geometry.direction)
    writer = sitk.ImageFileWriter()
    writer.SetUseCompression(True)
    with atomic_path(path, overwrite=overwrite) as tmp:
        writer.SetFileName(str(tmp))
        try:
            writer.Execute(image)
        except RuntimeError as error:
            raise OutputError(path, itk_message(error)) from None


def _save(
    data: np.ndarray,
    path: Path,
    fmt: str,
    *,
    nifti_header: nib.Nifti1Header,
    itk_geometry: ItkGeometry,
    overwrite: bool,
) -> None:
    try:
        if fmt == "nifti":
            _save_nifti(data, nifti_header, path, overwrite)
        else:
            _save_itk(data, itk_geometry, path, overwrite)
    except OSError as error:
        raise OutputError(path, error) from None


def write_like(
    array: np.ndarray,
    reference: Volume,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    dtype: np.dtype | None = None,
) -> None:
    """Write ``array`` (canonical orientation, shape of ``reference.array``, optionally with a
    trailing channel axis) with exactly the reference's on-disk shape, affine, qform/sform, codes.

    The format follows the suffix (.nii, .nii.gz, .mha, .nrrd); identifying header fields of the
    reference (description, aux file, extensions) are not copied. An existing file is refused
    unless ``overwrite``; nothing is left behind when writing fails.
    """
    out = Path(path)
    fmt = _output_format(out)
    data = np.asarray(array)
    _check_array(out, data, reference.array.shape)
    target = _target_dtype(out, np.dtype(dtype) if dtype is not None else data.dtype)
    source = reference.source
    data = from_canonical(data, source.ornt)
    if tuple(data.shape[:3]) != tuple(source.shape[:3]):
        raise VolumeError(
            out, f"reoriented shape {data.shape} differs from the reference's {source.shape}"
        )
    data = np.asarray(data, dtype=target)
    header = source.header
    if isinstance(header, nib.Nifti1Header):  # Nifti2Header derives from it
        nifti_header = header
    else:
        nifti_header = _fresh_nifti_header(source.affine, qform_code=1, sform_code=1)
    itk_geometry = header if isinstance(header, ItkGeometry) else ras_affine_to_itk(source.affine)
    _save(data, out, fmt, nifti_header=nifti_header, itk_geometry=itk_geometry, overwrite=overwrite)


def write_volume(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    qform_code: int = 1,
    sform_code: int = 1,
) -> None:
    """Write a new volume: ``array`` in its own voxel order, voxel-to-world RAS ``affine``.

    For NIfTI the affine goes into the sform and (as the nearest rigid transform) the qform, with
    the given codes; ITK formats store it as LPS origin, spacing and direction. Atomic.
    """
    out = Path(path)
    fmt = _output_format(out)
    data = np.asarray(array)
    _check_array(out, data, None)
    aff = np.asarray(affine, dtype=np.float64)
    validate_affine(aff, out)
    for name, code in (("qform_code", qform_code), ("sform_code", sform_code)):
        if code not in (0, 1, 2, 3, 4, 5):
            raise VolumeError(out, f"{name} must be one of 0-5 (NIfTI xform codes), got {code}")
    data = np.asarray(data, dtype=_target_dtype(out, data.dtype))
    header = _fresh_nifti_header(aff, qform_code=qform_code, sform_code=sform_code)
    _save(
        data,
        out,
        fmt,
        nifti_header=header,
        itk_geometry=ras_affine_to_itk(aff),
        overwrite=overwrite,
    )
