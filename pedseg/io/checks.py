"""Cheap content checks of a volume that was read fine but is unlikely to be a real scan.

:func:`volume_warnings` gives the reasons (one short sentence each) a volume looks blank: every
voxel equal, only a handful of distinct intensities (a label map or mask given as the image),
nearly every voxel one value, or intensities that barely vary. Such a volume is still segmented;
the reasons go into the prediction report and ``pedseg identify``. Real MR scans are far from every
threshold (hundreds of distinct values, no value on more than ~15 % of the voxels).
"""

from __future__ import annotations

import numpy as np

from pedseg.io.volume import Volume

MIN_DISTINCT_VALUES = 16  # fewer distinct intensities: a label map or mask, not a scan
MAX_MODE_FRACTION = 0.98  # more voxels than this on one value: a blanked or nearly empty scan
MIN_RELATIVE_RANGE = 1e-4  # float intensities spanning less than this times their magnitude
SAMPLE_VOXELS = 1 << 20  # distinct values are counted on an evenly strided sample of this size


def _sample(array: np.ndarray) -> np.ndarray:
    flat = array.ravel(order="K")
    step = max(1, flat.size // SAMPLE_VOXELS)
    return flat[::step]


def volume_warnings(volume: Volume | np.ndarray) -> list[str]:
    """Why ``volume`` looks blank or near-constant (``[]``: it looks like a scan).

    Costs one min/max pass over the voxels plus a count of distinct values on at most
    :data:`SAMPLE_VOXELS` of them (tens of milliseconds for a 384x384x50 scan).
    """
    array = volume.array if isinstance(volume, Volume) else np.asarray(volume)
    if array.size == 0:
        return ["blank volume: it holds no voxels"]
    low, high = array.min(), array.max()
    if low == high:
        return [f"blank volume: every voxel is {_num(low)} (an empty or blanked scan?)"]
    sample = _sample(array)
    values, counts = _distinct(sample, low, high)
    reasons: list[str] = []
    if values.size < MIN_DISTINCT_VALUES:
        reasons.append(
            f"near-blank volume: only {values.size} distinct intensities (a label map or mask "
            "rather than a scan?)"
        )
    top = int(np.argmax(counts))
    fraction = float(counts[top]) / float(sample.size)
    if fraction > MAX_MODE_FRACTION:
        reasons.append(
            f"near-blank volume: {fraction:.1%} of voxels are {_num(values[top])} (a blanked or "
            "nearly empty scan?)"
        )
    if array.dtype.kind == "f":
        span = float(high) - float(low)
        magnitude = max(abs(float(low)), abs(float(high)))
        if span <= MIN_RELATIVE_RANGE * magnitude:
            reasons.append(
                f"near-constant volume: intensities span only {span:.3g} around {magnitude:.6g}"
            )
    return reasons


def _distinct(
    sample: np.ndarray, low: np.generic, high: np.generic
) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(sample, return_counts=True)``; for integers spanning at most 2**16 values by
    counting (no sort: a few milliseconds for a 2**20-voxel sample instead of tens)."""
    if sample.dtype.kind not in "iub" or int(high) - int(low) >= 1 << 16:
        return np.unique(sample, return_counts=True)
    counts = np.bincount((sample.astype(np.int64) - int(low)), minlength=1)
    present = np.flatnonzero(counts)
    return (present + int(low)).astype(sample.dtype), counts[present]


def _num(value: np.generic) -> str:
    item = value.item()
    return f"{item:g}" if isinstance(item, float) else str(int(item))
