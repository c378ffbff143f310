"""Benchmark: training throughput of the default model (slices/s, achieved FLOP/s, % of peak).

One full ``dsl-contrastive`` training step as the trainer runs it (pedseg.training.loop): a host batch
of 2 domains split as the sampler splits it (``domain_counts``), moved to the device and augmented
there (flip, translation, rotation), the forward pass with per-domain chunks, Eq. 2 cross-entropy
+ lambda x Eq. 3 supervised contrastive loss (tau = lambda = 0.1), the finite-loss check (a host
sync), backward and the Adam step. Default UNet: base 32, depth 5, 256x256, 4 and 3 classes.

Variants are compared side by side in one run, each with its own copy of the same initial weights and
its own Adam; after ``--warmup`` steps each, their steps are interleaved (rotating order) so that load
from other processes hits all alike, and the median of ``--steps`` is kept:

* CPU: eager fp32 NCHW vs channels_last;
* GPU: fp32 vs bf16 autocast, both channels_last (TF32 left at torch's defaults);
* ``--compile``: adds ``torch.compile`` of the fastest variant (channels_last, bf16 on GPU); an odd
  batch alternates two domain splits (two graphs): give it ``--warmup 2`` or more.

FLOP per slice per step = 3 x the forward FLOPs of ``count_flops`` (the conventional estimate:
backward ~ 2 x forward); augmentation, norms and the optimizer are not counted. Peak: ``--peak-gflops``,
else 170 GFLOP/s on CPU (2-core Zen 3, DESIGN.md) or the bf16 dense tensor-core peak of a known GPU.

    python3 benchmarks/bench_train.py                      # CPU, batch 8, 256x256, 3 steps
    python3 benchmarks/bench_train.py --quick              # 128x128, 2 steps
    python3 benchmarks/bench_train.py --device cuda [--compile]   # batch 32, 20 steps
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pedseg.data.augment import AugmentConfig
from pedseg.data.sampler import domain_counts
from pedseg.errors import PedsegError, TrainingError
from pedseg.export.cpu import cpu_description
from pedseg.models import ModelConfig, MultiDomainUNet, build_model, count_flops
from pedseg.runtime import autocast, resolve_amp, resolve_device
from pedseg.training.step import HostBatch, LossSpec, compute_losses, to_device

NUM_CLASSES = (4, 3)  # two domains
CPU_PEAK_GFLOPS = 170.0
# bf16 dense tensor-core peaks (TFLOP/s), most specific name first.
GPU_PEAKS_TFLOPS = (
    ("H100 PCIE", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("GH200", 989.0),
    ("A100", 312.0),
)


@dataclass(frozen=True)
class Variant:
    name: str
    channels_last: bool
    amp: torch.dtype | None
    compiled: bool = False


@dataclass
class Runner:
    variant: Variant
    model: MultiDomainUNet
    step_fn: nn.Module
    optimizer: torch.optim.Optimizer
    seconds: list[float]
    peak_bytes: int = 0


def device_peak_gflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """The peak to compare with, and where it comes from."""
    if override is not None:
        return override, "--peak-gflops"
    if device.type == "cpu":
        return CPU_PEAK_GFLOPS, "CPU fp32 peak of the 2-core Zen 3, DESIGN.md"
    name = torch.cuda.get_device_name(device).upper()
    for key, tflops in GPU_PEAKS_TFLOPS:
        if key in name:
            return tflops * 1000.0, f"{key} bf16 dense tensor-core peak"
    return None, f"unknown GPU {name!r}: pass --peak-gflops"


def variants_for(device: torch.device, *, compile_: bool) -> list[Variant]:
    if device.type == "cpu":
        found = [Variant("fp32 NCHW", False, None), Variant("fp32 channels_last", True, None)]
    else:
        bf16 = resolve_amp("bf16", device)
        found = [
            Variant("fp32 channels_last", True, None),
            Variant("bf16 channels_last", True, bf16),
        ]
    if compile_:
        best = found[-1]
        found.append(Variant(f"{best.name} + torch.compile", True, best.amp, compiled=True))
    return found


def synthetic_batch(batch: int, size: int, *, step: int, seed: int) -> HostBatch:
    """Images (N, 1, H, W) float32 and blob-shaped class maps, chunked like the sampler does."""
    rng = np.random.default_rng([seed, step])
    counts = domain_counts(batch, len(NUM_CLASSES), step=step)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = rng.normal(0.0, 1.0, (batch, 1, size, size)).astype(np.float32)
    targets = np.zeros((batch, size, size), dtype=np.int64)
    domain_of = np.repeat(np.arange(len(NUM_CLASSES)), counts)
    for i, k in enumerate(domain_of):
        for c in range(1, NUM_CLASSES[k]):
            cy, cx, r = rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75), rng.uniform(0.05, 0.2)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
            targets[i][blob] = c
            images[i, 0][blob] += 2.0 * c
    return HostBatch(
        images=images,
        targets=targets,
        chunks=[(k, n) for k, n in enumerate(counts) if n > 0],
        positions=np.arange(batch, dtype=np.int64),
    )


def make_runner(base: MultiDomainUNet, variant: Variant, device: torch.device) -> Runner:
    model = copy.deepcopy(base).to(device).train()
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    step_fn: nn.Module = torch.compile(model) if variant.compiled else model  # type: ignore[assignment]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    return Runner(variant, model, step_fn, optimizer, [])


def train_step(runner: Runner, host: HostBatch, device: torch.device, *, step: int) -> float:
    """One full training step as the trainer runs it; returns its wall time in seconds."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    images, targets = to_device(
        host,
        device=device,
        channels_last=runner.variant.channels_last,
        augment=AugmentConfig(),
        global_size=int(host.positions.size),
        seed=0,
        epoch=1,
        step=step,
    )
    with autocast(device, runner.variant.amp):
        terms = compute_losses(
            runner.step_fn, images, targets, host.chunks, loss=LossSpec("dsl-contrastive")
        )
    values = terms.stacked().to("cpu", torch.float64)
    if not bool(torch.isfinite(values).all()):
        raise TrainingError(f"non-finite loss in variant {runner.variant.name!r} at step {step}")
    runner.optimizer.zero_grad(set_to_none=True)
    terms.total.backward()
    runner.optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    if device.type == "cuda":
        runner.peak_bytes = max(runner.peak_bytes, torch.cuda.max_memory_allocated(device))
    return elapsed


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--batch-size", type=int, help="slices per step (default 8 CPU, 32 GPU)")
    parser.add_argument("--steps", type=int, help="timed steps per variant (default 3 CPU, 20 GPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps (default 1 CPU, 5 GPU)")
    parser.add_argument("--image-size", type=int, default=256, help="square slice size")
    parser.add_argument("--quick", action="store_true", help="image 128, 2 steps")
    parser.add_argument("--compile", action="store_true", help="add a torch.compile variant")
    parser.add_argument("--peak-gflops", type=float, help="device peak in GFLOP/s")
    args = parser.parse_args(argv)
    gpu = args.device != "cpu"
    if args.quick:
        args.image_size, args.steps = 128, 2 if args.steps is None else args.steps
    args.batch_size = (32 if gpu else 8) if args.batch_size is None else args.batch_size
    args.steps = (20 if gpu else 3) if args.steps is None else args.steps
    args.warmup = (5 if gpu else 1) if args.warmup is None else args.warmup
    if args.batch_size < 2 * len(NUM_CLASSES):
        parser.error(f"--batch-size must be >= {2 * len(NUM_CLASSES)} (2 per domain)")
    if args.steps < 1 or args.warmup < 0 or args.image_size % 16 or args.image_size < 16:
        parser.error("--steps >= 1, --warmup >= 0, --image-size a positive multiple of 16")
    return args


