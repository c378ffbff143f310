"""Intensity normalisations, registered by name (entry-point group ``pedseg.normalizations``).

A normalisation maps a volume's voxels (any dtype) to float32. It is computed over the whole volume,
so every slice of a scan shares one transform, as in the paper ("normalized to have zero-mean and unit
variance"). Plugins provide a callable with the same signature.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

_EPS = 1e-6


class Normalization(Protocol):
    def __call__(self, array: np.ndarray) -> np.ndarray: ...


def zscore(array: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance over the volume (the paper's). A constant volume maps to zeros."""
    return _zscore(np.asarray(array, dtype=np.float32), in_place=False)


def _zscore(data: np.ndarray, *, in_place: bool) -> np.ndarray:
    """:func:`zscore` of float32 ``data``, into ``data`` itself when ``in_place`` (the same
    float32 operations, so the same values, without two volume-sized temporaries)."""
    mean = float(data.mean(dtype=np.float64))
    std = float(data.std(dtype=np.float64))
    if not np.isfinite(std) or std < _EPS:
        return np.zeros_like(data)
    out = np.subtract(data, mean, out=data if in_place else None)
    out /= std
    return out


def percentile_zscore(array: np.ndarray, *, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Clip to the [0.5, 99.5] percentiles, then z-score: robust to bright vessels and fat."""
    data = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(data, [lower, upper])
    # Clipping in float32 to the bounds rounded to float32 gives exactly the float32 cast of the
    # float64 clip (rounding is monotonic), without a float64 copy of the volume.
    clipped = np.clip(data, np.float32(lo), np.float32(hi))  # a copy: ours to overwrite
    return _zscore(clipped, in_place=True)


def minmax(array: np.ndarray) -> np.ndarray:
    """Rescale to [0, 1]. A constant volume maps to zeros."""
    data = np.asarray(array, dtype=np.float32)
    lo = float(data.min())
    span = float(data.max()) - lo
    if span < _EPS:
        return np.zeros_like(data)
    return ((data - lo) / span).astype(np.float32, copy=False)
