"""A training plan: the configuration that fits a time budget on a device, with one reason per choice.

:func:`make_plan` turns dataset fingerprints, a budget and measured step times into a frozen
:class:`Plan` (the rules: :mod:`pedseg.planning.choices` and :mod:`pedseg.planning.search`).
A plan is data: ``plan.json`` (:func:`write_plan` / :func:`read_plan`, strict and versioned) and
:func:`train_kwargs` turns it into :class:`~pedseg.training.config.TrainConfig` keyword arguments,
options the user gave explicitly overriding the plan's.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from pedseg.data.fingerprint import Fingerprint
from pedseg.data.postprocess_rules import LabelPostprocess, choose_postprocess
from pedseg.errors import ConfigError, PlanError
from pedseg.io.atomic import write_text_atomic
from pedseg.io.strictjson import Reader, load_json_object
from pedseg.planning.budget import format_duration
from pedseg.planning.choices import (
    PlanOptions,
    choose_image_size,
    costs_of,
    shrunk_reason,
)
from pedseg.planning.reasons import (
    loss_reason,
    model_reason,
    schedule_reason,
    steps_reason,
    time_reason,
)
from pedseg.planning.search import Variant, candidates, choose_variant, device_variants, search
from pedseg.training.timing import Timer

__all__ = [
    "OVERRIDABLE",
    "PLAN_FORMAT",
    "Plan",
    "make_plan",
    "read_plan",
    "train_kwargs",
    "write_plan",
]

PLAN_FORMAT = 1
#: Plan fields the user may fix (everything else follows from them).
_TRAIN_KEYS = (
    "arch",
    "base_width",
    "depth",
    "batch_size",
    "epochs",
    "steps_per_epoch",
    "lr",
    "schedule",
    "warmup_steps",
    "min_lr_ratio",
    "seg_loss",
    "amp",
    "channels_last",
)
OVERRIDABLE: frozenset[str] = frozenset({"image_size", *_TRAIN_KEYS})
_AMPS = ("off", "bf16")


@dataclass(frozen=True)
class Plan:
    """What to train and why; ``reasons`` holds ``(choice, one-line reason)`` in display order."""

    domains: tuple[str, ...]
    content_keys: tuple[str, ...]
    device: str
    machine: str
    budget_s: float
    image_size: int
    arch: str
    base_width: int
    depth: int
    batch_size: int
    amp: str
    channels_last: bool
    steps_per_epoch: int
    epochs: int
    total_steps: int
    lr: float
    schedule: str
    warmup_steps: int
    min_lr_ratio: float
    seg_loss: str
    step_seconds: float
    expected_seconds: float
    postprocess: tuple[LabelPostprocess, ...]
    reasons: tuple[tuple[str, str], ...]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": PLAN_FORMAT, **asdict(self)}
        out["domains"] = list(self.domains)
        out["content_keys"] = list(self.content_keys)
        out["postprocess"] = [asdict(p) for p in self.postprocess]
        out["reasons"] = [{"choice": c, "reason": r} for c, r in self.reasons]
        return out

    @classmethod
    def from_dict(cls, raw: Any, *, source: str = "plan") -> Plan:
        """Strict inverse of :meth:`to_dict`; problems raise :class:`PlanError` naming the field."""
        r = raw if isinstance(raw, Reader) else Reader(raw, source=source)
        r.check_keys(["format", *(f.name for f in fields(cls))])
        if r.integer("format") != PLAN_FORMAT:
            r.fail(f"must be {PLAN_FORMAT} (this pedseg's plan format); make a new plan", "format")
        plan = cls(
            domains=_names(r, "domains"),
            content_keys=_names(r, "content_keys"),
            device=r.text("device", choices=("cpu", "cuda")),
            machine=r.text("machine"),
            budget_s=r.number("budget_s", low=0.0),
            image_size=r.integer("image_size", low=16),
            arch=r.text("arch"),
            base_width=r.integer("base_width", low=1),
            depth=r.integer("depth", low=2),
            batch_size=r.integer("batch_size", low=2),
            amp=r.text("amp", choices=_AMPS),
            channels_last=r.flag("channels_last"),
            steps_per_epoch=r.integer("steps_per_epoch", low=1),
            epochs=r.integer("epochs", low=1),
            total_steps=r.integer("total_steps", low=1),
            lr=r.number("lr", low=0.0),
            schedule=r.text("schedule", choices=("constant", "cosine", "poly")),
            warmup_steps=r.integer("warmup_steps", low=0),
            min_lr_ratio=r.number("min_lr_ratio", low=0.0, high=1.0),
            seg_loss=r.text("seg_loss", choices=("ce", "dice-ce")),
            step_seconds=r.number("step_seconds", low=0.0),
            expected_seconds=r.number("expected_seconds", low=0.0),
            postprocess=tuple(_postprocess(c) for c in r.children("postprocess")),
            reasons=tuple(_reason(c) for c in r.children("reasons")),
        )
        if plan.total_steps != plan.epochs * plan.steps_per_epoch:
            r.fail(
                f"is {plan.total_steps}, but epochs x steps_per_epoch is "
                f"{plan.epochs * plan.steps_per_epoch}; make a new plan",
                "total_steps",
            )
        if len(plan.content_keys) != len(plan.domains):
            r.fail("must hold one key per domain", "content_keys")
        return plan


def _names(r: Reader, name: str) -> tuple[str, ...]:
    values = r.items(name)
    if not values or not all(isinstance(v, str) and v for v in values):
        r.fail("must be a non-empty list of names", name)
    return tuple(values)


def _postprocess(r: Reader) -> LabelPostprocess:
    r.check_keys([f.name for f in fields(LabelPostprocess)])
    return LabelPostprocess(
        domain=r.text("domain"),
        label=r.text("label"),
        keep_largest=r.integer("keep_largest", low=0),
        min_volume_mm3=r.number("min_volume_mm3", low=0.0),
        reason=r.text("reason"),
    )


def _reason(r: Reader) -> tuple[str, str]:
    r.check_keys(["choice", "reason"])
    return r.text("choice"), r.text("reason")


def write_plan(plan: Plan, path: Path, *, overwrite: bool = False) -> Path:
    """Write ``plan`` to ``path`` atomically; an existing file needs ``overwrite``."""
    write_text_atomic(path, json.dumps(plan.to_dict(), indent=1) + "\n", overwrite=overwrite)
    return Path(path)


def read_plan(path: Path) -> Plan:
    """Read and validate ``plan.json``; every problem is one :class:`PlanError` line."""
    return Plan.from_dict(load_json_object(Path(path), what="plan"))


def train_kwargs(
    plan: Plan, *, domains: Sequence[str] | None = None, explicit: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """:class:`~pedseg.training.config.TrainConfig` keyword arguments from ``plan``.

    ``explicit`` holds the options the user gave (TrainConfig names); they override the plan's.
    ``domains``, when given, must be the plan's domains (in any order).
    """
    if domains is not None and sorted(domains) != sorted(plan.domains):
        raise PlanError(
            f"the plan was made for domains {', '.join(plan.domains)}, not "
            f"{', '.join(domains)}; run `pedseg plan` for these domains"
        )
    out: dict[str, Any] = {key: getattr(plan, key) for key in _TRAIN_KEYS}
    out["image_size"] = (plan.image_size, plan.image_size)
    out["device"] = plan.device
    out["domains"] = tuple(domains) if domains is not None else plan.domains
    out.update(dict(explicit or {}))
    return out


def make_plan(
    fingerprints: Sequence[Fingerprint],
    *,
    budget_s: float,
    device: str,
    timer: Timer,
    machine: str = "",
    overrides: Mapping[str, Any] | None = None,
    options: PlanOptions | None = None,
) -> Plan:
    """Plan a run on ``device`` (``cpu`` or ``cuda``) of ``budget_s`` seconds (module docstring).

    ``timer`` gives seconds per training step of a :class:`~pedseg.training.timing.StepSpec`
    (measured, cached: :class:`~pedseg.training.timing.CachedTimer`; tests inject one).
    ``overrides`` fixes plan fields (:data:`OVERRIDABLE`); the rest is planned around them.
    """
    opts = options or PlanOptions()
    fixed = _check_overrides(overrides or {})
    _check_inputs(fingerprints, budget_s, device)
    reasons: list[tuple[str, str]] = []
    wanted, sizes = _image_sizes(fingerprints, fixed, opts, reasons)
    base: dict[str, Any] = {
        "depth": fixed.get("depth", opts.depth),
        "num_classes": tuple(len(fp.labels) + 1 for fp in fingerprints),
        "arch": fixed.get("arch", opts.arch),
        "scheme": opts.scheme,
        "seg_loss": fixed.get("seg_loss", opts.seg_loss),
    }
    widths = [fixed["base_width"]] if "base_width" in fixed else list(opts.widths)
    batches = [fixed["batch_size"]] if "batch_size" in fixed else list(opts.batch_sizes)
    specs = candidates(sizes, widths=widths, batches=batches, base=base)
    variant, variant_why = _variant(fixed, device, specs, sizes[0], timer)
    specs = [replace(s, **_variant_fields(variant)) for s in specs]
    costs = costs_of(fingerprints, opts)
    fixed_steps = None
    if "epochs" in fixed and "steps_per_epoch" in fixed:
        fixed_steps = fixed["epochs"] * fixed["steps_per_epoch"]
    choice = search(
        specs, timer=timer, costs=costs, budget_s=budget_s, opts=opts, fixed_steps=fixed_steps
    )
    spec = choice.spec
    if choice.steps < 1 and fixed_steps is None:
        raise PlanError(
            f"a budget of {format_duration(budget_s)} is used up before the first step (cache "
            f"build, validation, profiling: ~{format_duration(costs.fixed_s)}); give a larger "
            "--budget"
        )
    if spec.image_size != wanted:
        reasons[0] = ("image size", shrunk_reason(fingerprints, wanted, spec.image_size, opts))
    reasons.append(("model", model_reason(choice, fixed, opts)))
    reasons.append(("precision", variant_why))
    total, epochs, per_epoch = _steps(choice.steps, choice.epochs, fixed)
    reasons.append(("steps", steps_reason(choice, total, budget_s, opts)))
    reasons.append(
        ("epochs", f"{epochs} x {per_epoch} steps: a validation every {per_epoch} steps")
    )
    lr, schedule, ratio, warmup = _schedule(fixed, opts, total, reasons)
    seg_loss = base["seg_loss"]
    reasons.append(("loss", loss_reason(seg_loss, "seg_loss" in fixed)))
    expected = costs.run_s(total, choice.step_s, spec.batch_size, epochs)
    reasons.append(("wall time", time_reason(expected, budget_s, choice.step_s, total)))
    return Plan(
        domains=tuple(fp.domain for fp in fingerprints),
        content_keys=tuple(fp.content_key for fp in fingerprints),
        device=device,
        machine=machine,
        budget_s=float(budget_s),
        image_size=spec.image_size,
        arch=spec.arch,
        base_width=spec.base_width,
        depth=spec.depth,
        batch_size=spec.batch_size,
        amp="bf16" if spec.precision == "bf16" else "off",
        channels_last=spec.channels_last,
        steps_per_epoch=per_epoch,
        epochs=epochs,
        total_steps=total,
        lr=float(lr),
        schedule=schedule,
        warmup_steps=int(warmup),
        min_lr_ratio=float(ratio),
        seg_loss=seg_loss,
        step_seconds=choice.step_s,
        expected_seconds=expected,
        postprocess=choose_postprocess(fingerprints),
        reasons=(
            *reasons,
            *(
                (f"label chain of {fp.domain}", fp.label_chain.reason)
                for fp in fingerprints
                if fp.label_chain is not None
            ),
        ),
    )


def _image_sizes(
    fingerprints: Sequence[Fingerprint],
    fixed: Mapping[str, Any],
    opts: PlanOptions,
    reasons: list[tuple[str, str]],
) -> tuple[int, list[int]]:
    """The image size the labels want and the candidate sizes to try, largest first (its reason
    appended to ``reasons``)."""
    if "image_size" in fixed:
        wanted = int(fixed["image_size"])
        reasons.append(("image size", f"{wanted} (given)"))
        return wanted, [wanted]
    wanted, why = choose_image_size(fingerprints, opts)
    reasons.append(("image size", why))
    return wanted, sorted((s for s in opts.candidate_sizes if s <= wanted), reverse=True)


def _schedule(
    fixed: Mapping[str, Any], opts: PlanOptions, total: int, reasons: list[tuple[str, str]]
) -> tuple[float, str, float, int]:
    """``(lr, schedule, min_lr_ratio, warmup_steps)`` over ``total`` steps (reason appended)."""
    lr = float(fixed.get("lr", opts.lr))
    schedule = str(fixed.get("schedule", opts.schedule))
    ratio = float(fixed.get("min_lr_ratio", opts.min_lr_ratio))
    warmup = int(fixed.get("warmup_steps", round(opts.warmup_fraction * total)))
    reasons.append(("schedule", schedule_reason(schedule, lr, ratio, warmup, total)))
    return lr, schedule, ratio, warmup


def _check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(overrides) - OVERRIDABLE)
    if unknown:
        raise ConfigError(
            f"cannot fix {unknown[0]!r} in a plan; plan options: {', '.join(sorted(OVERRIDABLE))}"
        )
    fixed = dict(overrides)
    size = fixed.get("image_size")
    if isinstance(size, tuple | list):
        if len(size) != 2 or size[0] != size[1]:
            raise ConfigError(f"the planner plans square images; got image size {size!r}")
        fixed["image_size"] = int(size[0])
    if "amp" in fixed and fixed["amp"] not in _AMPS:
        raise ConfigError(f"amp in a plan must be 'off' or 'bf16', got {fixed['amp']!r}")
    return fixed


def _check_inputs(fingerprints: Sequence[Fingerprint], budget_s: float, device: str) -> None:
    if not fingerprints:
        raise PlanError("a plan needs at least one domain's fingerprint")
    names = [fp.domain for fp in fingerprints]
    if len(set(names)) != len(names):
        raise PlanError(f"domains must not repeat, got {names}")
    if not math.isfinite(budget_s) or budget_s <= 0:
        raise ConfigError(f"the budget must be a positive number of seconds, got {budget_s!r}")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"plan device must be cpu or cuda, got {device!r}")


def _variant_fields(variant: Variant) -> dict[str, Any]:
    return {"precision": variant.precision, "channels_last": variant.channels_last}


def _variant(
    fixed: Mapping[str, Any], device: str, specs: Sequence[Any], size: int, timer: Timer
) -> tuple[Variant, str]:
    options = list(device_variants(device))
    if "amp" in fixed:
        options = [v for v in options if (v.precision == "bf16") == (fixed["amp"] == "bf16")]
    if "channels_last" in fixed:
        options = [v for v in options if v.channels_last == fixed["channels_last"]]
    if not options:  # pragma: no cover - every combination is offered on cpu
        options = [Variant("bf16" if fixed.get("amp") == "bf16" else "fp32", False)]
    at_size = [s for s in specs if s.image_size == size]
    probe = min(at_size, key=lambda s: s.relative_cost())
    return choose_variant(probe, options, timer)


def _steps(steps: int, epochs: int, fixed: Mapping[str, Any]) -> tuple[int, int, int]:
    """(total, epochs, steps per epoch) with total = epochs x steps per epoch."""
    if "epochs" in fixed and "steps_per_epoch" in fixed:
        epochs, per = fixed["epochs"], fixed["steps_per_epoch"]
    elif "epochs" in fixed:
        epochs = fixed["epochs"]
        per = max(1, steps // epochs)
    elif "steps_per_epoch" in fixed:
        per = fixed["steps_per_epoch"]
        epochs = max(1, steps // per)
    else:
        epochs = max(1, min(epochs, steps))
        per = max(1, steps // epochs)
    return epochs * per, epochs, per
