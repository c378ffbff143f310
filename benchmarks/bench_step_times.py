"""Benchmark: real training-step times over the planner's candidate grid, four runtime variants each.

For every (image size, base width, batch size) of the grid, the step the planner times
(:class:`pedseg.training.timing.StepRunner`: the real MultiDomainUNet, depth 5, the trainer's
dsl-contrastive + dice-ce losses, on-device augmentation, backward, Adam) is measured in four
variants side by side: fp32 NCHW, fp32 channels_last, bf16 autocast NCHW, bf16 channels_last. Each
variant gets ``--warmup`` untimed steps, then the variants' timed steps are interleaved (rotating
order, so load from other processes hits all alike) and the median of ``--steps`` is kept. Classes
(5, 6) = pelvis (4 labels) + spine (5 labels) with background, so ``--record`` can store the
results in the step-time cache that ``pedseg plan --domains pelvis spine`` reads.

On a shared machine a grid point is retried (``--retries``, ``--pause`` apart, or after waiting up
to ``--quiet-wait`` seconds for other runnable processes to go away) while this process gets less
than ``--min-share`` of its threads' CPU time; every point is kept in a JSON file beside
the Markdown table, and ``--resume`` re-measures only the points not yet measured cleanly, so the
grid can be completed over several quiet windows.

    python3 benchmarks/bench_step_times.py [--sizes 96 128 160] [--widths 8 16 32]
        [--batches 16 32] [--steps 5] [--record] [--resume]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from pedseg.runtime import configure_threads
from pedseg.training.timing import Machine, StepRunner, StepSpec, StepTimeCache, detect_machine

VARIANTS = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))
NAMES = ("fp32 NCHW", "fp32 CL", "bf16 NCHW", "bf16 CL")
CLASSES = (5, 6)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}/{five:.2f}/{fifteen:.2f}"


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return "unknown"
    flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    present = set(flags.partition(":")[2].split())
    return ", ".join(f"{w}: {'yes' if w in present else 'no'}" for w in wanted)


def others_running(samples: int = 10, every: float = 0.5) -> float:
    """Mean number of other runnable tasks (``/proc/loadavg`` field 4, less this reader)."""
    counts = []
    for _ in range(samples):
        try:
            running = Path("/proc/loadavg").read_text(encoding="utf-8").split()[3].split("/")[0]
        except (OSError, IndexError):
            return 0.0
        counts.append(max(0, int(running) - 1))
        time.sleep(every)
    return float(statistics.mean(counts))


def wait_for_quiet(max_wait: float, threshold: float = 0.5) -> float:
    """Sleep until other processes leave the CPUs (at most ``max_wait`` s); the last reading."""
    deadline = time.monotonic() + max_wait
    busy = others_running()
    while busy > threshold and time.monotonic() < deadline:
        time.sleep(15)
        busy = others_running()
    return busy


def interleaved(specs: list[StepSpec], *, device: str, warmup: int, steps: int) -> list[float]:
    """Median step seconds per spec, timed steps interleaved in rotating order."""
    runners = [StepRunner(spec, device=device) for spec in specs]
    for runner in runners:
        for _ in range(warmup):
            runner.step()
    timed: list[list[float]] = [[] for _ in runners]
    for round_ in range(steps):
        for offset in range(len(runners)):
            k = (round_ + offset) % len(runners)
            timed[k].append(runners[k].step())
    return [float(statistics.median(t)) for t in timed]


def measure_point(
    size: int, width: int, batch: int, args: argparse.Namespace
) -> tuple[list[StepSpec], dict[str, Any]]:
    specs = [
        StepSpec(
            image_size=size,
            base_width=width,
            depth=5,
            batch_size=batch,
            num_classes=CLASSES,
            precision=precision,
            channels_last=channels_last,
        )
        for precision, channels_last in VARIANTS
    ]
    for attempt in range(args.retries + 1):
        if args.quiet_wait > 0:
            wait_for_quiet(args.quiet_wait)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        times = interleaved(specs, device=args.device, warmup=args.warmup, steps=args.steps)
        share = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
        share /= max(1, torch.get_num_threads())
        if share >= args.min_share or attempt == args.retries:
            break
        print(f"  {size}/{width}/{batch}: cpu share {share:.2f}, retrying", flush=True)
        if args.quiet_wait <= 0:
            time.sleep(args.pause)
    point = {"times": times, "share": share, "load": load(), "at": dt.datetime.now().isoformat()}
    return specs, point


def row(key: str, point: dict[str, Any]) -> str:
    size, width, batch = key.split("x")
    times = point["times"]
    best = min(range(len(times)), key=times.__getitem__)
    cells = " | ".join(f"{t:.3f}" for t in times)
    flag = "" if point["clean"] else " (contended)"
    return (
        f"| {size} | {width} | {batch} | {cells} | {times[0] / times[2]:.2f} | "
        f"{times[0] / times[1]:.2f} | {NAMES[best]} | {1000 * times[best] / int(batch):.1f} | "
        f"{point['share']:.2f}{flag} | {point['load']} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 128, 160])
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--record", action="store_true", help="Store results in the step cache.")
    parser.add_argument("--resume", action="store_true", help="Keep cleanly measured points.")
    parser.add_argument(
        "--min-share",
        type=float,
        default=0.85,
        help="Retry a grid point when this process got less than this share of its threads' CPU.",
    )
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--pause", type=float, default=30.0, help="Seconds to wait before a retry.")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="Before each attempt, wait up to this many seconds for other processes to go idle.",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/step_times.md"))
    args = parser.parse_args(argv)

    configure_threads()
    machine: Machine = detect_machine(args.device)
    cache = StepTimeCache() if args.record else None
    side = args.out.with_suffix(".json")
    state: dict[str, Any] = {"points": {}, "runs": []}
    if args.resume and side.is_file():
        state = json.loads(side.read_text(encoding="utf-8"))
    before, started = uptime(), time.perf_counter()
    grid = [(s, w, b) for s in args.sizes for w in args.widths for b in args.batches]
    for size, width, batch in grid:
        key = f"{size}x{width}x{batch}"
        if state["points"].get(key, {}).get("clean"):
            continue
        specs, point = measure_point(size, width, batch, args)
        point["clean"] = point["share"] >= args.min_share
        state["points"][key] = point
        if cache is not None:
            for spec, seconds in zip(specs, point["times"], strict=True):
                cache.put(machine, spec, seconds)
        print(row(key, point), flush=True)
        side.write_text(json.dumps(state, indent=1), encoding="utf-8")
    command = shlex.join(["python3", "benchmarks/bench_step_times.py", *sys.argv[1:]])
    state["runs"].append(
        {
            "command": command,
            "before": before,
            "after": uptime(),
            "wall_s": round(time.perf_counter() - started),
        }
    )
    side.write_text(json.dumps(state, indent=1), encoding="utf-8")
    write_table(args, machine, state, grid)
    print(f"wrote {args.out}", flush=True)
    return 0


def write_table(
    args: argparse.Namespace, machine: Machine, state: dict[str, Any], grid: list[Any]
) -> None:
    runs = [
        f"- run: `{r['command']}`, {r['wall_s']} s; load before `{r['before']}`, "
        f"after `{r['after']}`"
        for r in state["runs"]
    ]
    header = [
        f"# Training-step times over the planner's grid ({dt.date.today().isoformat()})",
        "",
        f"- machine: {machine.describe()}; `lscpu` model {machine.name!r}; {cpu_flags()}",
        f"- versions: python {platform.python_version()}, torch {torch.__version__}",
        "- step: `pedseg.training.timing.StepRunner` (real MultiDomainUNet depth 5, "
        "dsl-contrastive + dice-ce, classes (5, 6) = pelvis + spine, on-device augmentation, "
        f"backward, Adam); {args.warmup} warm-up + median of {args.steps} timed steps per "
        "variant, the variants' steps interleaved",
        *runs,
        "",
        "Seconds per step; ratios > 1 mean the variant is faster than fp32 NCHW. CPU share: the "
        "process's CPU time / (wall time x torch threads) over the grid point; below "
        f"{args.min_share} other processes were competing for the cores (such a point was "
        f"retried up to {args.retries} times, {args.pause:.0f} s apart, and is marked).",
        "",
        "| image | width | batch | fp32 NCHW | fp32 CL | bf16 NCHW | bf16 CL | bf16/fp32 (NCHW) "
        "| CL/NCHW (fp32) | fastest | ms/slice (fastest) | CPU share | load 1/5/15 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    rows = [row(k, state["points"][k]) for k in (f"{s}x{w}x{b}" for s, w, b in grid)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join([*header, *rows]) + "\n", encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
