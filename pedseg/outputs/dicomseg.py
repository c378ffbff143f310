"""DICOM Segmentation objects (highdicom) for DICOM series inputs.

The SEG references the source series instance by instance: frame ``k`` is the label map on slice
``k`` of the series in the order pedseg read it (GDCM's position order, :mod:`pedseg.io.dicom`),
rows = ITK ``y``, columns = ITK ``x`` (the instances' own pixel grid; pedseg's RAS+ reorientation is
undone first). Every slice's ImagePositionPatient and the pixel grid are checked against the volume
pedseg read before anything is written. Frame of reference, pixel measures and plane positions come
from the source instances.

One segment per label of the domain (BINARY, label number = segment number) with the label's name,
its colour (CIELab), the coded anatomy (the descriptor's ``outputs.codes``; SCT 91723000 "Anatomical
Structure" / SCT 85756007 "Tissue" otherwise) and, when a model hash is given, algorithm type
AUTOMATIC with the algorithm identification (``pedseg-<domain>``, pedseg's version, parameter
``model_sha256``); without one (``export-seg`` of a label map of unknown origin) MANUAL.

Privacy: highdicom copies the Patient and Study modules from the source images, so it is given
copies of them reduced to :data:`KEPT_ATTRIBUTES`: the geometry and UIDs to reference the source and
the Type 1/2 patient and study attributes that put the SEG in the same study. Nothing else of the
source (institution, operators, addresses, comments, private tags, ...) reaches the SEG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from skimage.color import rgb2lab

from pedseg import __version__
from pedseg.domains.outputs_spec import LabelCode
from pedseg.errors import VolumeError
from pedseg.io.atomic import atomic_path
from pedseg.io.dicom import single_series
from pedseg.io.geometry import ItkGeometry, from_canonical
from pedseg.io.volume import Volume
from pedseg.outputs.segnrrd import CATEGORY, GENERIC_TYPE

__all__ = ["KEPT_ATTRIBUTES", "source_frames", "write_dicom_seg"]

KEPT_ATTRIBUTES = (
    # reference and geometry
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "Modality",
    "Rows",
    "Columns",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    # Patient and General Study modules: the Type 1/2 attributes only
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
SEG_SERIES_NUMBER = 9901
_TOLERANCE_MM = 1e-2


def _reduced(source: Dataset) -> Dataset:
    kept = Dataset()
    for keyword in KEPT_ATTRIBUTES:
        if keyword in source:
            setattr(kept, keyword, source.data_element(keyword).value)  # type: ignore[union-attr]
    return kept


def _check_geometry(folder: Path, datasets: Sequence[Dataset], geometry: ItkGeometry) -> None:
    origin = np.asarray(geometry.origin)
    step = np.asarray(geometry.direction).reshape(3, 3)[:, 2] * geometry.spacing[2]
    for k, ds in enumerate(datasets):
        where = f"DICOM file {k + 1} of the series"
        if "ImagePositionPatient" not in ds:
            raise VolumeError(folder, f"{where} has no ImagePositionPatient; cannot write a SEG")
        position = np.asarray([float(v) for v in ds.ImagePositionPatient])
        if not np.allclose(position, origin + k * step, atol=_TOLERANCE_MM, rtol=0.0):
            raise VolumeError(
                folder,
                f"{where} lies at {position.tolist()} mm, not where the volume pedseg read puts "
                f"slice {k}; the series is not a regular stack: cannot write a DICOM-SEG",
            )


def source_frames(
    labels: np.ndarray, volume: Volume, folder: Path
) -> tuple[np.ndarray, list[Dataset]]:
    """The label map as SEG frames (slice, row, column) in the source instances' pixel grid, and
    the instances' headers (in frame order)."""
    geometry = volume.source.header
    if volume.source.format != "dicom" or not isinstance(geometry, ItkGeometry):
        raise VolumeError(folder, "is not a DICOM series input; dicom-seg needs one")
    on_disk = from_canonical(np.asarray(labels), volume.source.ornt)  # ITK (x, y, z)
    series = single_series(folder)
    if len(series.files) != on_disk.shape[2]:
        raise VolumeError(
            folder,
            f"holds {len(series.files)} slices, the label map {on_disk.shape[2]}; "
            "pass the series the labels were predicted on",
        )
    datasets: list[Dataset] = [pydicom.dcmread(f, stop_before_pixels=True) for f in series.files]
    for ds in datasets:
        if (int(ds.Rows), int(ds.Columns)) != (on_disk.shape[1], on_disk.shape[0]):
            raise VolumeError(
                folder, f"has {ds.Rows}x{ds.Columns} pixel slices, the label map does not"
            )
    _check_geometry(folder, datasets, geometry)
    frames = np.ascontiguousarray(on_disk.transpose(2, 1, 0))
    return frames, datasets


def _concept(code: LabelCode) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


def _lab(rgb: tuple[float, float, float]) -> hd.color.CIELabColor:
    lab = rgb2lab(np.asarray([[rgb]], dtype=np.float64))[0, 0]
    return hd.color.CIELabColor(
        float(np.clip(lab[0], 0, 100)),
        float(np.clip(lab[1], -128, 127)),
        float(np.clip(lab[2], -128, 127)),
    )


def _descriptions(
    domain: str,
    segments: Sequence[tuple[int, str, tuple[float, float, float], LabelCode | None]],
    model_sha256: str | None,
) -> list[hd.seg.SegmentDescription]:
    algorithm = None
    if model_sha256:
        algorithm = hd.AlgorithmIdentificationSequence(
            name=f"pedseg-{domain}"[:64],
            family=codes.cid7162.ArtificialIntelligence,
            version=__version__,
            parameters={"model_sha256": model_sha256},
        )
    return [
        hd.seg.SegmentDescription(
            segment_number=label_id,
            segment_label=name[:64],
            segmented_property_category=_concept(CATEGORY),
            segmented_property_type=_concept(code if code is not None else GENERIC_TYPE),
            algorithm_type="AUTOMATIC" if algorithm is not None else "MANUAL",
            algorithm_identification=algorithm,
            display_color=_lab(rgb),
        )
        for label_id, name, rgb, code in segments
    ]


def write_dicom_seg(
    path: str | os.PathLike[str],
    labels: np.ndarray,
    volume: Volume,
    *,
    folder: Path,
    domain: str,
    segments: Sequence[tuple[int, str, tuple[float, float, float], LabelCode | None]],
    model_sha256: str | None,
    overwrite: bool = False,
) -> None:
    """Write a DICOM-SEG of ``labels`` (canonical, on ``volume``'s grid) for DICOM series
    ``folder`` (the input ``volume`` was read from)."""
    frames, datasets = source_frames(labels, volume, folder)
    seg = hd.seg.Segmentation(
        source_images=[_reduced(ds) for ds in datasets],
        pixel_array=frames.astype(np.uint16 if frames.max(initial=0) > 255 else np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_descriptions(domain, segments, model_sha256),
        series_instance_uid=hd.UID(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="pedseg",
        manufacturer_model_name=f"pedseg {domain}"[:64],
        software_versions=__version__,
        device_serial_number=(model_sha256 or "none")[:16],
        content_description=f"pedseg {domain} segmentation"[:64],
        content_label="PEDSEG",
        series_description=f"pedseg {domain} SEG"[:64],
    )
    with atomic_path(path, overwrite=overwrite) as tmp:
        seg.save_as(tmp)
