"""Is a scan what the model was trained on? Out-of-distribution evidence, combined.

A model trained on two domains is a weak detector from its embedding alone: anything that is not
the one domain must look like the other, so a cardiac scan may well land inside the pelvis cluster.
The checks below add evidence that does not depend on how many domains were trained, each against
the domain's training scans (:class:`~pedseg.runfolder.acquisition.AcquisitionProfile`):

* **blank**: a constant or near-constant volume (:func:`pedseg.io.checks.volume_warnings`);
* **embedding**: the recognition's median distance to the domain's cluster is beyond the threshold
  (:mod:`pedseg.inference.recognition`) or, the domain being given (``--domain``), the scan is
  recognised as another of the model's domains (a real scan of the wrong anatomy);
* **geometry**: along some canonical axis, the voxel spacing is outside the training range widened
  by :attr:`OodLimits.spacing_factor`, or the extent (field of view) outside it widened by
  :attr:`OodLimits.extent_factor` (another body part, a swapped or resampled axis);
* **intensities**: the normalised-intensity histogram is farther from the training mean
  (Jensen-Shannon divergence) than :attr:`OodLimits.histogram_factor` times the farthest training
  case, and at least :attr:`OodLimits.histogram_floor` (noise, inverted contrast, another sequence);
* **prediction**: the predicted foreground volume, or the volume of some label, is outside its
  training range widened by :attr:`OodLimits.volume_factor` (the model finds far too little or too
  much of its anatomy, or of one part of it: a bone missing in a transposed or inverted scan, or
  a label the model failed to segment).

A scan is flagged when any check fails; its report says which and with what values. A flagged scan
is still segmented, unless the command refuses them (``--refuse-ood``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pedseg.domains.spec import DomainSpec
from pedseg.errors import PedsegError
from pedseg.io.checks import volume_warnings
from pedseg.io.volume import Volume
from pedseg.runfolder.acquisition import AcquisitionProfile, intensity_histogram, js_divergence
from pedseg.runfolder.profiles import DomainProfile

__all__ = ["OodCheck", "OodLimits", "OodVerdict", "OutOfDistributionError"]

AXES = ("x (R-L)", "y (A-P)", "z (S-I)")


class OutOfDistributionError(PedsegError):
    """A scan was flagged out of distribution and the command refuses such scans."""


@dataclass(frozen=True)
class OodLimits:
    """How far a scan may be from the training scans (see the module docstring). Fixed defaults,
    not tuned on the benchmark's scans; what they flag is measured on cross-validation test cases
    and out-of-distribution scans made from them by ``benchmarks/bench_ood.py``
    (``benchmarks/results/ood.md``)."""

    spacing_factor: float = 2.0
    extent_factor: float = 1.6
    histogram_factor: float = 2.0
    histogram_floor: float = 0.05
    volume_factor: float = 4.0


@dataclass(frozen=True)
class OodVerdict:
    """The evidence about one scan: ``flagged`` when any check failed (``reasons``, one each)."""

    flagged: bool
    reasons: tuple[str, ...] = ()
    checks: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"flagged": self.flagged, "reasons": list(self.reasons), "checks": dict(self.checks)}

    def warning(self) -> str | None:
        if not self.flagged:
            return None
        return "looks out of distribution: " + "; ".join(self.reasons) + "; check the result"


@dataclass(frozen=True)
class OodCheck:
    """The checks of one model: its domains' profiles (none: only the blank check) and limits."""

    profiles: Mapping[str, DomainProfile] = field(default_factory=dict)
    limits: OodLimits = field(default_factory=OodLimits)
    refuse: bool = False

    def assess(
        self,
        volume: Volume,
        spec: DomainSpec,
        labels: np.ndarray | None = None,
        recognition: Mapping[str, Any] | None = None,
    ) -> OodVerdict:
        """The verdict on ``volume`` predicted as ``spec``'s domain (``labels``: the predicted
        label map, canonical; ``recognition``: the report's recognition entry)."""
        blank = [f"blank: {w}" for w in volume_warnings(volume)]
        reasons: list[str] = list(blank)
        checks: dict[str, Any] = {}
        if recognition is not None:
            reasons += _embedding(recognition)
        profile = self.profiles.get(spec.name)
        acquisition = profile.acquisition if profile is not None else None
        if acquisition is not None and not blank:  # a blank scan has no meaningful histogram
            reasons += self._acquisition(volume, spec, acquisition, checks)
            if labels is not None:
                reasons += self._prediction(volume, spec, labels, acquisition, checks)
        return OodVerdict(flagged=bool(reasons), reasons=tuple(reasons), checks=checks)

    def _acquisition(
        self,
        volume: Volume,
        spec: DomainSpec,
        reference: AcquisitionProfile,
        checks: dict[str, Any],
    ) -> list[str]:
        limits = self.limits
        reasons: list[str] = []
        spacing = [float(s) for s in volume.spacing]
        extent = [n * s for n, s in zip(volume.shape, spacing, strict=True)]
        checks["spacing_mm"] = [round(s, 4) for s in spacing]
        checks["extent_mm"] = [round(e, 1) for e in extent]
        for axis in range(3):
            for what, value, (lo, hi), factor, unit in (
                ("spacing", spacing[axis], reference.spacing_mm[axis], limits.spacing_factor, "mm"),
                ("extent", extent[axis], reference.extent_mm[axis], limits.extent_factor, "mm"),
            ):
                if not lo / factor <= value <= hi * factor:
                    reasons.append(
                        f"geometry: {what} along {AXES[axis]} is {value:.3g} {unit}, training "
                        f"scans {lo:.3g}-{hi:.3g} {unit}"
                    )
        divergence = js_divergence(
            intensity_histogram(volume, spec), np.asarray(reference.histogram)
        )
        limit = max(limits.histogram_factor * reference.histogram_spread, limits.histogram_floor)
        checks["histogram_divergence"] = round(divergence, 4)
        checks["histogram_limit"] = round(limit, 4)
        if divergence > limit:
            reasons.append(
                f"intensities: histogram divergence {divergence:.3f} from the training scans' "
                f"(> {limit:.3f}); another sequence, inverted contrast or noise?"
            )
        return reasons

    def _prediction(
        self,
        volume: Volume,
        spec: DomainSpec,
        labels: np.ndarray,
        reference: AcquisitionProfile,
        checks: dict[str, Any],
    ) -> list[str]:
        factor = self.limits.volume_factor
        voxel_ml = math.prod(float(s) for s in volume.spacing) / 1000.0
        counts = np.bincount(np.asarray(labels).ravel().astype(np.int64))
        found = {
            name: float(counts[i]) * voxel_ml if i < counts.size else 0.0 for i, name in spec.labels
        }
        reasons: list[str] = []
        lo, hi = reference.foreground_ml
        if hi > 0:
            foreground = sum(found.values())
            checks["foreground_ml"] = round(foreground, 2)
            if not lo / factor <= foreground <= hi * factor:
                reasons.append(
                    f"prediction: {foreground:.1f} mL of {spec.name} labels found, training "
                    f"scans {lo:.1f}-{hi:.1f} mL"
                )
        checks["label_ml"] = {name: round(ml, 2) for name, ml in found.items()}
        odd = [
            f"{name} {found[name]:.1f} mL (training {lo:.1f}-{hi:.1f})"
            for name, (lo, hi) in reference.label_ml.items()
            if name in found and hi > 0 and not lo / factor <= found[name] <= hi * factor
        ]
        if odd:
            reasons.append(
                f"prediction: label volumes unlike the training scans': {', '.join(odd)}"
            )
        return reasons


def _embedding(recognition: Mapping[str, Any]) -> list[str]:
    """The recognition's evidence: the scan looks like none of the domains or, the domain being
    given (``expected``), like another one (a real scan of the wrong anatomy)."""
    if recognition.get("ood"):
        said = recognition.get("warning") or "unlike every domain's training slices"
        return [f"embedding: {said}"]
    expected, found = recognition.get("expected"), recognition.get("domain")
    if isinstance(expected, str) and found != expected:
        return [f"embedding: {recognition.get('warning') or f'looks like domain {found}'}"]
    return []
