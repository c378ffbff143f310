"""read_label (integer checks, declared values) and check_pair (image/label geometry)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pedseg.errors import VolumeError
from pedseg.io import check_pair, read_label, read_volume
from pedseg.io.labels import format_ranges, format_values, to_label_array
from tests.io.conftest import NiftiMaker, make_affine


def _labels(dtype: type = np.int16) -> np.ndarray:
    data = np.zeros((4, 5, 6), dtype=dtype)
    data[1:3, 1:4, 2:5] = 1
    data[0, 0, 0] = 3
    return data


def test_integer_labels_cast_to_uint8(make_nifti: NiftiMaker) -> None:
    affine = make_affine(perm=(1, 0, 2), flips=(1, -1, 1))
    path = make_nifti("lab.nii.gz", _labels(), affine)
    volume = read_label(path, allowed=range(4))
    assert volume.array.dtype == np.uint8
    np.testing.assert_array_equal(volume.array, read_volume(path).array)


def test_integral_float_storage_accepted(make_nifti: NiftiMaker) -> None:
    volume = read_label(make_nifti("lab.nii.gz", _labels(np.float32)))
    assert volume.array.dtype == np.uint8
    np.testing.assert_array_equal(volume.array, _labels())


def test_large_label_values_use_uint16(make_nifti: NiftiMaker) -> None:
    data = _labels(np.int32)
    data[2, 2, 2] = 300
    assert read_label(make_nifti("lab.nii.gz", data)).array.dtype == np.uint16
    data[2, 2, 2] = 70000
    with pytest.raises(VolumeError, match="exceeds the maximum 65535"):
        read_label(make_nifti("big.nii.gz", data))


def test_fractional_label_refused(make_nifti: NiftiMaker) -> None:
    data = _labels(np.float32)
    data[3, 3, 3] = 2.5
    with pytest.raises(VolumeError, match=r"non-integer values \{2.5\}"):
        read_label(make_nifti("lab.nii.gz", data))


def test_negative_label_refused(make_nifti: NiftiMaker) -> None:
    data = _labels()
    data[3, 3, 3] = -1
    with pytest.raises(VolumeError, match=r"\{-1\} are negative"):
        read_label(make_nifti("lab.nii.gz", data))


def test_undeclared_values_listed(make_nifti: NiftiMaker) -> None:
    data = _labels()
    data[3, 3, 3] = 7
    data[3, 4, 3] = 9
    path = make_nifti("lab.nii.gz", data)
    with pytest.raises(VolumeError) as info:
        read_label(path, allowed=[0, 1, 2, 3])
    assert str(info.value) == f"{path}: label values {{7, 9}} are not declared; declared: 0-3"


def test_bool_labels() -> None:
    out = to_label_array(np.array([[[True, False]]]), path="x", allowed={0, 1})
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, [[[1, 0]]])


def test_formatting_helpers() -> None:
    assert format_ranges([0, 1, 2, 3, 5, 7, 8]) == "0-3, 5, 7-8"
    assert format_ranges([]) == "none"
    assert format_values(range(12)) == "{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...}"
    assert format_values([2.5, 0.25]) == "{0.25, 2.5}"


def test_check_pair_accepts_same_world_in_other_disk_order(
    make_nifti: NiftiMaker, tmp_path: Path
) -> None:
    data = _labels()
    affine = make_affine(spacing=(0.5, 1.0, 2.0), origin=(1, 2, 3))
    image = read_volume(make_nifti("img.nii.gz", data, affine))
    # The same grid stored with the first axis flipped (and the origin moved accordingly).
    flipped = affine @ np.array([[-1, 0, 0, 3], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    label = read_label(make_nifti("lab.nii.gz", data[::-1], flipped))
    check_pair(image, label)
    np.testing.assert_array_equal(label.array, image.array)


@pytest.mark.parametrize(
    ("label_affine", "shape", "message"),
    [
        (make_affine(spacing=(0.5, 1.0, 2.0)), (4, 5, 7), "shape"),
        (make_affine(spacing=(0.5, 1.0, 2.5)), (4, 5, 6), "spacing"),
        (make_affine(spacing=(0.5, 1.0, 2.0), angles=(0.05, 0, 0)), (4, 5, 6), "direction"),
        (make_affine(spacing=(0.5, 1.0, 2.0), origin=(0, 0, 1)), (4, 5, 6), "origin"),
    ],
)
def test_check_pair_mismatch(
    make_nifti: NiftiMaker, label_affine: np.ndarray, shape: tuple[int, ...], message: str
) -> None:
    image = read_volume(make_nifti("img.nii.gz", _labels(), make_affine(spacing=(0.5, 1.0, 2.0))))
    label_path = make_nifti("lab.nii.gz", np.zeros(shape, np.uint8), label_affine)
    label = read_label(label_path)
    with pytest.raises(VolumeError, match=f"label {message}") as info:
        check_pair(image, label)
    assert info.value.path == str(label_path)
    assert str(image.path) in str(info.value)


def test_check_pair_tolerance(make_nifti: NiftiMaker) -> None:
    image = read_volume(make_nifti("img.nii.gz", _labels(), make_affine(origin=(0, 0, 0))))
    label = read_label(make_nifti("lab.nii.gz", _labels(), make_affine(origin=(0, 0, 5e-4))))
    check_pair(image, label)
    with pytest.raises(VolumeError, match="origin"):
        check_pair(image, label, atol=1e-4)
