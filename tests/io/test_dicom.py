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


def _series_of_eight(tmp_path: Path, dicom_writer: SeriesWriter, **options: object) -> Path:
    volume = (np.arange(8 * 6 * 5).reshape(8, 6, 5) % 97).astype(np.int16)
    return dicom_writer(
        tmp_path / "series",
        volume,
        uid=UID_A,
        description="T1",
        spacing=(0.8, 0.9, 0.4),
        **options,
    )


def test_missing_slice_is_refused_not_averaged(
    tmp_path: Path, dicom_writer: SeriesWriter, capfd: pytest.CaptureFixture[str]
) -> None:
    import pydicom

    folder = _series_of_eight(tmp_path, dicom_writer)
    (folder / "slice004.dcm").unlink()
    # the files are real DICOM: a second library sees the gap in ImagePositionPatient
    z = [float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in sorted(folder.iterdir())]
    np.testing.assert_allclose(np.diff(z), [0.4, 0.4, 0.4, 0.8, 0.4, 0.4], atol=1e-6)
    capfd.readouterr()
    with pytest.raises(VolumeError) as info:
        read_volume(folder)
    assert str(info.value) == (
        f"{folder}: slice positions are not evenly spaced: slice003.dcm to slice005.dcm is "
        "0.8 mm where the other slices are 0.4 mm apart (a missing, duplicate or extra slice?); "
        "pedseg reads only series whose slice gaps agree within 1%: re-export the complete series"
    )
    assert "Non uniform sampling" not in capfd.readouterr().err  # ITK's warning is not shown


def test_complete_series_keeps_its_exact_spacing(
    tmp_path: Path, dicom_writer: SeriesWriter
) -> None:
    volume = read_volume(_series_of_eight(tmp_path, dicom_writer))
    np.testing.assert_allclose(volume.spacing, (0.8, 0.9, 0.4), rtol=1e-6)


def test_oblique_series_is_evenly_spaced_along_its_normal(
    tmp_path: Path, dicom_writer: SeriesWriter
) -> None:
    c, s = np.cos(0.3), np.sin(0.3)
    direction = (c, 0.0, s, 0.0, 1.0, 0.0, -s, 0.0, c)
    volume = read_volume(_series_of_eight(tmp_path, dicom_writer, direction=direction))
    np.testing.assert_allclose(volume.spacing, (0.8, 0.9, 0.4), rtol=1e-5)


def test_duplicate_slice_position_is_refused(tmp_path: Path) -> None:
    from pedseg.io.dicom import check_slice_positions

    files = [tmp_path / f"s{i}.dcm" for i in range(4)]
    positions = [(0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 1.0), (0.0, 0.0, 2.0)]
    with pytest.raises(VolumeError, match=r"s1.dcm to s2.dcm is 0 mm where the other slices are 1"):
        check_slice_positions("ser", files, positions, (1, 0, 0, 0, 1, 0))


def test_sheared_series_is_refused(tmp_path: Path) -> None:
    from pedseg.io.dicom import check_slice_positions

    files = [tmp_path / f"s{i}.dcm" for i in range(4)]
    positions = [(0.3 * k, 0.0, float(k)) for k in range(4)]
    with pytest.raises(VolumeError, match=r"s3.dcm is shifted 0.9 mm off the slice normal"):
        check_slice_positions("ser", files, positions, (1, 0, 0, 0, 1, 0))


def test_series_without_positions(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pedseg.io.dicom import check_slice_positions

    files = [tmp_path / f"s{i}.dcm" for i in range(3)]
    check_slice_positions("ser", files, [None, None, None], (1, 0, 0, 0, 1, 0))
    assert "spacing is not checked" in caplog.text
    positions = [(0.0, 0.0, 0.0), None, (0.0, 0.0, 2.0)]
    with pytest.raises(VolumeError, match=r"slice s1.dcm has no usable position"):
        check_slice_positions("ser", files, positions, (1, 0, 0, 0, 1, 0))
