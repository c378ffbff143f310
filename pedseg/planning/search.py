"""The model search: the largest configuration that leaves enough steps in the budget.

Candidates, in order of preference: image sizes from the one the labels need downwards; at each
size, widths from the largest down, at each width batch sizes from the largest down. The first
whose *measured* step time leaves at least ``min_steps`` steps (after the overheads of
:class:`~pedseg.planning.choices.Costs`) is chosen. Measuring is real work (seconds to minutes on a
CPU), so a candidate whose time, predicted from the nearest measured one by
:meth:`~pedseg.training.timing.StepSpec.relative_cost`, exceeds the allowed step time by
``predict_margin`` is skipped unmeasured; predictions only skip, they never choose. When nothing
fits, the cheapest candidate is taken and the reason says how far short it falls.

The runtime variant (fp32 or bf16 autocast, channels_last or not) is chosen first by timing the
cheapest candidate in every variant the device offers, then used for every other candidate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pedseg.planning.choices import Costs, PlanOptions
from pedseg.training.timing import StepSpec, Timer

__all__ = ["Choice", "Variant", "choose_variant", "device_variants", "search"]


@dataclass(frozen=True)
class Variant:
    precision: str
    channels_last: bool

    def describe(self) -> str:
        precision = "bf16 autocast" if self.precision == "bf16" else "fp32"
        return f"{precision}{' + channels_last' if self.channels_last else ' NCHW'}"


def device_variants(device: str) -> tuple[Variant, ...]:
    """The runtime variants worth timing on ``device`` (cpu: both layouts and precisions)."""
    if device == "cpu":
        return (
            Variant("fp32", False),
            Variant("fp32", True),
            Variant("bf16", False),
            Variant("bf16", True),
        )
    return (Variant("bf16", True), Variant("fp32", True))


@dataclass(frozen=True)
class Choice:
    """The chosen candidate, its measured step time, steps and epochs, and the story."""

    spec: StepSpec
    step_s: float
    steps: int
    epochs: int
    fits: bool
    rejected: tuple[str, ...]
    """One short note per larger candidate that did not fit (measured or predicted)."""


def choose_variant(
    probe: StepSpec, variants: Sequence[Variant], timer: Timer
) -> tuple[Variant, str]:
    """The fastest variant for ``probe`` and a reason listing the times."""
    timed = [(timer(_with(probe, v)), v) for v in variants]
    best_s, best = min(timed, key=lambda item: item[0])
    if len(timed) == 1:
        return best, f"{best.describe()}: {best_s:.3f} s per step at {_short(probe)}"
    others = ", ".join(f"{v.describe()} {s:.3f} s" for s, v in timed if v != best)
    return best, (
        f"{best.describe()} is the fastest at {_short(probe)}: {best_s:.3f} s per step ({others})"
    )


def _with(spec: StepSpec, variant: Variant) -> StepSpec:
    return replace(spec, precision=variant.precision, channels_last=variant.channels_last)


def _short(spec: StepSpec) -> str:
    return f"{spec.image_size}², width {spec.base_width}, batch {spec.batch_size}"


def candidates(
    sizes: Sequence[int],
    *,
    widths: Sequence[int],
    batches: Sequence[int],
    base: Mapping[str, Any],
) -> list[StepSpec]:
    """Every candidate in order of preference (sizes as given, then widths, then batches)."""
    return [
        StepSpec(image_size=size, base_width=width, batch_size=batch, **base)
        for size in sizes
        for width in sorted(widths, reverse=True)
        for batch in sorted(batches, reverse=True)
    ]


def search(
    specs: Sequence[StepSpec],
    *,
    timer: Timer,
    costs: Costs,
    budget_s: float,
    opts: PlanOptions,
    fixed_steps: int | None = None,
) -> Choice:
    """The first of ``specs`` that fits (see the module docstring); ``specs`` must not be empty.

    ``fixed_steps`` (epochs x steps per epoch given by the user): a candidate fits when those steps
    fit in the budget, instead of when ``min_steps`` do.
    """
    measured: list[tuple[StepSpec, float]] = []
    rejected: list[str] = []
    need = opts.min_steps if fixed_steps is None else fixed_steps
    cheapest = min(specs, key=StepSpec.relative_cost)
    measured.append((cheapest, timer(cheapest)))
    for spec in specs:
        allowed = _allowed_step_s(spec, costs, budget_s, opts, need)
        predicted = _predict(spec, measured)
        known = dict((s.key(), t) for s, t in measured).get(spec.key())
        if known is None and predicted > opts.predict_margin * allowed:
            rejected.append(f"{_short(spec)}: ~{predicted:.2f} s/step predicted")
            continue
        seconds = known if known is not None else timer(spec)
        if known is None:
            measured.append((spec, seconds))
        epochs = costs.epochs_for(seconds, spec.batch_size, budget_s, opts)
        steps = costs.steps_for(seconds, spec.batch_size, epochs, budget_s, opts)
        if steps >= need:
            return Choice(spec, seconds, steps, epochs, True, tuple(rejected))
        rejected.append(f"{_short(spec)}: {seconds:.2f} s/step, {steps} steps")
    seconds = dict((s.key(), t) for s, t in measured)[cheapest.key()]
    epochs = costs.epochs_for(seconds, cheapest.batch_size, budget_s, opts)
    steps = costs.steps_for(seconds, cheapest.batch_size, epochs, budget_s, opts)
    return Choice(cheapest, seconds, steps, epochs, False, tuple(rejected))


def _allowed_step_s(
    spec: StepSpec, costs: Costs, budget_s: float, opts: PlanOptions, steps: int
) -> float:
    """The step time at which ``steps`` steps would just fit (validation scales with it)."""
    low, high = 1e-6, budget_s
    for _ in range(60):  # bisection: the overheads grow with the step time
        mid = math.sqrt(low * high)
        epochs = costs.epochs_for(mid, spec.batch_size, budget_s, opts)
        if costs.steps_for(mid, spec.batch_size, epochs, budget_s, opts) >= steps:
            low = mid
        else:
            high = mid
    return low


def _predict(spec: StepSpec, measured: Sequence[tuple[StepSpec, float]]) -> float:
    """Step time scaled by relative cost from the measured spec nearest in cost."""
    cost = spec.relative_cost()
    ref, seconds = min(measured, key=lambda item: abs(math.log(item[0].relative_cost() / cost)))
    return seconds * cost / ref.relative_cost()
