"""KS, Wilcoxon and Holm against hand-computed p-values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pedseg.errors import ConfigError
from pedseg.evaluation.stats import TestResult, holm_correction, ks_test, wilcoxon_paired


def test_ks_of_fully_separated_samples() -> None:
    # D = 1; exact two-sided p = 2 / C(6, 3) = 0.1 (only two of the 20 orderings are as extreme).
    result = ks_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert isinstance(result, TestResult)
    assert (result.statistic, result.n_a, result.n_b, result.note) == (1.0, 3, 3, "")
    assert result.pvalue == pytest.approx(0.1)


def test_ks_of_identical_samples() -> None:
    result = ks_test([0.5, 0.7, 0.9, 0.2], [0.9, 0.2, 0.7, 0.5])
    assert (result.statistic, result.pvalue) == (0.0, 1.0)


def test_ks_matches_scipy_on_unequal_sizes() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=40), rng.normal(0.5, 1.0, size=25)
    expected = stats.ks_2samp(a, b)
    result = ks_test(a, b)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.pvalue == pytest.approx(expected.pvalue)
    assert (result.n_a, result.n_b) == (40, 25)
    greater = ks_test(a, b, alternative="greater")
    assert greater.pvalue == pytest.approx(stats.ks_2samp(a, b, alternative="greater").pvalue)


def test_wilcoxon_of_all_positive_differences() -> None:
    # Differences 1..5, all positive: W- = 0; exact two-sided p = 2 / 2^5 = 0.0625.
    a = [0.91, 0.92, 0.93, 0.94, 0.95]
    b = [0.90, 0.90, 0.90, 0.90, 0.90]
    result = wilcoxon_paired(a, b)
    assert result.statistic == 0.0
    assert result.pvalue == pytest.approx(0.0625)
    assert (result.n_a, result.n_b, result.note) == (5, 5, "")
    assert wilcoxon_paired(a, b, alternative="greater").pvalue == pytest.approx(1 / 32)


def test_wilcoxon_matches_scipy_and_notes_dropped_zeros() -> None:
    rng = np.random.default_rng(3)
    # 16 pairs with zeros: scipy uses the normal approximation (<= 13 would permute, slowly).
    a = rng.uniform(0.7, 0.95, size=16)
    b = a + rng.normal(0.01, 0.02, size=16)
    b[[2, 7]] = a[[2, 7]]
    expected = stats.wilcoxon(a, b, zero_method="wilcox")
    result = wilcoxon_paired(a, b)
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.pvalue == pytest.approx(expected.pvalue)
    assert "2 zero" in result.note


def test_wilcoxon_with_no_difference_has_p_one() -> None:
    result = wilcoxon_paired([0.8, 0.9, 0.7], [0.8, 0.9, 0.7])
    assert (result.statistic, result.pvalue) == (0.0, 1.0)
    assert "zero" in result.note


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        ([0.9], [0.8], "at least 2 pairs, got 1"),
        ([0.9, 0.8], [0.8], "same length"),
        ([0.9, math.nan], [0.8, 0.7], "non-finite"),
        ([], [0.8], "empty"),
    ],
)
def test_wilcoxon_input_errors(a: list[float], b: list[float], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        wilcoxon_paired(a, b)


def test_bad_alternative_and_shape() -> None:
    with pytest.raises(ConfigError, match="alternative"):
        ks_test([1.0], [2.0], alternative="bigger")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="one-dimensional"):
        ks_test(np.ones((2, 2)), [1.0])


def test_holm_correction_by_hand() -> None:
    # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone
    # 0.02, 0.03, 0.06, 0.06, returned in input order.
    adjusted = holm_correction([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm_correction([0.5, 0.9]), [1.0, 1.0])
    assert holm_correction([]).size == 0
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        holm_correction([0.5, 1.5])
