"""Measured training-step times per machine and candidate configuration, cached on disk.

:func:`measure_step` times the real thing: the :class:`~pedseg.models.unet.MultiDomainUNet`
a :class:`StepSpec` describes, a synthetic batch chunked per domain as the sampler chunks it, moved to
the device and augmented there, the trainer's losses (:func:`pedseg.training.step.compute_losses`)
under the spec's autocast, backward and the Adam step; ``warmup`` untimed steps, then the median of
``steps`` timed ones (a CUDA device is synchronised before each clock reading). Reading batches from
the slice cache is not included (it is a memory-mapped copy, small next to a step). While the
timed steps run, :class:`~pedseg.training.contention.CpuWatch` notes how much of the CPUs other
processes took (:attr:`StepTiming.others`).

Times are cached per machine (:class:`Machine`: device type, CPU model or GPU name, cores, torch
threads, torch version) and spec in ``$PEDSEG_HOME/step_times.json``, written atomically, with the
other processes' share. A time measured while others took more than
:data:`~pedseg.training.contention.CONTENDED_SHARE` of the CPUs is measured again when next asked
for (the faster of the two is kept: other jobs only slow a step down), and :class:`CachedTimer`
lists the times it had to use although contended, for the plan to say so. A damaged file is
ignored with a warning and rewritten on the next measurement; a damaged entry is skipped. The
clock and the timer are arguments, so tests inject them and never time anything real.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pedseg.domains.registry import pedseg_home
from pedseg.errors import ConfigError
from pedseg.io.atomic import write_text_atomic
from pedseg.training.contention import CpuWatch, is_contended

__all__ = [
    "PRECISIONS",
    "CachedTimer",
    "Clock",
    "Machine",
    "StepRunner",
    "StepSpec",
    "StepTimeCache",
    "StepTiming",
    "Timer",
    "detect_machine",
    "measure_step",
]

logger = logging.getLogger(__name__)

TIMES_FORMAT = 1
TIMES_FILE = "step_times.json"
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
_SCHEMES = ("joint", "dsl", "dsl-contrastive")
Clock = Callable[[], float]


@dataclass(frozen=True)
class StepSpec:
    """One candidate training configuration, as far as it costs time.

    ``num_classes`` holds each domain's head size (its labels + background), in domain order; the
    global batch is split over the domains as :func:`pedseg.data.sampler.domain_counts` splits it.
    ``precision`` is ``fp32`` or ``bf16`` (autocast).
    """

    image_size: int
    base_width: int
    depth: int
    batch_size: int
    num_classes: tuple[int, ...]
    arch: str = "unet"
    scheme: str = "dsl-contrastive"
    seg_loss: str = "dice-ce"
    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_classes", tuple(self.num_classes))
        for name, low in (("image_size", 16), ("base_width", 1), ("depth", 2), ("batch_size", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.image_size % 2 ** (self.depth - 1):
            raise ConfigError(
                f"image_size {self.image_size} must be a multiple of 2**(depth - 1) = "
                f"{2 ** (self.depth - 1)}"
            )
        if not self.num_classes or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 2 for c in self.num_classes
        ):
            raise ConfigError(f"num_classes must be integers >= 2, got {self.num_classes!r}")
        if self.batch_size < 2 * len(self.num_classes):
            raise ConfigError(
                f"batch_size must be >= 2 per domain, got {self.batch_size} for "
                f"{len(self.num_classes)} domains"
            )
        if self.scheme not in _SCHEMES:
            raise ConfigError(f"scheme must be one of {', '.join(_SCHEMES)}, got {self.scheme!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if not isinstance(self.channels_last, bool):
            raise ConfigError(f"channels_last must be true or false, got {self.channels_last!r}")

    @property
    def num_domains(self) -> int:
        return len(self.num_classes)

    def key(self) -> str:
        """A stable string naming everything that costs time."""
        classes = "-".join(str(c) for c in self.num_classes)
        layout = "cl" if self.channels_last else "nchw"
        return (
            f"{self.arch}|{self.scheme}|{self.seg_loss}|{self.image_size}|w{self.base_width}|"
            f"d{self.depth}|b{self.batch_size}|c{classes}|{self.precision}|{layout}"
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["num_classes"] = list(self.num_classes)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> StepSpec:
        known = {f for f in cls.__dataclass_fields__}
        if not isinstance(raw, Mapping) or set(raw) - known:
            raise ConfigError(f"step spec must be a mapping with keys {sorted(known)}, got {raw!r}")
        return cls(**raw)

    def relative_cost(self) -> float:
        """Convolution work up to a constant: every level of a UNet costs width² x pixels."""
        return float(self.base_width**2 * self.image_size**2 * self.batch_size * self.depth)


@dataclass(frozen=True)
class Machine:
    """What a step time depends on besides the spec."""

    device: str
    name: str
    cores: int
    threads: int
    torch_version: str

    def key(self) -> str:
        return f"{self.device}|{self.name}|{self.cores}c|{self.threads}t|torch {self.torch_version}"

    def describe(self) -> str:
        if self.device == "cpu":
            return f"{self.name} ({self.cores} cores, {self.threads} torch threads)"
        return f"{self.name} (torch {self.torch_version})"


def _cpu_name() -> str:
    try:
        with Path("/proc/cpuinfo").open(encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.partition(":")[2].strip() or "unknown CPU"
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def detect_machine(device: str) -> Machine:
    """The :class:`Machine` of ``device`` (``cpu``, ``cuda`` or ``cuda:N``) in this process."""
    import torch

    if device == "cpu":
        name = _cpu_name()
    elif device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        raise ConfigError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    return Machine(
        device="cpu" if device == "cpu" else "cuda",
        name=name,
        cores=_cores(),
        threads=torch.get_num_threads(),
        torch_version=str(torch.__version__),
    )


def synthetic_batch(spec: StepSpec, *, step: int, seed: int = 0) -> Any:
    """A :class:`~pedseg.training.step.HostBatch` of noise with disc-shaped labels per class."""
    from pedseg.data.sampler import domain_counts
    from pedseg.training.step import HostBatch

    rng = np.random.default_rng([seed, step])
    size, batch = spec.image_size, spec.batch_size
    counts = domain_counts(batch, spec.num_domains, step=step)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = rng.normal(0.0, 1.0, (batch, 1, size, size)).astype(np.float32)
    targets = np.zeros((batch, size, size), dtype=np.int64)
    for i, k in enumerate(np.repeat(np.arange(spec.num_domains), counts)):
        for c in range(1, spec.num_classes[k]):
            cy, cx, r = rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75), rng.uniform(0.05, 0.2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
            targets[i][disc] = c
            images[i, 0][disc] += c
    chunks = [(k, n) for k, n in enumerate(counts) if n > 0]
    positions = np.arange(batch, dtype=np.int64)
    return HostBatch(images=images, targets=targets, chunks=chunks, positions=positions)


class StepRunner:
    """One spec's model, optimizer and two synthetic batches; :meth:`step` times one step."""

    def __init__(
        self,
        spec: StepSpec,
        *,
        device: str = "cpu",
        seed: int = 0,
        clock: Clock = time.perf_counter,
    ) -> None:
        import torch

        from pedseg.data.augment import AugmentConfig
        from pedseg.models.build import ModelConfig, build_model
        from pedseg.runtime import resolve_device

        self.spec, self.seed, self.clock = spec, seed, clock
        self.device = resolve_device(device)
        torch.manual_seed(seed)
        norm = "bn" if spec.scheme == "joint" else "dsbn"
        config = ModelConfig(
            arch=spec.arch, base_width=spec.base_width, depth=spec.depth, norm=norm
        )
        classes = [sum(spec.num_classes)] if spec.scheme == "joint" else list(spec.num_classes)
        model = build_model(config, num_classes=classes).to(self.device).train()
        if spec.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        self.dtype = torch.bfloat16 if spec.precision == "bf16" else None
        self.batches = [synthetic_batch(spec, step=i, seed=seed) for i in range(2)]
        self.augment = AugmentConfig()
        self.steps = 0

    def step(self) -> float:
        """Run one training step; its seconds by the clock (two readings, device synchronised)."""
        import torch

        from pedseg.runtime import autocast
        from pedseg.training.step import LossSpec, compute_losses, to_device

        spec, target = self.spec, self.device
        host = self.batches[self.steps % 2]
        self.steps += 1
        if target.type == "cuda":
            torch.cuda.synchronize(target)
        start = self.clock()
        images, targets = to_device(
            host,
            device=target,
            channels_last=spec.channels_last,
            augment=self.augment,
            global_size=spec.batch_size,
            seed=self.seed,
            epoch=1,
            step=self.steps,
        )
        with autocast(target, self.dtype):
            terms = compute_losses(
                self.model,
                images,
                targets,
                host.chunks,
                loss=LossSpec(spec.scheme, tau=0.1, lam=0.1, seg_loss=spec.seg_loss),
            )
        bool(torch.isfinite(terms.total))  # the trainer's finite-loss check syncs here too
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        self.optimizer.step()
        if target.type == "cuda":
            torch.cuda.synchronize(target)
        return float(self.clock() - start)


@dataclass(frozen=True)
class StepTiming:
    """A measured step time and the share of the CPUs other processes took meanwhile (``None``:
    unknown, see :class:`~pedseg.training.contention.CpuWatch`)."""

    seconds: float
    others: float | None = None

    @property
    def contended(self) -> bool:
        return is_contended(self.others)

    def kept_over(self, cached: StepTiming | None) -> StepTiming:
        """This new measurement, or ``cached`` where both are contended and ``cached`` is faster
        (other jobs only slow a step down)."""
        if cached is not None and self.contended and cached.seconds < self.seconds:
            return cached
        return self


def measure_step(
    spec: StepSpec,
    *,
    device: str = "cpu",
    warmup: int = 2,
    steps: int = 3,
    clock: Clock = time.perf_counter,
    seed: int = 0,
    watch: Callable[[], CpuWatch] = CpuWatch,
) -> StepTiming:
    """The median seconds of ``steps`` training steps of ``spec`` after ``warmup`` (module doc),
    with the other processes' share of the CPUs during the timed steps."""
    if warmup < 0 or steps < 1:
        raise ConfigError(f"need warmup >= 0 and steps >= 1, got {warmup} and {steps}")
    runner = StepRunner(spec, device=device, seed=seed, clock=clock)
    for _ in range(warmup):
        runner.step()
    with watch() as watching:
        seconds = float(statistics.median(runner.step() for _ in range(steps)))
    return StepTiming(seconds, watching.others)


Timer = Callable[[StepSpec], float]
"""Seconds per training step of a spec (on the machine the planner plans for)."""


class StepTimeCache:
    """Step times by (machine, spec) in one JSON file (default ``$PEDSEG_HOME/step_times.json``)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else pedseg_home() / TIMES_FILE

    def _load(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or raw.get("format") != TIMES_FORMAT:
                raise ValueError(f"format is not {TIMES_FORMAT}")
            entries = raw["entries"]
            if not isinstance(entries, dict):
                raise ValueError("entries is not a mapping")
        except (OSError, ValueError, KeyError) as exc:
            logger.warning(
                "ignoring the damaged step-time cache %s (%s); it is rewritten on the next "
                "measurement",
                self.path,
                exc,
            )
            return {}
        return {str(k): v for k, v in entries.items() if isinstance(v, dict)}

    def get(self, machine: Machine, spec: StepSpec) -> float | None:
        """The cached seconds per step, or ``None``."""
        entry = self.entry(machine, spec)
        return None if entry is None else entry.seconds

    def entry(self, machine: Machine, spec: StepSpec) -> StepTiming | None:
        """The cached timing (``others`` is ``None`` in entries written before it was recorded)."""
        entry = self._load().get(_entry_key(machine, spec))
        if entry is None:
            return None
        seconds, others = entry.get("seconds"), entry.get("others_cpu")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            logger.warning("ignoring a damaged entry of %s: %s", self.path, spec.key())
            return None
        if isinstance(others, bool) or not isinstance(others, int | float) or not 0 <= others <= 1:
            others = None
        return StepTiming(float(seconds), None if others is None else float(others))

    def put(
        self, machine: Machine, spec: StepSpec, seconds: float, *, others: float | None = None
    ) -> None:
        """Record ``seconds`` and the other processes' share (atomically rewriting the file)."""
        if not seconds > 0:
            raise ConfigError(f"a step time must be > 0 seconds, got {seconds!r}")
        entries = self._load()
        entries[_entry_key(machine, spec)] = {
            "machine": asdict(machine),
            "spec": spec.to_dict(),
            "seconds": float(seconds),
            "others_cpu": None if others is None else round(float(others), 3),
            "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        payload = {"format": TIMES_FORMAT, "entries": dict(sorted(entries.items()))}
        write_text_atomic(self.path, json.dumps(payload, indent=1) + "\n")


def _entry_key(machine: Machine, spec: StepSpec) -> str:
    return f"{machine.key()} :: {spec.key()}"


@dataclass
class CachedTimer:
    """A :data:`Timer` that answers from ``cache`` and measures (then caches) what it lacks or
    what was measured while other processes took the CPUs (see the module docstring)."""

    machine: Machine
    cache: StepTimeCache
    measure: Callable[[StepSpec], float | StepTiming]
    measured: list[StepSpec] = field(default_factory=list)
    """The specs this timer measured (not found in the cache, or found contended)."""
    contended: list[tuple[StepSpec, float]] = field(default_factory=list)
    """Specs whose time was used although measured while others took this share of the CPUs."""

    def __call__(self, spec: StepSpec) -> float:
        cached = self.cache.entry(self.machine, spec)
        if cached is not None and not cached.contended:
            return cached.seconds
        if cached is None:
            logger.info("measuring the step time of %s on %s", spec.key(), self.machine.describe())
        else:
            logger.info(
                "measuring the step time of %s again: cached while other processes took %.0f %% "
                "of the CPUs",
                spec.key(),
                100 * (cached.others or 0.0),
            )
        result = self.measure(spec)
        fresh = result if isinstance(result, StepTiming) else StepTiming(float(result))
        timing = fresh.kept_over(cached)
        self.cache.put(self.machine, spec, timing.seconds, others=timing.others)
        self.measured.append(spec)
        if timing.contended:
            self.contended.append((spec, float(timing.others or 0.0)))
        return timing.seconds
