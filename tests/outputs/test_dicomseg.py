"""DICOM-SEG: written for a DICOM series input, read back with highdicom frame by frame against the
label map, referencing the source series; no PHI beyond the reference; dciodvfy when installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest

from pedseg.domains.outputs_spec import LabelCode
from pedseg.errors import VolumeError
from pedseg.io import check_pair, read_label, read_volume
from pedseg.outputs.dicomseg import write_dicom_seg
from tests.outputs.conftest import PHI, affine_for, nifti_pair, phantom_labels, write_mr_series

SERIES = "1.2.826.0.1.3680043.8.498.1234567"
SEGMENTS = [
    (1, "femur", (1.0, 0.0, 0.0), LabelCode(value="71341001", meaning="Femur")),
    (2, "tibia", (0.0, 1.0, 0.0), None),
    (3, "patella", (0.0, 0.0, 1.0), None),
]


def _check_seg(
    path: Path, where: dict[str, int], on_disk: np.ndarray, series: str
) -> hd.seg.Segmentation:
    seg = hd.seg.segread(path)
    uids = list(where)
    frames = seg.get_pixels_by_source_instance(uids, combine_segments=True)
    expected = np.stack([on_disk[:, :, where[uid]].T for uid in uids])
    np.testing.assert_array_equal(frames, expected)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series
    referenced = {
        item.ReferencedSOPInstanceUID
        for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced <= set(uids) and referenced
    assert seg.SeriesInstanceUID != series
    return seg


def _dciodvfy(path: Path) -> None:
    tool = shutil.which("dciodvfy")
    if tool is None:
        return
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    errors = [
        line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")
    ]
    assert not errors, errors


@pytest.mark.parametrize("geometry", ["oblique", "anisotropic"])
def test_phantom_series_round_trip(tmp_path: Path, geometry: str) -> None:
    spacing = (0.8, 0.9, 2.5)
    on_disk = phantom_labels((20, 16, 12), spacing)
    where = write_mr_series(
        tmp_path / "series",
        on_disk.astype(np.int16) * 100 + 7,
        affine_for(geometry, spacing),
        series_uid=SERIES,
    )
    volume = read_volume(tmp_path / "series")
    labels = ((volume.array - 7) // 100).astype(np.uint8)  # canonical, as pedseg predicts it
    path = tmp_path / "case_seg.dcm"
    write_dicom_seg(
        path,
        labels,
        volume,
        folder=tmp_path / "series",
        domain="knee",
        segments=SEGMENTS,
        model_sha256="ab" * 32,
    )
    seg = _check_seg(path, where, on_disk, SERIES)
    assert seg.SegmentationType == "BINARY" and seg.number_of_segments == 3
    first = seg.SegmentSequence[0]
    assert (first.SegmentNumber, first.SegmentLabel) == (1, "femur")
    assert first.SegmentedPropertyTypeCodeSequence[0].CodeValue == "71341001"
    assert seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "85756007"
    assert first.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert first.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = first.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "pedseg-knee"
    assert "ab" * 32 in str(algorithm.AlgorithmParameters)
    for keyword in PHI:
        assert keyword not in seg
    assert seg.PatientID == "P1" and seg.StudyInstanceUID
    assert seg.Manufacturer == "pedseg"
    _dciodvfy(path)


def test_without_model_hash_the_segments_are_manual(tmp_path: Path) -> None:
    on_disk = phantom_labels((12, 10, 6))
    where = write_mr_series(
        tmp_path / "s", on_disk.astype(np.int16) + 1, np.eye(4), series_uid=SERIES
    )
    volume = read_volume(tmp_path / "s")
    labels = (volume.array - 1).astype(np.uint8)
    write_dicom_seg(
        tmp_path / "x.dcm",
        labels,
        volume,
        folder=tmp_path / "s",
        domain="knee",
        segments=SEGMENTS,
        model_sha256=None,
    )
    seg = _check_seg(tmp_path / "x.dcm", where, on_disk, SERIES)
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "MANUAL"


def test_non_dicom_input_is_refused(tmp_path: Path) -> None:
    image_path, _ = nifti_pair(tmp_path, phantom_labels(), np.eye(4))
    volume = read_volume(image_path)
    with pytest.raises(VolumeError, match="not a DICOM series input"):
        write_dicom_seg(
            tmp_path / "x.dcm",
            np.zeros(volume.shape, np.uint8),
            volume,
            folder=tmp_path,
            domain="knee",
            segments=SEGMENTS,
            model_sha256=None,
        )


@pytest.mark.realdata
def test_real_pelvis_series(tmp_path: Path, shared_data: Path) -> None:
    import nibabel as nib

    image = nib.load(shared_data / "pelvis" / "imagesTr" / "pelvis_01.nii.gz")
    label_path = shared_data / "pelvis" / "labelsTr" / "pelvis_01.nii.gz"
    on_disk = np.asarray(nib.load(label_path).dataobj).astype(np.uint8)
    where = write_mr_series(
        tmp_path / "series", np.asarray(image.dataobj), image.affine, series_uid=SERIES
    )
    volume = read_volume(tmp_path / "series")
    labels = read_label(label_path)
    check_pair(volume, labels)  # the series is the same grid pedseg reads from the NIfTI
    path = tmp_path / "pelvis_01_seg.dcm"
    segments = [
        (i, n, (0.5, 0.5, 0.5), None)
        for i, n in enumerate(["femur", "ilium", "spine", "sacrum"], 1)
    ]
    write_dicom_seg(
        path,
        labels.array,
        volume,
        folder=tmp_path / "series",
        domain="pelvis",
        segments=segments,
        model_sha256="cd" * 32,
    )
    _check_seg(path, where, on_disk, SERIES)
    _dciodvfy(path)
