"""Fixtures for the outputs tests: labelled phantoms on permuted/flipped/oblique grids and an MR
DICOM series written with pydicom (full geometry, UIDs and some PHI the SEG must not copy)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from pedseg.domains.spec import DomainSpec, parse_descriptor
from pedseg.io.geometry import ras_affine_to_itk
from tests.io.conftest import make_affine

GEOMETRIES: dict[str, dict[str, object]] = {
    "identity": {},
    "permuted": {"perm": (2, 0, 1)},
    "flipped": {"flips": (-1, 1, -1)},
    "oblique": {"perm": (1, 0, 2), "angles": (0.2, -0.1, 0.3)},
    "anisotropic": {"spacing": (0.9, 0.9, 5.2), "flips": (1, -1, 1)},
}
PHI = {
    "InstitutionName": "Secret Hospital",
    "OperatorsName": "Op^Erator",
    "PatientAddress": "1 Road",
}


def phantom_spec(**outputs: object) -> DomainSpec:
    raw: dict[str, object] = {
        "schema_version": 1,
        "name": "knee",
        "labels": {1: "femur", 2: "tibia", 3: "patella"},
        "normalization": "zscore",
    }
    if outputs:
        raw["outputs"] = outputs
    return parse_descriptor(raw, source="<test>")


def phantom_labels(
    shape: Sequence[int] = (28, 24, 20), spacing: Sequence[float] = (1, 1, 1)
) -> np.ndarray:
    """Two ellipsoids and a box (labels 1-3) in a volume of ``shape`` (voxel grid, mm spacing)."""
    grid = np.stack(
        np.meshgrid(
            *[np.arange(n) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij"
        ),
        axis=-1,
    )
    extent = np.asarray(shape) * np.asarray(spacing)
    labels = np.zeros(tuple(shape), dtype=np.uint8)
    c1 = extent * [0.35, 0.5, 0.5]
    labels[np.sum(((grid - c1) / (extent * [0.22, 0.3, 0.3])) ** 2, axis=-1) < 1] = 1
    c2 = extent * [0.72, 0.5, 0.45]
    labels[np.sum(((grid - c2) / (extent * [0.15, 0.2, 0.25])) ** 2, axis=-1) < 1] = 2
    box = tuple(slice(int(n * 0.15), int(n * 0.3) + 2) for n in shape)
    labels[box] = np.where(labels[box] == 0, 3, labels[box])
    return labels


def affine_for(name: str, spacing: Sequence[float] | None = None) -> np.ndarray:
    options = dict(GEOMETRIES[name])
    if spacing is not None:
        options["spacing"] = spacing
    return make_affine(origin=(12.0, -30.0, 7.5), **options)  # type: ignore[arg-type]


def write_mr_series(
    folder: Path, on_disk: np.ndarray, affine: np.ndarray, *, series_uid: str | None = None
) -> dict[str, int]:
    """Write ``on_disk`` (x, y, z voxel order of RAS ``affine``) as one MR file per z slice.

    Returns ``{SOPInstanceUID: z index}``. Rows are y, columns x, as ITK and DICOM agree.
    """
    folder.mkdir(parents=True, exist_ok=True)
    geometry = ras_affine_to_itk(affine)
    direction = np.asarray(geometry.direction).reshape(3, 3)
    origin = np.asarray(geometry.origin)
    sx, sy, sz = geometry.spacing
    study, series, frame = generate_uid(), series_uid or generate_uid(), generate_uid()
    where: dict[str, int] = {}
    for k in range(on_disk.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = uid = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"im{k:03d}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 3, k + 1
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Doe^Jane", "P1", "", "F"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20200101", "120000", "1", ""
        ds.ReferringPhysicianName, ds.PositionReferenceIndicator = "", ""
        for keyword, value in PHI.items():
            setattr(ds, keyword, value)
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "SE", "NONE", ""
        ds.MRAcquisitionType, ds.EchoTime, ds.RepetitionTime = "2D", 10, 500
        ds.EchoTrainLength, ds.SliceThickness, ds.SpacingBetweenSlices = 1, sz, sz
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ImageOrientationPatient = [float(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.ImagePositionPatient = [float(v) for v in origin + k * sz * direction[:, 2]]
        ds.PixelSpacing = [float(sy), float(sx)]  # row spacing (along y), column spacing (x)
        plane = np.ascontiguousarray(on_disk[:, :, k].T.astype(np.int16))
        ds.Rows, ds.Columns = plane.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.PixelData = plane.tobytes()
        pydicom.dcmwrite(folder / f"im{k:03d}.dcm", ds, enforce_file_format=True)
        where[str(uid)] = k
    return where


def nifti_pair(
    folder: Path, labels: np.ndarray, affine: np.ndarray, *, image: np.ndarray | None = None
) -> tuple[Path, Path]:
    """Write ``labels`` and an image (labels x 100 + 7 unless given) as NIfTI; returns the paths."""
    from tests.io.conftest import save_nifti

    folder.mkdir(parents=True, exist_ok=True)
    picture = labels.astype(np.int16) * 100 + 7 if image is None else image
    return (
        save_nifti(folder / "image.nii.gz", picture, affine),
        save_nifti(folder / "labels.nii.gz", labels.astype(np.uint8), affine),
    )