def run(argv: list[str] | None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    load_before = os.getloadavg()
    torch.manual_seed(0)
    base = build_model(ModelConfig(), num_classes=list(NUM_CLASSES))
    size = args.image_size
    counts = domain_counts(args.batch_size, len(NUM_CLASSES))
    forward = [count_flops(base, size, domain=k) for k in range(len(NUM_CLASSES))]
    # per slice, averaged over the batch's domain split (the 1x1 heads differ)
    step_flop = 3 * sum(f * n for f, n in zip(forward, counts, strict=True)) / args.batch_size
    peak, peak_source = device_peak_gflops(device, args.peak_gflops)
    runners = [make_runner(base, v, device) for v in variants_for(device, compile_=args.compile)]
    batches = [synthetic_batch(args.batch_size, size, step=s, seed=0) for s in range(4)]

    for runner in runners:
        for w in range(args.warmup):
            train_step(runner, batches[w % 4], device, step=w + 1)
    for s in range(args.steps):
        for j in range(len(runners)):
            runner = runners[(s + j) % len(runners)]
            host = batches[(args.warmup + s) % 4]
            runner.seconds.append(train_step(runner, host, device, step=args.warmup + s + 1))
    load_after = os.getloadavg()

    words = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python3 benchmarks/bench_train.py", *map(shlex.quote, words)])
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    split = " + ".join(str(n) for n in counts)
    print(f"# Training-throughput benchmark ({dt.date.today().isoformat()})\n")
    print(f"- command: `{command}`")
    print(f"- machine: {cpu_description()}; GPU: {gpu}; device: {device}")
    print(
        f"- versions: python {platform.python_version()}, torch {torch.__version__}, "
        f"numpy {np.__version__}; intra-op threads {torch.get_num_threads()}"
    )
    print(
        f"- model: UNet base 32, depth 5, classes {list(NUM_CLASSES)} (2 domains, DSBN), "
        f"{size}x{size}; dsl-contrastive, tau = lambda = 0.1; batch {args.batch_size} "
        f"(split {split}), augmentation on the device, Adam"
    )
    print(
        f"- FLOP per slice per step: {step_flop / 1e9:.1f} GFLOP = 3 x forward "
        f"{step_flop / 3e9:.1f} GFLOP (count_flops; backward ~ 2 x forward, conventional estimate)"
    )
    peak_text = f"{peak:.0f} GFLOP/s ({peak_source})" if peak is not None else peak_source
    print(f"- peak: {peak_text}")
    print(
        f"- timing: {args.warmup} warm-up step(s) per variant, then median of {args.steps} "
        "steps per variant, interleaved step by step (rotating order); load average "
        f"(1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load_before)}, "
        f"after {'/'.join(f'{x:.1f}' for x in load_after)}\n"
    )
    memory = device.type == "cuda"
    header = "| variant | step (s) | min-max (s) | ms / slice | slices/s | GFLOP/s | % of peak |"
    print(header + (" peak mem (GiB) |" if memory else ""))
    print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if memory else ""))
    reference = statistics.median(runners[0].seconds)
    for runner in runners:
        median = statistics.median(runner.seconds)
        gflops = step_flop * args.batch_size / median / 1e9
        share = f"{100 * gflops / peak:.1f}" if peak else "-"
        row = (
            f"| {runner.variant.name} | {median:.3f} | {min(runner.seconds):.3f}-"
            f"{max(runner.seconds):.3f} | {1000 * median / args.batch_size:.1f} | "
            f"{args.batch_size / median:.2f} | {gflops:.1f} | {share} |"
        )
        print(row + (f" {runner.peak_bytes / 2**30:.2f} |" if memory else ""))
    print()
    for runner in runners[1:]:
        ratio = reference / statistics.median(runner.seconds)
        print(f"- {runner.variant.name} vs {runners[0].variant.name}: {ratio:.2f}x")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except PedsegError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
