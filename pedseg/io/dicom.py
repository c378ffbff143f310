"""DICOM series folders (read through SimpleITK/GDCM)."""

from __future__ import annotations

import contextlib
import functools
import locale
import logging
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ParamSpec, TypeVar

import numpy as np
import SimpleITK as sitk

from pedseg.errors import VolumeError

_P = ParamSpec("_P")
_R = TypeVar("_R")
_DESCRIPTION_TAG = "0008|103e"
_PROBE_FILES = 8  # files looked at by is_dicom_folder before giving up
_POSITION_TAG = "0020|0032"  # ImagePositionPatient
_ORIENTATION_TAG = "0020|0037"  # ImageOrientationPatient
SPACING_TOLERANCE = 0.01  # relative: every slice gap within 1 % of the median gap

logger = logging.getLogger(__name__)


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


@contextlib.contextmanager
def native_stderr_to_log() -> Iterator[None]:
    """Send what C++ code (ITK, MetaIO, GDCM) prints on file descriptor 2 to the debug log.

    MetaIO prints several lines ("MetaImage: M_Read: Error parsing file") for a corrupt file
    before ITK raises; the CLI promises one line per error, so that chatter is kept out of stderr.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            said = sink.read().decode("utf-8", errors="replace").strip()
            if said:
                logger.debug("native library output: %s", " | ".join(said.splitlines()))


def _quiet(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with native_stderr_to_log():
            return fn(*args, **kwargs)

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
@_quiet
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
@_quiet
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
    """Decode all slices of ``series`` into one 3D SimpleITK image.

    The slices must be evenly spaced along the slice normal (see :func:`check_slice_positions`):
    ITK would otherwise average the gaps into one wrong spacing (a missing slice) and only warn.
    """
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(f) for f in series.files])
    reader.MetaDataDictionaryArrayUpdateOn()
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # its spacing warning is our error below
    try:
        with native_stderr_to_log():
            image = reader.Execute()
    except RuntimeError as error:
        raise VolumeError(
            folder, f"cannot read DICOM series {series.uid}: {itk_message(error)}"
        ) from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)
    positions = [_floats(reader, i, _POSITION_TAG) for i in range(len(series.files))]
    orientation = _floats(reader, 0, _ORIENTATION_TAG)
    check_slice_positions(folder, series.files, positions, orientation)
    return image


def _floats(reader: sitk.ImageSeriesReader, index: int, tag: str) -> tuple[float, ...] | None:
    """A backslash-separated decimal-string tag of slice ``index`` (None: absent or garbled)."""
    if not reader.HasMetaDataKey(index, tag):
        return None
    try:
        return tuple(float(v) for v in reader.GetMetaData(index, tag).split("\\"))
    except ValueError:
        return None


def check_slice_positions(
    folder: object,
    files: Sequence[Path],
    positions: Sequence[tuple[float, ...] | None],
    orientation: tuple[float, ...] | None,
) -> None:
    """Refuse slices that are not evenly spaced along one straight line (the slice normal).

    ``positions`` are the slices' ImagePositionPatient in file order (sorted by GDCM along the
    normal), ``orientation`` the first slice's ImageOrientationPatient. Every gap between
    neighbours must be within :data:`SPACING_TOLERANCE` of the median gap (a missing, duplicate or
    extra slice breaks this), and no slice may be shifted off the normal by as much.
    """
    if len(files) < 3:
        return  # two slices always have one gap
    missing = [f.name for f, p in zip(files, positions, strict=True) if p is None or len(p) != 3]
    if len(missing) == len(files) or orientation is None:
        logger.warning(
            "%s: the slices have no position or orientation (ImagePositionPatient/"
            "ImageOrientationPatient); their spacing is not checked",
            folder,
        )
        return
    if missing:
        raise VolumeError(
            folder,
            f"slice {missing[0]} has no usable position (ImagePositionPatient) while the others "
            "do; the slice spacing cannot be checked: re-export the series",
        )
    points = np.asarray(positions, dtype=np.float64)
    cosines = np.asarray(orientation, dtype=np.float64)
    normal = np.cross(cosines[:3], cosines[3:6]) if cosines.size == 6 else np.zeros(3)
    length = float(np.linalg.norm(normal))
    if not np.isfinite(points).all() or not np.isfinite(length) or length < 0.5:
        raise VolumeError(
            folder,
            "has no usable slice orientation or positions (ImageOrientationPatient/"
            "ImagePositionPatient); re-export the series",
        )
    along = (points - points[0]) @ (normal / length)
    gaps = np.abs(np.diff(along))
    step = float(np.median(gaps))
    tolerance = SPACING_TOLERANCE * step + 1e-4
    worst = int(np.argmax(np.abs(gaps - step)))
    if step <= 1e-4 or abs(gaps[worst] - step) > tolerance:
        raise VolumeError(
            folder,
            f"slice positions are not evenly spaced: {files[worst].name} to "
            f"{files[worst + 1].name} is {gaps[worst]:.4g} mm where the other slices are "
            f"{step:.4g} mm apart (a missing, duplicate or extra slice?); pedseg reads only "
            f"series whose slice gaps agree within {SPACING_TOLERANCE:.0%}: re-export the "
            "complete series",
        )
    off_axis = np.linalg.norm((points - points[0]) - np.outer(along, normal / length), axis=1)
    if float(off_axis.max()) > tolerance:
        k = int(np.argmax(off_axis))
        raise VolumeError(
            folder,
            f"slice {files[k].name} is shifted {off_axis[k]:.4g} mm off the slice normal (a "
            "tilted or sheared series); pedseg reads only series whose slices are stacked "
            "straight: resample it first",
        )


@_keeps_locale
@_quiet
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
