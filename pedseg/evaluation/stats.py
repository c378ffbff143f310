"""Statistical tests used to compare models.

* :func:`ks_test` — two-sample Kolmogorov–Smirnov test (``scipy.stats.ks_2samp``, exact p-value
  for small samples, asymptotic for large ones) on slice-wise metrics, as in the paper's Table 2
  and Table S2 (e.g. the 2D Dice samples of :func:`pedseg.evaluation.metrics.slice_dice`).
* :func:`wilcoxon_paired` — paired Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) on per-case
  metrics of two models evaluated on the same cases.
* :func:`holm_correction` — Holm–Bonferroni step-down adjustment for several comparisons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from scipy import stats

from pedseg.errors import ConfigError

Alternative = Literal["two-sided", "less", "greater"]
_ALTERNATIVES = ("two-sided", "less", "greater")


@dataclass(frozen=True)
class TestResult:
    """A test's statistic and p-value, the sample sizes, and a note on special handling."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    statistic: float
    pvalue: float
    n_a: int
    n_b: int
    note: str = ""


def _sample(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1:
        raise ConfigError(f"sample {name} must be one-dimensional, got shape {data.shape}")
    if data.size == 0:
        raise ConfigError(f"sample {name} is empty; a test needs at least one value per sample")
    bad = np.flatnonzero(~np.isfinite(data))
    if bad.size:
        raise ConfigError(
            f"sample {name} holds non-finite values at positions {bad[:10].tolist()}; "
            "test finite metrics only (e.g. Dice, not the RAVD of an empty reference)"
        )
    return data


def _check_alternative(alternative: str) -> None:
    if alternative not in _ALTERNATIVES:
        raise ConfigError(
            f"alternative must be one of {', '.join(_ALTERNATIVES)}, got {alternative!r}"
        )


def ks_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    alternative: Alternative = "two-sided",
) -> TestResult:
    """Two-sample Kolmogorov–Smirnov test of samples ``a`` and ``b`` (sizes may differ)."""
    _check_alternative(alternative)
    x, y = _sample(a, "a"), _sample(b, "b")
    result = stats.ks_2samp(x, y, alternative=alternative)
    return TestResult(
        statistic=float(result.statistic), pvalue=float(result.pvalue), n_a=x.size, n_b=y.size
    )


def wilcoxon_paired(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    alternative: Alternative = "two-sided",
) -> TestResult:
    """Paired Wilcoxon signed-rank test of ``a[i] - b[i]`` (e.g. per-case Dice of two models).

    Zero differences are dropped (scipy's ``zero_method="wilcox"``). If every difference is zero
    the models are indistinguishable on these cases: statistic 0, p-value 1, with a note. The
    p-value uses scipy's ``method="auto"``: exact for up to 50 pairs without ties or zeros;
    with ties or zeros, exhaustive permutations up to 13 pairs (about a second at 12), the normal
    approximation beyond.
    """
    _check_alternative(alternative)
    x, y = _sample(a, "a"), _sample(b, "b")
    if x.size != y.size:
        raise ConfigError(
            f"paired samples must have the same length (one value per case), got {x.size} and {y.size}"
        )
    if x.size < 2:
        raise ConfigError(f"the Wilcoxon signed-rank test needs at least 2 pairs, got {x.size}")
    if np.all(x == y):
        note = "all paired differences are zero; p-value set to 1"
        return TestResult(statistic=0.0, pvalue=1.0, n_a=x.size, n_b=y.size, note=note)
    result = stats.wilcoxon(x, y, zero_method="wilcox", alternative=alternative)
    zeros = int(np.count_nonzero(x == y))
    note = f"{zeros} zero difference(s) dropped" if zeros else ""
    return TestResult(
        statistic=float(result.statistic),
        pvalue=float(result.pvalue),
        n_a=x.size,
        n_b=y.size,
        note=note,
    )


def holm_correction(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values, in the input order.

    With the ``m`` p-values sorted increasingly, ``p_adj(k) = max_{j<=k} min(1, (m - j + 1) p(j))``.
    Reject hypothesis ``i`` at level ``alpha`` when ``adjusted[i] <= alpha``.
    """
    p = np.asarray(pvalues, dtype=np.float64).reshape(-1)
    if p.size == 0:
        return p
    if np.any(np.isnan(p)) or np.any((p < 0) | (p > 1)):
        raise ConfigError(f"p-values must be in [0, 1], got {p.tolist()[:10]}")
    order = np.argsort(p, kind="stable")
    m = p.size
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty_like(p)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted
