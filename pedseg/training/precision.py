"""Precision and memory format chosen by measurement: ``--amp auto`` and channels_last on a CPU.

CPUs differ: one with AVX512-BF16 or AMX runs a bf16-autocast training step 2-4x faster than fp32,
one without emulates bf16 and is slower; channels_last helps some convolution kernels and hurts
others. So on a CPU ``amp="auto"`` (and ``channels_last=None``) time the run's own step (its model,
batch and image size) in fp32 and bf16, NCHW and channels_last, interleaved round by round so
that load from other processes hits all alike, and take the fastest. The times are cached per
machine with the planner's (:mod:`pedseg.training.timing`), so the cost, a few steps per variant,
is paid once per machine and configuration; a cached time measured while other processes took
the CPUs (:mod:`pedseg.training.contention`) is measured again, as the planner does. On a GPU: bf16
where supported and channels_last, as before. The choice is stored in the run's checkpoints and
kept by a resume.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from pedseg.runtime import resolve_amp, resolve_channels_last
from pedseg.training.config import TrainConfig
from pedseg.training.contention import CpuWatch
from pedseg.training.timing import (
    StepRunner,
    StepSpec,
    StepTimeCache,
    StepTiming,
    detect_machine,
)

__all__ = ["Precision", "choose_precision"]

logger = logging.getLogger(__name__)
ROUNDS = 3


@dataclass(frozen=True)
class Precision:
    """How a run computes: bf16 autocast or fp32, channels_last or NCHW."""

    amp: torch.dtype | None
    channels_last: bool

    @property
    def name(self) -> str:
        return "bf16" if self.amp is torch.bfloat16 else "fp32"

    def to_json(self) -> dict[str, object]:
        return {"amp": self.name, "channels_last": self.channels_last}

    @classmethod
    def from_json(cls, raw: object) -> Precision | None:
        if not isinstance(raw, dict) or raw.get("amp") not in ("bf16", "fp32"):
            return None
        amp = torch.bfloat16 if raw["amp"] == "bf16" else None
        return cls(amp=amp, channels_last=bool(raw.get("channels_last")))


Measure = Callable[[Sequence[StepSpec]], dict[StepSpec, float]]


def choose_precision(
    config: TrainConfig,
    device: torch.device,
    *,
    num_classes: Sequence[int],
    image_size: tuple[int, int],
    measure: Measure | None = None,
    times: StepTimeCache | None = None,
) -> Precision:
    """The run's precision: explicit settings as given; on a CPU, what ``auto`` leaves open is
    measured (see the module docstring; ``measure`` replaces the real timing in tests)."""
    amp_open = config.amp == "auto" and device.type == "cpu"
    layout_open = config.channels_last is None and device.type == "cpu"
    if not (amp_open or layout_open) or image_size[0] != image_size[1]:
        return Precision(
            resolve_amp(config.amp, device), resolve_channels_last(config.channels_last, device)
        )
    precisions = ("fp32", "bf16") if amp_open else (_fixed_precision(config),)
    layouts = (False, True) if layout_open else (bool(config.channels_last),)
    specs = [
        StepSpec(
            image_size=image_size[0],
            base_width=config.base_width,
            depth=config.depth,
            batch_size=config.batch_size,
            num_classes=tuple(num_classes),
            arch=config.arch,
            scheme="dsl-contrastive" if config.scheme == "baseline" else config.scheme,
            seg_loss=config.seg_loss,
            precision=precision,
            channels_last=layout,
        )
        for precision in precisions
        for layout in layouts
    ]
    seconds = _cached_or_measured(specs, measure, times)
    best = min(specs, key=lambda spec: seconds[spec])
    shown = ", ".join(
        f"{s.precision}{'+channels_last' if s.channels_last else ''} {seconds[s]:.3f} s"
        for s in specs
    )
    logger.info("training-step times on this CPU: %s; using the fastest", shown)
    return Precision(
        amp=torch.bfloat16 if best.precision == "bf16" else None,
        channels_last=best.channels_last,
    )


def _fixed_precision(config: TrainConfig) -> str:
    return "bf16" if config.amp == "bf16" else "fp32"


def _cached_or_measured(
    specs: Sequence[StepSpec], measure: Measure | None, times: StepTimeCache | None
) -> dict[StepSpec, float]:
    """Cached times, and the missing or contended ones measured together (the choice compares
    what was measured in one go; the cache keeps the faster of a contended pair)."""
    cache = times if times is not None else StepTimeCache()
    machine = detect_machine("cpu")
    cached = {spec: cache.entry(machine, spec) for spec in specs}
    seconds = {spec: e.seconds for spec, e in cached.items() if e is not None and not e.contended}
    missing = [spec for spec in specs if spec not in seconds]
    if missing:
        with CpuWatch() as watch:
            measured = (measure or _measure_interleaved)(missing)
        for spec, value in measured.items():
            kept = StepTiming(float(value), watch.others).kept_over(cached.get(spec))
            cache.put(machine, spec, kept.seconds, others=kept.others)
            seconds[spec] = float(value)
    return seconds


def _measure_interleaved(specs: Sequence[StepSpec]) -> dict[StepSpec, float]:
    """Median of :data:`ROUNDS` steps per spec after one warm-up, the specs taking turns."""
    runners = {spec: StepRunner(spec, device="cpu") for spec in specs}
    for runner in runners.values():
        runner.step()
    samples: dict[StepSpec, list[float]] = {spec: [] for spec in specs}
    for _ in range(ROUNDS):
        for spec, runner in runners.items():
            samples[spec].append(runner.step())
    return {spec: float(statistics.median(values)) for spec, values in samples.items()}
