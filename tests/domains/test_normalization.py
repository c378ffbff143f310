"""Normalizations: the paper's z-score, guarded against constant volumes."""

from __future__ import annotations

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
