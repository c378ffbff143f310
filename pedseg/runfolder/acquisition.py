"""What a domain's training scans looked like: the reference of the out-of-distribution checks.

Stored per domain with the embedding profiles (``RUN/domains.safetensors`` metadata, readable copy in
``domains.json``), computed at the end of training from the training cases (image and label):

* geometry in canonical RAS+ orientation: per axis the range of voxel spacing (mm), extent
  (field of view, mm) and matrix size over the cases;
* intensities: the mean histogram of the domain-normalised voxels (:data:`HIST_BINS` bins over
  :data:`HIST_RANGE`) and the spread: the largest Jensen-Shannon divergence of a training case to
  the mean of the *other* cases (leave-one-out: a case's distance to a mean it is part of
  underestimates how far a new scan of the same kind falls, by about ``(1 - 1/n)^2``);
* labels: per label the range of its volume (mL) over the cases, and the range of the total
  foreground volume.

These do not depend on how many domains a model has, unlike the embedding (see
:mod:`pedseg.inference.ood`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pedseg.domains.registry import get_normalization
from pedseg.domains.spec import DomainSpec
from pedseg.io.volume import Volume

__all__ = [
    "HIST_BINS",
    "HIST_RANGE",
    "AcquisitionProfile",
    "AcquisitionSummary",
    "intensity_histogram",
    "js_divergence",
]

HIST_BINS = 48
HIST_RANGE = (-4.0, 4.0)
_SAMPLE = 2_000_000  # voxels used for a histogram (a seeded, regular subsample beyond that)

Range = tuple[float, float]


def intensity_histogram(volume: Volume, spec: DomainSpec) -> np.ndarray:
    """The normalised-intensity histogram of ``volume`` as ``spec`` normalises it (sums to 1;
    values beyond :data:`HIST_RANGE` fall in the end bins)."""
    values = np.asarray(volume.array).ravel()
    if values.size > _SAMPLE:
        values = values[:: math.ceil(values.size / _SAMPLE)]
    normalised = np.asarray(get_normalization(spec.normalization)(values), dtype=np.float64)
    normalised = np.clip(np.nan_to_num(normalised, nan=0.0), *HIST_RANGE)
    counts, _ = np.histogram(normalised, bins=HIST_BINS, range=HIST_RANGE)
    total = counts.sum()
    return counts / total if total else np.full(HIST_BINS, 1.0 / HIST_BINS)


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2: 0 = equal, 1 = disjoint) of two histograms."""
    p = np.asarray(p, dtype=np.float64) / max(float(np.sum(p)), 1e-12)
    q = np.asarray(q, dtype=np.float64) / max(float(np.sum(q)), 1e-12)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return max(0.0, 0.5 * kl(p) + 0.5 * kl(q))


@dataclass(frozen=True)
class AcquisitionProfile:
    """A domain's training scans (see the module docstring); ranges are ``(min, max)``."""

    n_cases: int
    spacing_mm: tuple[Range, Range, Range]
    extent_mm: tuple[Range, Range, Range]
    shape: tuple[Range, Range, Range]
    histogram: tuple[float, ...]
    histogram_spread: float
    label_ml: Mapping[str, Range] = field(default_factory=dict)
    foreground_ml: Range = (0.0, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "n_cases": self.n_cases,
            "spacing_mm": [list(r) for r in self.spacing_mm],
            "extent_mm": [list(r) for r in self.extent_mm],
            "shape": [list(r) for r in self.shape],
            "histogram": [round(v, 6) for v in self.histogram],
            "histogram_spread": self.histogram_spread,
            "label_ml": {k: list(v) for k, v in self.label_ml.items()},
            "foreground_ml": list(self.foreground_ml),
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> AcquisitionProfile:
        """Inverse of :meth:`to_json` (``KeyError``/``TypeError``/``ValueError`` when damaged)."""

        def ranges(key: str) -> tuple[Range, Range, Range]:
            values = [(float(lo), float(hi)) for lo, hi in raw[key]]
            if len(values) != 3:
                raise ValueError(f"{key} must hold 3 ranges")
            return (values[0], values[1], values[2])

        histogram = tuple(float(v) for v in raw["histogram"])
        if len(histogram) != HIST_BINS:
            raise ValueError(f"histogram must have {HIST_BINS} bins")
        lo, hi = raw["foreground_ml"]
        return cls(
            n_cases=int(raw["n_cases"]),
            spacing_mm=ranges("spacing_mm"),
            extent_mm=ranges("extent_mm"),
            shape=ranges("shape"),
            histogram=histogram,
            histogram_spread=float(raw["histogram_spread"]),
            label_ml={str(k): (float(v[0]), float(v[1])) for k, v in raw["label_ml"].items()},
            foreground_ml=(float(lo), float(hi)),
        )


class AcquisitionSummary:
    """Accumulates a domain's training cases one at a time (one volume in memory)."""

    def __init__(self, spec: DomainSpec) -> None:
        self.spec = spec
        self._spacing: list[Sequence[float]] = []
        self._extent: list[Sequence[float]] = []
        self._shape: list[Sequence[int]] = []
        self._histograms: list[np.ndarray] = []
        self._label_ml: dict[str, list[float]] = {name: [] for name in spec.label_names}
        self._foreground: list[float] = []

    def add(self, image: Volume, label: Volume | None = None) -> None:
        """One training case (canonical image and, when labelled, its label map)."""
        spacing = [float(s) for s in image.spacing]
        self._spacing.append(spacing)
        self._shape.append(image.shape)
        self._extent.append([n * s for n, s in zip(image.shape, spacing, strict=True)])
        self._histograms.append(intensity_histogram(image, self.spec))
        if label is not None:
            voxel_ml = math.prod(spacing) / 1000.0
            counts = np.bincount(np.asarray(label.array).ravel().astype(np.int64))
            total = 0.0
            for label_id, name in self.spec.labels:
                ml = float(counts[label_id]) * voxel_ml if label_id < counts.size else 0.0
                self._label_ml[name].append(ml)
                total += ml
            self._foreground.append(total)

    def profile(self) -> AcquisitionProfile | None:
        """The summary of the cases added (``None`` when there were none)."""
        if not self._histograms:
            return None
        stack = np.asarray(self._histograms, dtype=np.float64)
        mean = stack.mean(axis=0)
        count = stack.shape[0]
        others = [(stack.sum(axis=0) - h) / (count - 1) for h in stack] if count > 1 else [mean]
        spread = max(js_divergence(h, rest) for h, rest in zip(stack, others, strict=True))
        return AcquisitionProfile(
            n_cases=len(self._histograms),
            spacing_mm=_ranges(self._spacing),
            extent_mm=_ranges(self._extent),
            shape=_ranges(self._shape),
            histogram=tuple(float(v) for v in mean),
            histogram_spread=float(spread),
            label_ml={k: (min(v), max(v)) for k, v in self._label_ml.items() if v},
            foreground_ml=(min(self._foreground), max(self._foreground))
            if self._foreground
            else (0.0, 0.0),
        )


def _ranges(rows: Sequence[Sequence[float]]) -> tuple[Range, Range, Range]:
    array = np.asarray(rows, dtype=np.float64)
    lows, highs = array.min(axis=0), array.max(axis=0)
    return (
        (float(lows[0]), float(highs[0])),
        (float(lows[1]), float(highs[1])),
        (float(lows[2]), float(highs[2])),
    )
