"""Benchmark: ``pedseg demo`` end to end on several seeds (wall time, load, held-out Dice per label).

Runs ``python -m pedseg demo --seed S --out OUT/seed-S --overwrite`` once per seed, one after the
other, and reports per seed: the wall time of the whole command, the CPU time it used, the load
average before and after, the training throughput (slices/s over the training steps, from the run's
``metrics.csv``) and the held-out Dice of every phantom label (``evaluation/<domain>/summary.json``).
The target (issue 10): every label >= 0.80 on each seed, in at most 5 minutes on the 2-core CPU.

    python3 benchmarks/bench_demo.py                         # seeds 0 1 2, into ./bench-demo
    python3 benchmarks/bench_demo.py --seeds 0 --quick       # the smoke size
    python3 benchmarks/bench_demo.py --record                # also write results/demo.md
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pedseg.export.cpu import cpu_description

TARGET_DICE = 0.80
TARGET_SECONDS = 300.0
RESULTS = Path(__file__).resolve().parent / "results" / "demo.md"


@dataclass(frozen=True)
class SeedRun:
    seed: int
    wall: float
    cpu: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    slices_per_s: float
    dice: dict[str, dict[str, float]]


def run_seed(seed: int, out: Path, *, quick: bool, device: str) -> SeedRun:
    """One ``pedseg demo`` run in a child process; its Dice read back from the files it wrote."""
    folder = out / f"seed-{seed}"
    command = [sys.executable, "-m", "pedseg", "demo", "--seed", str(seed), "--out", str(folder)]
    command += ["--overwrite", "--device", device] + (["--quick"] if quick else [])
    before = os.getloadavg()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    dice: dict[str, dict[str, float]] = {}
    for summary_path in sorted((folder / "evaluation").glob("*/summary.json")):
        summary = json.loads(summary_path.read_text("utf-8"))
        dice[summary_path.parent.name] = {
            entry["name"]: float(entry["metrics"]["dice"]["mean"])
            for entry in summary["labels"].values()
        }
    with (folder / "run" / "metrics.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    slices = sum(float(r["slices_per_s"]) * float(r["seconds"]) for r in rows)
    seconds = sum(float(r["seconds"]) for r in rows)
    return SeedRun(
        seed=seed,
        wall=wall,
        cpu=cpu,
        load_before=before,
        load_after=os.getloadavg(),
        slices_per_s=slices / seconds if seconds > 0 else 0.0,
        dice=dice,
    )


def _load(values: tuple[float, float, float]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def report(runs: list[SeedRun], *, command: str) -> str:
    labels = [(d, name) for d, names in runs[0].dice.items() for name in names]
    head = "| seed | wall (s) | CPU (s) | load before | load after | train slices/s | "
    head += " | ".join(f"{d} {name}" for d, name in labels) + " | all >= 0.80 |"
    lines = [
        f"# `pedseg demo` benchmark ({dt.date.today().isoformat()})",
        "",
        f"- command: `{command}`",
        f"- machine: {cpu_description()}; python {platform.python_version()}",
        "",
        head,
        "|" + "---:|" * (6 + len(labels) + 1),
    ]
    for run in runs:
        values = [run.dice[d][name] for d, name in labels]
        ok = "yes" if min(values) >= TARGET_DICE else "no"
        lines.append(
            f"| {run.seed} | {run.wall:.0f} | {run.cpu:.0f} | {_load(run.load_before)} | "
            f"{_load(run.load_after)} | {run.slices_per_s:.1f} | "
            + " | ".join(f"{v:.3f}" for v in values)
            + f" | {ok} |"
        )
    lows = [min(r.dice[d][n] for r in runs) for d, n in labels]
    highs = [max(r.dice[d][n] for r in runs) for d, n in labels]
    lines.append(
        "| min-max | | | | | | "
        + " | ".join(f"{lo:.3f}-{hi:.3f}" for lo, hi in zip(lows, highs, strict=True))
        + " | |"
    )
    slowest = max(r.wall for r in runs)
    lines += [
        "",
        f"- target: every label >= {TARGET_DICE:.2f} on every seed: "
        f"{'met' if min(lows) >= TARGET_DICE else 'NOT met'}; "
        f"at most {TARGET_SECONDS:.0f} s per run: slowest {slowest:.0f} s "
        f"({'met' if slowest <= TARGET_SECONDS else 'not met at this load'})",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("bench-demo"))
    parser.add_argument("--quick", action="store_true", help="the demo's smoke size")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--record", action="store_true", help=f"write {RESULTS}")
    args = parser.parse_args(argv)
    runs = [run_seed(s, args.out, quick=args.quick, device=args.device) for s in args.seeds]
    command = "python3 benchmarks/bench_demo.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report(runs, command=command.strip())
    print(text, end="")
    if args.record:
        RESULTS.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
