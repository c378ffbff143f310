"""DICOM series folders (read through SimpleITK/GDCM)."""

from __future__ import annotations

import functools
import locale
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import SimpleITK as sitk

from pedseg.errors import VolumeError

_P = ParamSpec("_P")
_R = TypeVar("_R")
_DESCRIPTION_TAG = "0008|103e"
_PROBE_FILES = 8  # files looked at by is_dicom_folder before giving up


def _keeps_locale(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """GDCM resets the C locale to "C" while scanning DICOM files, which silently switches Python's
    default text encoding to ASCII for the rest of the process; restore the caller's locale."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        saved = locale.setlocale(locale.LC_ALL)
        try:
            return fn(*args, **kwargs)
        finally:
            if locale.setlocale(locale.LC_ALL) != saved:
                locale.setlocale(locale.LC_ALL, saved)

    return wrapper


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series found in a folder."""

    uid: str
    description: str
    n_slices: int
    files: tuple[Path, ...]

    def summary(self) -> str:
        """``uid ("description", N slices)`` for messages."""
        return f'{self.uid} ("{self.description}", {self.n_slices} slices)'


def _has_dicom_magic(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def is_dicom_folder(folder: str | os.PathLike[str]) -> bool:
    """Cheap check: ``folder`` is a directory whose first regular files include a DICOM file."""
    path = Path(folder)
    if not path.is_dir():
        return False
    probed = 0
    try:
        entries = sorted(path.iterdir())
    except OSError:
        return False
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if entry.suffix.lower() == ".dcm" or _has_dicom_magic(entry):
            return True
        probed += 1
        if probed >= _PROBE_FILES:
            break
    return False


@_keeps_locale
def _description(first_file: str) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(first_file)
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return ""
    if reader.HasMetaDataKey(_DESCRIPTION_TAG):
        return reader.GetMetaData(_DESCRIPTION_TAG).strip()
    return ""


@_keeps_locale
def list_dicom_series(folder: str | os.PathLike[str]) -> list[DicomSeries]:
    """Every DICOM series directly inside ``folder`` (by UID), files sorted by slice position."""
    path = Path(folder)
    if not path.is_dir():
        raise VolumeError(path, "is not a folder; pass a folder holding one DICOM series")
    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
    except RuntimeError as error:
        raise VolumeError(path, f"cannot scan for DICOM series: {itk_message(error)}") from None
    series = []
    for uid in sorted(uids):
        files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), uid)
        if not files:
            continue
        series.append(
            DicomSeries(
                uid=uid,
                description=_description(files[0]),
                n_slices=len(files),
                files=tuple(Path(f) for f in files),
            )
        )
    return series


def single_series(folder: str | os.PathLike[str]) -> DicomSeries:
    """The only series in ``folder``; a folder with none or several is refused with the listing."""
    found = list_dicom_series(folder)
    if not found:
        raise VolumeError(
            folder, "holds no DICOM series; pass a folder with the slices of one series"
        )
    if len(found) > 1:
        listing = "; ".join(s.summary() for s in found)
        raise VolumeError(
            folder,
            f"holds {len(found)} DICOM series ({listing}); "
            "move each series into its own folder and pass one of them",
        )
    return found[0]


@_keeps_locale
def read_dicom_series(series: DicomSeries, folder: object) -> sitk.Image:
    """Decode all slices of ``series`` into one 3D SimpleITK image."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in series.files])
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise VolumeError(
            folder, f"cannot read DICOM series {series.uid}: {itk_message(error)}"
        ) from None


@_keeps_locale
def first_slice_info(series: DicomSeries, folder: object) -> sitk.ImageFileReader:
    """Header-only reader on the first slice of ``series`` (size, pixel type) for size checks."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(series.files[0]))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise VolumeError(
            folder, f"cannot read DICOM file {series.files[0].name}: {itk_message(error)}"
        ) from None
    return reader


def itk_message(error: BaseException) -> str:
    """The telling part of an ITK exception (they span several lines and name C++ sources)."""
    for line in str(error).splitlines():
        if "ERROR:" in line:
            text = line.split("ERROR:", 1)[1]
            text = re.sub(r"^\s*\w+\(0x[0-9a-fA-F]+\):\s*", "", text)
            return text.strip().rstrip(".")
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
