"""Plan a run for domain descriptors in one call: fingerprints, device, measured step times, plan.

:func:`plan_run` is what ``pedseg plan`` (and ``pedseg train --budget``) call: it fingerprints every
domain (cached beside the slice cache), resolves the device, times candidate configurations on it
(cached per machine in ``$PEDSEG_HOME/step_times.json``; ``measure`` replaces the real timer) and
returns the :class:`~pedseg.planning.plan.Plan` with what it used. Step times that had to be used
although other processes took the CPUs while they were measured add a ``timing`` reason to the
plan (the plan is then smaller than the machine allows; planning again on a quiet machine measures
them again).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from pedseg.data.fingerprint import Fingerprint, dataset_fingerprint
from pedseg.domains.spec import DomainSpec
from pedseg.planning.choices import PlanOptions
from pedseg.planning.plan import Plan, make_plan
from pedseg.training.timing import (
    CachedTimer,
    StepSpec,
    StepTimeCache,
    StepTiming,
    detect_machine,
    measure_step,
)

__all__ = ["PlanOutcome", "plan_run"]

PLAN_WARMUP_STEPS = 1
PLAN_TIMED_STEPS = 3


@dataclass(frozen=True)
class PlanOutcome:
    """A plan and what it was made from."""

    plan: Plan
    fingerprints: tuple[Fingerprint, ...]
    measured: tuple[StepSpec, ...]
    """Step specs timed for this plan (the others came from the cache)."""
    times_file: Path


def plan_run(
    specs: Sequence[DomainSpec],
    *,
    budget_s: float,
    device: str = "auto",
    cache_root: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    options: PlanOptions | None = None,
    times: StepTimeCache | None = None,
    measure: Callable[[StepSpec], float | StepTiming] | None = None,
) -> PlanOutcome:
    """Fingerprint ``specs``, time candidates on ``device`` and plan (see the module docstring)."""
    from pedseg.runtime import configure_threads, resolve_device

    fingerprints = tuple(dataset_fingerprint(spec, cache_root=cache_root) for spec in specs)
    configure_threads()
    target = resolve_device(device)
    name = "cpu" if target.type == "cpu" else str(target)
    machine = detect_machine(name)
    cache = times if times is not None else StepTimeCache()
    real = partial(measure_step, device=name, warmup=PLAN_WARMUP_STEPS, steps=PLAN_TIMED_STEPS)
    timer = CachedTimer(machine=machine, cache=cache, measure=measure or real)
    plan = make_plan(
        fingerprints,
        budget_s=budget_s,
        device=target.type,
        timer=timer,
        machine=machine.describe(),
        overrides=overrides,
        options=options,
    )
    if timer.contended:
        plan = replace(plan, reasons=(*plan.reasons, ("timing", contended_reason(timer.contended))))
    return PlanOutcome(
        plan=plan,
        fingerprints=fingerprints,
        measured=tuple(timer.measured),
        times_file=cache.path,
    )


def contended_reason(contended: Sequence[tuple[StepSpec, float]]) -> str:
    """The plan's ``timing`` reason when step times were measured beside other jobs."""
    worst = max(share for _, share in contended)
    count = len({spec.key() for spec, _ in contended})
    times = "time was" if count == 1 else "times were"
    return (
        f"{count} step {times} measured while other processes took up to {100 * worst:.0f} % of "
        "the CPUs: steps will be faster alone and the plan is smaller than this machine allows; "
        "plan again when it is quiet (contended times are measured again)"
    )
