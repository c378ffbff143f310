"""The planner's one-line reasons for the model, steps, schedule, loss and wall time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pedseg.planning.budget import format_duration
from pedseg.planning.choices import PlanOptions
from pedseg.planning.search import Choice

__all__ = ["loss_reason", "model_reason", "schedule_reason", "steps_reason", "time_reason"]


def model_reason(choice: Choice, fixed: Mapping[str, Any], opts: PlanOptions) -> str:
    spec = choice.spec
    given = [k.replace("_", " ") for k in ("base_width", "batch_size", "depth") if k in fixed]
    head = f"width {spec.base_width}, depth {spec.depth}, batch {spec.batch_size}"
    if given:
        head += f" ({', '.join(given)} given)"
    if not choice.fits:
        return f"{head}: the cheapest candidate; nothing leaves {opts.min_steps} steps"
    if choice.rejected:
        return f"{head}: the largest leaving >= {opts.min_steps} steps ({choice.rejected[-1]})"
    return f"{head}: the largest candidate, and it leaves >= {opts.min_steps} steps"


def steps_reason(choice: Choice, total: int, budget_s: float, opts: PlanOptions) -> str:
    short = "" if choice.fits else f"; below the {opts.min_steps} wanted: give a larger budget"
    return (
        f"{total} steps at a measured {choice.step_s:.3f} s per step fill the "
        f"{format_duration(budget_s)} budget after the overheads{short}"
    )


def schedule_reason(schedule: str, lr: float, ratio: float, warmup: int, total: int) -> str:
    if schedule == "constant":
        return f"constant lr {lr:g} after {warmup} warm-up steps (the paper's schedule)"
    return (
        f"Adam {lr:g}, linear warm-up over {warmup} steps, {schedule} decay to {lr * ratio:.2g} "
        f"at step {total}: the run ends converged, not wherever a constant rate leaves it"
    )


def loss_reason(seg_loss: str, given: bool) -> str:
    if given:
        return f"{seg_loss} (given)"
    if seg_loss == "dice-ce":
        return "dice-ce: Dice + cross-entropy learns small structures in far fewer steps than CE"
    return "ce: the paper's cross-entropy"


def time_reason(expected: float, budget_s: float, step_s: float, total: int) -> str:
    steps_s = total * step_s
    return (
        f"about {format_duration(expected)} of the {format_duration(budget_s)} budget: "
        f"{format_duration(steps_s)} of steps, {format_duration(expected - steps_s)} of cache "
        "build, validation and profiling"
    )
