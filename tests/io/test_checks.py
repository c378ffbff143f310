"""Blank and near-constant volumes are named; scans (phantoms, real MR) are not."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from pedseg.data.synth import PhantomConfig, synth_dataset
from pedseg.io import read_volume
from pedseg.io.checks import volume_warnings


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (
            np.zeros((8, 8, 4), np.int16),
            "blank volume: every voxel is 0 (an empty or blanked scan?)",
        ),
        (np.full((8, 8, 4), 312.5, np.float32), "blank volume: every voxel is 312.5"),
        (np.ones((4, 4, 4), bool), "blank volume: every voxel is 1"),
    ],
)
def test_constant_volume(array: np.ndarray, expected: str) -> None:
    [reason] = volume_warnings(array)
    assert reason.startswith(expected)


def test_label_map_given_as_image() -> None:
    labels = np.zeros((20, 20, 10), np.uint8)
    labels[5:15, 5:15, 2:8] = 1
    labels[8:12, 8:12, 4:6] = 2
    assert volume_warnings(labels) == [
        "near-blank volume: only 3 distinct intensities (a label map or mask rather than a scan?)"
    ]


def test_blank_scan_with_a_few_specks() -> None:
    rng = np.random.default_rng(0)
    array = np.zeros((40, 40, 40), np.float32)
    specks = rng.integers(0, 40, size=(3, 300))
    array[specks[0], specks[1], specks[2]] = rng.normal(100, 30, size=300)
    reasons = volume_warnings(array)
    assert reasons == ["near-blank volume: 99.5% of voxels are 0 (a blanked or nearly empty scan?)"]


def test_float_volume_that_barely_varies() -> None:
    rng = np.random.default_rng(0)
    array = (1000.0 + rng.normal(0, 1e-3, size=(16, 16, 8))).astype(np.float64)
    [reason] = volume_warnings(array)
    assert reason.startswith("near-constant volume: intensities span only 0.00")
    assert reason.endswith("around 1000")


def test_noisy_scan_like_volume_is_fine() -> None:
    rng = np.random.default_rng(0)
    assert volume_warnings(rng.normal(100, 20, size=(32, 32, 16)).astype(np.float32)) == []
    assert volume_warnings(rng.integers(0, 1200, size=(32, 32, 16), dtype=np.int16)) == []


def test_phantom_scans_are_fine_and_their_label_maps_are_not(tmp_path: Path) -> None:
    synth_dataset(
        tmp_path, domains=("ankle", "shoulder"), cases=2, seed=3, config=PhantomConfig((32, 32, 16))
    )
    for image in sorted(tmp_path.glob("*/imagesTr/*.nii.gz")):
        assert volume_warnings(read_volume(image)) == [], image
    for label in sorted(tmp_path.glob("*/labelsTr/*.nii.gz")):
        assert "distinct intensities" in volume_warnings(read_volume(label))[0], label


def test_large_volume_is_checked_quickly() -> None:
    rng = np.random.default_rng(0)
    array = rng.integers(0, 1200, size=(384, 384, 50), dtype=np.int16)
    start = time.perf_counter()
    assert volume_warnings(array) == []
    assert time.perf_counter() - start < 1.0


@pytest.mark.realdata
def test_real_scans_are_fine(shared_data: Path) -> None:
    for image in sorted(shared_data.glob("*/imagesTr/*.nii.gz")):
        assert volume_warnings(read_volume(image)) == [], image


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.uint8, np.int32, np.bool_, np.float32])
def test_distinct_values_equal_numpy_unique(dtype: type) -> None:
    """The counting shortcut for integer scans gives exactly ``np.unique``'s values and counts."""
    from pedseg.io.checks import _distinct

    rng = np.random.default_rng(0)
    for scale in (3.0, 300.0, 30000.0):
        sample = rng.normal(100.0, scale, size=5000)
        array = (sample > 100.0) if dtype is np.bool_ else sample.astype(dtype)
        values, counts = _distinct(array, array.min(), array.max())
        expected_values, expected_counts = np.unique(array, return_counts=True)
        assert values.dtype == expected_values.dtype
        np.testing.assert_array_equal(values, expected_values)
        np.testing.assert_array_equal(counts, expected_counts)
