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
