"""Reading volumes (NIfTI, MHA/MHD, NRRD, DICOM series) into canonical RAS+ :class:`Volume` objects.

NIfTI headers are parsed by nibabel (exact qform/sform); the voxel payload is inflated in one
call (ISA-L's, else zlib's), which is faster than nibabel's streaming reader and detects truncated
files (a check SimpleITK skips). ITK formats go through SimpleITK; their LPS geometry becomes a RAS affine.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.arrayproxy import ArrayProxy
from nibabel.volumeutils import apply_read_scaling

from pedseg.errors import VolumeError
from pedseg.io import dicom
from pedseg.io.geometry import (
    ItkGeometry,
    canonical_affine,
    canonical_ornt,
    itk_to_ras_affine,
    nifti_affine_source,
    spacing_of,
    to_canonical,
    validate_affine,
)
from pedseg.io.volume import (
    DEFAULT_MAX_BYTES,
    AffineSource,
    SourceGeometry,
    Volume,
    resolve_max_bytes,
)


def _gzip_module() -> Any:
    """Intel's ISA-L (``isal``, a dependency) inflates gzip about 1.6x faster than zlib on this
    project's CPUs, byte for byte the same; zlib where it is missing."""
    try:
        return importlib.import_module("isal.isal_zlib")
    except ImportError:  # pragma: no cover - isal is a dependency
        return zlib


_INFLATE: Any = _gzip_module()


NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = {".mha": "mha", ".mhd": "mha", ".nrrd": "nrrd", ".nhdr": "nrrd"}
_IDENTIFYING_FIELDS = ("descrip", "aux_file", "intent_name", "db_name", "data_type")
_SUPPORTED_KINDS = "biuf"  # bool, signed, unsigned, float

logger = logging.getLogger(__name__)

_ITK_DTYPES: dict[int, np.dtype] = {
    sitk.sitkUInt8: np.dtype(np.uint8),
    sitk.sitkInt8: np.dtype(np.int8),
    sitk.sitkUInt16: np.dtype(np.uint16),
    sitk.sitkInt16: np.dtype(np.int16),
    sitk.sitkUInt32: np.dtype(np.uint32),
    sitk.sitkInt32: np.dtype(np.int32),
    sitk.sitkUInt64: np.dtype(np.uint64),
    sitk.sitkInt64: np.dtype(np.int64),
    sitk.sitkFloat32: np.dtype(np.float32),
    sitk.sitkFloat64: np.dtype(np.float64),
}


