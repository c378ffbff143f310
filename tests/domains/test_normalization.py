"""Normalizations: the paper's z-score, guarded against constant volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pedseg.domains.normalization import minmax, percentile_zscore, zscore


@given(hnp.arrays(np.float32, (4, 5, 3), elements=st.floats(-1e3, 1e3, width=32)))
def test_zscore_is_standardised_or_zero(a: np.ndarray) -> None:
    out = zscore(a)
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    if float(a.std()) > 1e-3:
        assert abs(float(out.mean())) < 1e-3
        assert abs(float(out.std()) - 1) < 1e-3


@pytest.mark.parametrize("fn", [zscore, percentile_zscore, minmax])
def test_constant_volume_maps_to_zeros(fn: object) -> None:
    out = fn(np.full((3, 3, 3), 7, dtype=np.int16))  # type: ignore[operator]
    np.testing.assert_array_equal(out, 0)


def test_minmax_range() -> None:
    out = minmax(np.array([[-5, 0, 5]], dtype=np.int16))
    np.testing.assert_allclose(out, [[0, 0.5, 1]])


def test_percentile_zscore_clips_outliers() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=10_000).astype(np.float32)
    a[0] = 1e6
    out = percentile_zscore(a)
    assert float(out.max()) < 5


def _reference_percentile_zscore(array: np.ndarray) -> np.ndarray:
    """The straightforward formula (float64 clip, then z-score with fresh arrays)."""
    data = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(data, [0.5, 99.5])
    clipped = np.asarray(np.clip(data, lo, hi), dtype=np.float32)
    mean, std = float(clipped.mean(dtype=np.float64)), float(clipped.std(dtype=np.float64))
    if std < 1e-6:  # constant once clipped
        return np.zeros_like(clipped)
    return ((clipped - mean) / std).astype(np.float32)


@given(
    hnp.arrays(
        dtype=st.sampled_from([np.int16, np.uint16, np.float32, np.float64]),
        shape=st.tuples(st.integers(2, 9), st.integers(2, 9), st.integers(1, 5)),
        elements=st.integers(0, 3000),
    )
)
def test_percentile_zscore_is_bit_identical_to_the_reference(array: np.ndarray) -> None:
    """The float32 clip and in-place z-score give exactly the reference's values."""
    if float(np.std(array)) < 1e-3:
        return
    np.testing.assert_array_equal(percentile_zscore(array), _reference_percentile_zscore(array))
    noisy = array.astype(np.float32) + np.float32(0.3)  # bounds that float32 cannot hold exactly
    np.testing.assert_array_equal(percentile_zscore(noisy), _reference_percentile_zscore(noisy))


@given(
    hnp.arrays(dtype=np.int32, shape=st.integers(1, 400), elements=st.integers(-30000, 30000)),
    st.sampled_from([np.int16, np.uint8, np.int32, np.uint16]),
    st.lists(st.floats(0, 100), min_size=1, max_size=4),
)
def test_counted_percentiles_equal_numpy_bit_for_bit(
    values: np.ndarray, dtype: type, qs: list[float]
) -> None:
    """Integer volumes take their percentiles from a histogram: numpy's linear values exactly."""
    from pedseg.domains.normalization import percentiles

    info = np.iinfo(dtype)
    array = np.clip(values, info.min, info.max).astype(dtype)
    expected = tuple(float(v) for v in np.percentile(array.astype(np.float32), qs))
    assert percentiles(array, tuple(qs)) == expected


def test_wide_integer_ranges_fall_back_to_numpy() -> None:
    from pedseg.domains.normalization import percentiles

    array = np.array([0, 1, 2, 1 << 20], dtype=np.int32)  # too wide to count
    assert percentiles(array, (50.0,)) == (1.5,)


@given(
    hnp.arrays(
        dtype=np.int32,
        shape=st.tuples(st.integers(1, 9), st.integers(1, 9), st.integers(1, 5)),
        elements=st.integers(-200, 3000),
    ),
    st.sampled_from([np.int16, np.uint8, np.uint16, np.int32]),
)
def test_integer_volumes_take_their_moments_from_counts(values: np.ndarray, dtype: type) -> None:
    """z-scores of an integer volume from its histogram equal those of the voxel-wise float32
    mean / std (to float64 rounding of the moments; identical on the real scans below)."""
    from pedseg.domains.normalization import _zscore

    info = np.iinfo(dtype)
    array = np.clip(values, info.min, info.max).astype(dtype)

    reference = _zscore(array.astype(np.float32), in_place=False)
    np.testing.assert_allclose(zscore(array), reference, rtol=1e-6, atol=1e-6)
    lo, hi = np.percentile(array.astype(np.float32), [0.5, 99.5])
    clipped = np.clip(array.astype(np.float32), np.float32(lo), np.float32(hi))
    expected = _zscore(clipped, in_place=True)
    np.testing.assert_allclose(percentile_zscore(array), expected, rtol=1e-6, atol=1e-6)


def test_real_scans_normalise_bit_for_bit_as_voxel_wise_moments(shared_data: Path) -> None:
    from pedseg.domains.normalization import _zscore
    from pedseg.io import read_volume

    for domain in ("pelvis", "spine"):
        for path in sorted((shared_data / domain / "imagesTr").glob("*.nii.gz"))[:2]:
            array = read_volume(path).array
            assert np.issubdtype(array.dtype, np.integer), path
            reference = _zscore(array.astype(np.float32), in_place=False)
            np.testing.assert_array_equal(zscore(array), reference)
