"""The planner's individual decisions, each returning its value and a one-line reason.

* image size: the smallest candidate at which every label's cross-section (the 5th percentile of
  its slices, :meth:`~pedseg.data.fingerprint.LabelFingerprint.cross_section_px`) is at least
  ``min_cross_section_px``, capped by the data's in-plane size (no candidate above the largest
  median in-plane side of the domains, upsampling adds no detail);
* the cost model (:class:`Costs`): the run's time = fixed overheads (start-up, the slice cache's
  build estimated by the fingerprint's read time, reading the training scans again for the cross
  centroids) + steps x measured step time + per epoch (validation of every held-out slice, a
  forward pass at a third of a training step's cost per slice, and the checkpoints) + the
  embedding profile of the training slices;
* epochs: as many validations as fit in ``validation_share`` of the budget, within
  ``validations`` (10-20), so the curves (and, with ``keep: best``, the best-epoch choice) see
  the whole run;
* post-processing per label from the training labels' connected components.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pedseg.data.fingerprint import Fingerprint, LabelFingerprint
from pedseg.errors import PlanError

__all__ = [
    "Costs",
    "PlanOptions",
    "choose_image_size",
    "costs_of",
    "shrunk_reason",
]

# pedseg.runfolder.profiles' constants (that module imports torch; a test checks they agree).
PROFILE_FRACTION = 0.8  # CENTRAL_FRACTION: the central share of a scan's slices profiled
MAX_PROFILE_SLICES = 2000
CROSS_SLICES_PER_CASE = 16


@dataclass(frozen=True)
class PlanOptions:
    """The planner's rules; the defaults are the documented recipe (docs/planning.md)."""

    candidate_sizes: tuple[int, ...] = (96, 128, 160, 192, 224, 256)
    widths: tuple[int, ...] = (32, 16, 8)
    batch_sizes: tuple[int, ...] = (32, 16)
    depth: int = 5
    arch: str = "unet"
    scheme: str = "dsl-contrastive"
    min_cross_section_px: float = 8.0
    min_steps: int = 1500
    lr: float = 1e-3
    schedule: str = "cosine"
    min_lr_ratio: float = 0.01
    warmup_fraction: float = 0.03
    seg_loss: str = "dice-ce"
    validations: tuple[int, int] = (10, 20)
    validation_share: float = 0.1
    safety: float = 0.05
    startup_s: float = 20.0
    epoch_overhead_s: float = 2.0
    val_fraction: float = 0.2
    predict_margin: float = 2.0
    """A candidate whose step time, predicted from measured ones by relative cost, exceeds the
    allowed time by this factor is skipped without measuring it."""


@dataclass(frozen=True)
class Costs:
    """What a run costs besides its steps (see the module docstring)."""

    fixed_s: float
    val_slices: int
    profile_slices: int
    epoch_overhead_s: float

    def forward_s(self, step_s: float, batch_size: int) -> float:
        """Inference seconds per slice: a third of a training step's per-slice time."""
        return step_s / batch_size / 3.0

    def validation_s(self, step_s: float, batch_size: int) -> float:
        return self.val_slices * self.forward_s(step_s, batch_size)

    def epochs_for(self, step_s: float, batch_size: int, budget_s: float, opts: PlanOptions) -> int:
        per = self.validation_s(step_s, batch_size) + self.epoch_overhead_s
        low, high = opts.validations
        return max(low, min(high, math.floor(opts.validation_share * budget_s / per)))

    def steps_for(
        self, step_s: float, batch_size: int, epochs: int, budget_s: float, opts: PlanOptions
    ) -> int:
        """Steps that fit in the budget (less the safety share) after the overheads."""
        left = budget_s * (1.0 - opts.safety) - self.overhead_s(step_s, batch_size, epochs)
        return max(0, math.floor(left / step_s))

    def overhead_s(self, step_s: float, batch_size: int, epochs: int) -> float:
        per_epoch = self.validation_s(step_s, batch_size) + self.epoch_overhead_s
        profile = self.profile_slices * self.forward_s(step_s, batch_size)
        return self.fixed_s + epochs * per_epoch + profile

    def run_s(self, steps: int, step_s: float, batch_size: int, epochs: int) -> float:
        return self.overhead_s(step_s, batch_size, epochs) + steps * step_s


def costs_of(fingerprints: Sequence[Fingerprint], opts: PlanOptions) -> Costs:
    """The overheads of training on these domains (see the module docstring)."""
    val_slices = profile = 0
    build = cross_read = 0.0
    others = len(fingerprints) - 1
    for fp in fingerprints:
        held_out = min(fp.num_cases - 1, max(1, round(opts.val_fraction * fp.num_cases)))
        per_case = fp.total_slices / fp.num_cases
        val = round(held_out * per_case)
        train_cases = fp.num_cases - held_out
        val_slices += val
        profile += min(MAX_PROFILE_SLICES, round(PROFILE_FRACTION * (fp.total_slices - val)))
        profile += CROSS_SLICES_PER_CASE * train_cases * others
        build += fp.build_seconds
        if others:
            cross_read += fp.build_seconds * train_cases / fp.num_cases
    return Costs(
        fixed_s=opts.startup_s + build + cross_read,
        val_slices=val_slices,
        profile_slices=profile,
        epoch_overhead_s=opts.epoch_overhead_s,
    )


def _labels(fingerprints: Sequence[Fingerprint]) -> list[tuple[str, LabelFingerprint]]:
    found = [(fp.domain, entry) for fp in fingerprints for entry in fp.labels if entry.cases > 0]
    if not found:
        raise PlanError("no label occurs in the training labels of the given domains; check them")
    return found


def _narrowest(labels: Sequence[tuple[str, LabelFingerprint]], size: int) -> tuple[str, float]:
    domain, entry = min(labels, key=lambda item: item[1].cross_section_px(size))
    return f"{entry.name} ({domain})", entry.cross_section_px(size)


def choose_image_size(fingerprints: Sequence[Fingerprint], opts: PlanOptions) -> tuple[int, str]:
    """The image size the labels need (see the module docstring) and why."""
    labels = _labels(fingerprints)
    sizes = sorted(opts.candidate_sizes)
    native = max(max(fp.in_plane_median) for fp in fingerprints)
    allowed = [s for s in sizes if s <= native] or sizes[:1]
    need = opts.min_cross_section_px
    previous: tuple[int, str, float] | None = None
    for size in allowed:
        name, px = _narrowest(labels, size)
        if px >= need:
            if previous is None:
                return size, (
                    f"every label is >= {need:g} px wide at {size}² (narrowest: {name}, "
                    f"{px:.1f} px): image size {size}"
                )
            low, low_name, low_px = previous
            return size, (
                f"{low_name} is {low_px:.1f} px wide at {low}² (< {need:g}): image size {size} "
                f"({name}: {px:.1f} px)"
            )
        previous = (size, name, px)
    size = allowed[-1]
    name, px = _narrowest(labels, size)
    return size, (
        f"{name} is {px:.1f} px wide even at {size}² (< {need:g}); the data's in-plane size "
        f"({native:g} px) caps the image size at {size}"
    )


def shrunk_reason(
    fingerprints: Sequence[Fingerprint], wanted: int, size: int, opts: PlanOptions
) -> str:
    """Why the image is smaller than the labels want: no model at ``wanted`` fits the budget."""
    name, px = _narrowest(_labels(fingerprints), size)
    return (
        f"the labels want {wanted}², but no model there leaves {opts.min_steps} steps in the "
        f"budget: image size {size} ({name} is {px:.1f} px wide there)"
    )