def volume_suffix(path: Path) -> str:
    """Lower-case suffix with ``.nii.gz`` kept whole (``""`` when there is none)."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def is_volume_path(path: str | os.PathLike[str]) -> bool:
    """True for a volume file name (.nii, .nii.gz, .mha, .mhd, .nrrd, .nhdr) or a DICOM folder.

    Hidden files (``._scan.nii.gz`` from macOS, pedseg's own temporary files) are not volumes.
    """
    p = Path(path)
    if p.name.startswith("."):
        return False
    if p.is_dir():
        return dicom.is_dicom_folder(p)
    suffix = volume_suffix(p)
    return suffix in NIFTI_SUFFIXES or suffix in ITK_SUFFIXES


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _check_declared_size(
    path: object, shape: tuple[int, ...], itemsize: int, limit: int | None
) -> None:
    declared = math.prod(shape) * itemsize
    if limit is not None and declared > limit:
        raise VolumeError(
            path,
            f"declares {_human_bytes(declared)} of voxels (shape {shape}), more than the "
            f"{_human_bytes(limit)} limit; raise PEDSEG_MAX_VOLUME_BYTES to read it",
        )


def _spatial_shape(path: object, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """The 3D shape; trailing singleton dimensions are dropped, anything else is refused."""
    if len(shape) < 3:
        raise VolumeError(path, f"is {len(shape)}D (shape {shape}); pedseg reads 3D volumes only")
    extra = shape[3:]
    if any(n != 1 for n in extra):
        raise VolumeError(
            path,
            f"is {len(shape)}D with shape {shape}; pass a 3D volume "
            "(split time series or multi-channel files first)",
        )
    if min(shape[:3]) < 1:
        raise VolumeError(path, f"has an empty dimension (shape {shape})")
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def _check_dtype(path: object, dtype: np.dtype) -> None:
    if dtype.kind not in _SUPPORTED_KINDS or dtype.fields is not None:
        raise VolumeError(
            path, f"has voxel type {dtype} (complex or RGB); pass a scalar integer or float volume"
        )


def _check_finite(path: object, array: np.ndarray) -> None:
    if array.dtype.kind != "f":
        return
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise VolumeError(
            path, f"contains {bad} NaN or infinite voxel(s); fix or re-export the volume"
        )


def _make_volume(
    path: Path,
    on_disk: np.ndarray,
    affine: np.ndarray,
    fmt: str,
    header: object,
    *,
    affine_source: AffineSource,
    warnings: tuple[str, ...] = (),
) -> Volume:
    validate_affine(affine, path)
    _check_finite(path, on_disk)
    ornt = canonical_ornt(affine, path)
    array = to_canonical(on_disk, ornt)
    canon = canonical_affine(affine, ornt, on_disk.shape)
    source = SourceGeometry(
        shape=tuple(int(n) for n in on_disk.shape),
        affine=np.array(affine, dtype=np.float64),
        ornt=ornt,
        format=fmt,
        header=header,
        affine_source=affine_source,
    )
    for warning in warnings:  # the volume carries them: whoever uses it shows them
        logger.info("%s: %s", path, warning)
    return Volume(
        array=array,
        spacing=spacing_of(canon),
        affine=canon,
        source=source,
        path=path,
        warnings=warnings,
    )


# --------------------------------------------------------------------------------------- NIfTI


def _inflate(path: Path, raw: bytes) -> bytes:
    """Decompress every gzip member of ``raw``; raise if the stream ends early."""
    chunks: list[bytes] = []
    data = raw
    while data:
        inflater = _INFLATE.decompressobj(wbits=31)
        try:
            chunks.append(inflater.decompress(data))
        except _INFLATE.error as error:
            raise VolumeError(path, f"is corrupt (gzip: {error}); re-export the file") from None
        if not inflater.eof:
            raise VolumeError(path, "is truncated (the gzip stream ends early); re-copy the file")
        data = inflater.unused_data
        if not data.strip(b"\0"):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _clean_header(header: nib.Nifti1Header) -> nib.Nifti1Header:
    clean = header.copy()
    for field in _IDENTIFYING_FIELDS:
        if field in clean:
            clean[field] = b""
    clean.extensions.clear()
    return clean


def _read_nifti(path: Path, limit: int | None) -> Volume:
    try:
        img = nib.load(path, mmap=False)
    except Exception as error:  # nibabel raises many unrelated types on garbage input
        detail = " ".join(str(error).split())[:200] or type(error).__name__
        raise VolumeError(
            path, f"is not a readable NIfTI file (corrupt, cut short or another format: {detail})"
        ) from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise VolumeError(path, f"is not a NIfTI-1/2 image (nibabel sees {type(img).__name__})")
    header = img.header
    proxy = img.dataobj  # holds the on-disk header's offset, dtype and scaling
    if not isinstance(proxy, ArrayProxy):
        raise VolumeError(path, "NIfTI data could not be mapped; re-export the file")
    shape = tuple(int(n) for n in proxy.shape)
    dtype = np.dtype(proxy.dtype)
    _check_dtype(path, dtype)
    spatial = _spatial_shape(path, shape)
    _check_declared_size(path, shape, dtype.itemsize, limit)
    affine = np.array(img.affine, dtype=np.float64)
    validate_affine(affine, path)

    raw = path.read_bytes()
    payload = _inflate(path, raw) if volume_suffix(path) == ".nii.gz" else raw
    offset = int(proxy.offset)
    nbytes = math.prod(shape) * dtype.itemsize
    if len(payload) < offset + nbytes:
        raise VolumeError(
            path,
            f"is truncated: the header declares {nbytes} bytes of voxels, the file holds "
            f"{max(len(payload) - offset, 0)}; re-copy the file",
        )
    flat = np.frombuffer(payload, dtype=dtype, count=math.prod(shape), offset=offset)
    data = flat.reshape(spatial, order="F")
    data = np.asarray(apply_read_scaling(data, proxy.slope, proxy.inter))
    source, warnings = nifti_affine_source(header, shape)
    return _make_volume(
        path,
        data,
        affine,
        "nifti",
        _clean_header(header),
        affine_source=source,
        warnings=warnings,
    )


# ---------------------------------------------------------------------------------- ITK formats


def _from_itk_image(path: Path, image: sitk.Image, fmt: str) -> Volume:
    dim = image.GetDimension()
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(
            path,
            f"has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "pass a scalar volume",
        )
    view = sitk.GetArrayViewFromImage(image)  # (t,) z, y, x
    if dim == 4:
        view = view[0]
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)[:3, :3]
    geometry = ItkGeometry(
        origin=tuple(float(v) for v in image.GetOrigin()[:3]),
        spacing=tuple(float(v) for v in image.GetSpacing()[:3]),
        direction=tuple(float(v) for v in direction.ravel()),
    )
    affine = itk_to_ras_affine(geometry)
    return _make_volume(path, view.transpose(2, 1, 0), affine, fmt, geometry, affine_source="itk")


def _itk_info(
    path: Path, reader: sitk.ImageFileReader, n_slices: int | None, limit: int | None
) -> None:
    """Refuse vector, exotic, non-3D or oversized images from their header alone."""
    pixel_id = reader.GetPixelID()
    components = reader.GetNumberOfComponents()
    if components != 1:
        raise VolumeError(path, f"has {components} components per voxel; pass a scalar volume")
    dtype = _ITK_DTYPES.get(pixel_id)
    if dtype is None:
        kind = sitk.GetPixelIDValueAsString(pixel_id)
        raise VolumeError(path, f"has voxel type {kind!r}; pass a scalar integer or float volume")
    shape = tuple(int(n) for n in reader.GetSize())
    if n_slices is not None:  # a DICOM slice: the series stacks n_slices of them
        shape = (*shape[:2], n_slices)
    _spatial_shape(path, shape)
    _check_declared_size(path, shape, dtype.itemsize, limit)


def _read_itk(path: Path, fmt: str, limit: int | None) -> Volume:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with dicom.native_stderr_to_log():
            reader.ReadImageInformation()
    except RuntimeError as error:
        raise VolumeError(
            path, f"is not a readable {fmt.upper()} file ({dicom.itk_message(error)})"
        ) from None
    _itk_info(path, reader, None, limit)
    try:
        with dicom.native_stderr_to_log():
            image = reader.Execute()
    except RuntimeError as error:
        raise VolumeError(
            path,
            f"cannot be decoded; it is truncated or corrupt ({dicom.itk_message(error)})",
        ) from None
    return _from_itk_image(path, image, fmt)


def _read_dicom(path: Path, limit: int | None) -> Volume:
    series = dicom.single_series(path)
    _itk_info(path, dicom.first_slice_info(series, path), series.n_slices, limit)
    image = dicom.read_dicom_series(series, path)
    return _from_itk_image(path, image, "dicom")


# ---------------------------------------------------------------------------------- public API


def read_volume(
    path: str | os.PathLike[str], *, max_bytes: int | None = DEFAULT_MAX_BYTES
) -> Volume:
    """Read a 3D volume and reorient it to canonical RAS+; see :class:`Volume`.

    ``max_bytes`` caps the decoded voxel payload declared by the header (``None``: no cap). Every
    problem (missing, empty, truncated, not an image, bad geometry, NaN voxels, 4D) raises
    :class:`VolumeError`.
    """
    limit = resolve_max_bytes(max_bytes)
    p = Path(path)
    if not p.exists():
        raise VolumeError(p, "does not exist")
    if p.is_dir():
        return _read_dicom(p, limit)
    suffix = volume_suffix(p)
    if suffix not in NIFTI_SUFFIXES and suffix not in ITK_SUFFIXES:
        raise VolumeError(
            p,
            "unsupported file type; expected .nii, .nii.gz, .mha, .mhd, .nrrd, .nhdr "
            "or a folder holding one DICOM series",
        )
    try:
        size = p.stat().st_size
    except OSError as error:
        raise VolumeError(p, f"cannot be read ({error.strerror})") from None
    if size == 0:
        raise VolumeError(p, "is empty (0 bytes); re-copy or re-export the file")
    try:
        if suffix in NIFTI_SUFFIXES:
            return _read_nifti(p, limit)
        return _read_itk(p, ITK_SUFFIXES[suffix], limit)
    except OSError as error:
        raise VolumeError(p, f"cannot be read ({error.strerror or error})") from None
