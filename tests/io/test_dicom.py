"""DICOM series folders: one series is read with its geometry, several are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pedseg.errors import VolumeError
from pedseg.io import is_volume_path, list_dicom_series, read_volume, write_like
from tests.io.conftest import SeriesWriter

UID_A = "1.2.826.0.1.3680043.2.1125.1.1"
UID_B = "1.2.826.0.1.3680043.2.1125.1.2"


def _volume_zyx() -> np.ndarray:
    return (np.arange(4 * 6 * 5).reshape(4, 6, 5) * 7 - 50).astype(np.int16)


def test_read_single_series(tmp_path: Path, dicom_writer: SeriesWriter) -> None:
    folder = dicom_writer(
        tmp_path / "series", _volume_zyx(), uid=UID_A, description="T1 cor", origin=(-10, 20, 5)
    )
    assert is_volume_path(folder)
    [series] = list_dicom_series(folder)
    assert (series.uid, series.description, series.n_slices) == (UID_A, "T1 cor", 4)
    assert len(series.files) == 4
    volume = read_volume(folder)
    assert volume.source.format == "dicom"
    # LPS identity direction -> RAS flips x and y; canonical undoes the flips.
    expected = _volume_zyx().transpose(2, 1, 0)[::-1, ::-1, :]
    np.testing.assert_array_equal(volume.array, expected)
    np.testing.assert_allclose(volume.spacing, (0.8, 0.9, 2.5), rtol=1e-5)
    # Canonical voxel (0, 0, 0) is on-disk voxel (4, 5, 0): LPS (-10 + 4*0.8, 20 + 5*0.9, 5).
    np.testing.assert_allclose(volume.affine[:3, 3], (10 - 3.2, -20 - 4.5, 5), atol=1e-4)


def test_segmentation_of_dicom_written_as_nifti(tmp_path: Path, dicom_writer: SeriesWriter) -> None:
    folder = dicom_writer(tmp_path / "series", _volume_zyx(), uid=UID_A, description="T1")
    volume = read_volume(folder)
    out = tmp_path / "seg.nii.gz"
    write_like((volume.array > 0).astype(np.uint8), volume, out)
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, volume.array > 0)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-4)


def test_two_series_refused_with_listing(tmp_path: Path, dicom_writer: SeriesWriter) -> None:
    folder = tmp_path / "mixed"
    dicom_writer(folder, _volume_zyx(), uid=UID_A, description="T1 cor", prefix="a")
    dicom_writer(folder, _volume_zyx()[:3], uid=UID_B, description="T2 ax", prefix="b")
    found = list_dicom_series(folder)
    assert [(s.uid, s.n_slices) for s in found] == [(UID_A, 4), (UID_B, 3)]
    with pytest.raises(VolumeError) as info:
        read_volume(folder)
    message = str(info.value)
    assert "2 DICOM series" in message
    assert f'{UID_A} ("T1 cor", 4 slices)' in message
    assert f'{UID_B} ("T2 ax", 3 slices)' in message


def test_folder_without_dicom(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "readme.txt").write_text("nothing here")
    assert list_dicom_series(folder) == []
    with pytest.raises(VolumeError, match="no DICOM series"):
        read_volume(folder)


def test_dicom_over_max_bytes(tmp_path: Path, dicom_writer: SeriesWriter) -> None:
    folder = dicom_writer(tmp_path / "series", _volume_zyx(), uid=UID_A, description="T1")
    with pytest.raises(VolumeError, match="limit"):
        read_volume(folder, max_bytes=4 * 6 * 5 * 2 - 1)
