"""Benchmark: a step time measured beside another job, and what the planner's timer does with it.

For each variant of one candidate step (default 160², width 8, batch 16, depth 5, pelvis + spine
heads; bf16 autocast and fp32, NCHW and channels_last) the real planner timer
(:class:`~pedseg.training.timing.CachedTimer` over a temporary cache) is asked three times:

1. beside ``--burners`` processes spinning on this process's CPUs (one per CPU by default, what a
   second training on the same cores amounts to): measured, cached with the others' share;
2. alone: the cached time is contended, so it is measured again and the faster kept;
3. alone again: answered from the cache, nothing measured.

Printed per variant: seconds and others' share of each measurement, the slowdown, and whether
each call measured. ``--record`` appends the Markdown to ``benchmarks/results/contention.md``.

    python benchmarks/bench_contention.py [--size 160] [--width 8] [--batch 16] [--record]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from recording import append_record  # benchmarks/recording.py (the script's folder)

from pedseg.export.cpu import cpu_description
from pedseg.runtime import configure_threads
from pedseg.training.timing import (
    CachedTimer,
    StepSpec,
    StepTimeCache,
    StepTiming,
    detect_machine,
    measure_step,
)

VARIANTS = (("bf16", False), ("bf16", True), ("fp32", False), ("fp32", True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--burners", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    configure_threads()
    machine = detect_machine("cpu")
    started = time.monotonic()
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="pedseg-contention-") as scratch:
        cache = StepTimeCache(Path(scratch) / "times.json")
        seen: list[StepTiming] = []

        def measure(spec: StepSpec) -> StepTiming:
            timing = measure_step(spec, device="cpu", warmup=1, steps=3)
            seen.append(timing)
            return timing

        for precision, layout in VARIANTS:
            spec = StepSpec(
                image_size=args.size,
                base_width=args.width,
                depth=5,
                batch_size=args.batch,
                num_classes=(5, 6),
                precision=precision,
                channels_last=layout,
            )
            timer = partial(CachedTimer, machine=machine, cache=cache, measure=measure)
            calls = []
            with _burning(args.burners):
                first = timer()
                calls.append((first(spec), len(first.measured)))
            for _ in range(2):
                again = timer()
                calls.append((again(spec), len(again.measured)))
            rows.append((spec, calls, list(seen)))
            seen.clear()
    text = _report(args, rows, load, time.monotonic() - started)
    print(text)
    if args.record:
        append_record("contention.md", "Step times beside other jobs", text)
    return 0


class _burning:
    """``count`` processes spinning on this process's CPUs, one per CPU, while inside."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        for k in range(self.count):
            code = (
                f"import os; os.sched_setaffinity(0, {{{cpus[k % len(cpus)]}}})\nwhile True: pass"
            )
            self.procs.append(subprocess.Popen([sys.executable, "-c", code]))
        time.sleep(0.5)

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def _share(timing: StepTiming) -> str:
    return "unknown" if timing.others is None else f"{100 * timing.others:.0f} %"


def _report(args: argparse.Namespace, rows: list, load: float, seconds: float) -> str:
    command = (
        f"python benchmarks/bench_contention.py --size {args.size} --width {args.width} "
        f"--batch {args.batch} --burners {args.burners}"
    )
    lines = [
        f"### {args.size}², width {args.width}, batch {args.batch} ({dt.date.today().isoformat()})",
        "",
        f"`{command}` on {cpu_description()}; load {load:.1f} before; wall {seconds:.0f} s. "
        f"Burners: {args.burners} spinning processes pinned to this process's CPUs.",
        "",
        "| variant | beside burners: s/step (others) | alone: s/step (others) | slowdown "
        "| timer answers: beside / alone / alone again | measured per call |",
        "|---|---|---|---:|---|---|",
    ]
    for spec, calls, seen in rows:
        busy, quiet = seen[0], seen[1] if len(seen) > 1 else seen[0]
        name = f"{spec.precision}{' + channels_last' if spec.channels_last else ' NCHW'}"
        answers = " / ".join(f"{value:.3f}" for value, _ in calls)
        measured = " / ".join(str(n) for _, n in calls)
        lines.append(
            f"| {name} | {busy.seconds:.3f} ({_share(busy)}) | {quiet.seconds:.3f} "
            f"({_share(quiet)}) | {busy.seconds / quiet.seconds:.2f}x | {answers} | {measured} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
