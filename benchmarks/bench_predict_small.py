"""Benchmark: `pedseg predict` of a folder of real volumes, end to end, against the bare network.

Issue 13: for the small models users train on a CPU, ``pedseg predict`` was dominated by
everything but the network. This measures, side by side in one run:

* process start on its own: ``python -c pass`` and ``python -c "import <what predict imports>"``;
* ``pedseg predict FOLDER --model RUN --domain D`` as a subprocess (process start, model and
  profile loading, domain check, every case's read, preprocessing, network, restoring, post-
  processing and writing included), for this checkout and, with ``--baseline-src``, for another
  source tree (e.g. ``git archive`` of the commit before; it needs its own ``--baseline-run``
  copy exported by that code);
* the bare network: onnxruntime on exactly the slices ``predict`` feeds it (prepared by the same
  predictor), batch by batch as ``predict`` does, timed before and after the subprocesses;
* optionally (``--default-cases N``) the same for the default UNet (base width 32, depth 5, the
  domain's classes, random weights, ``image_size`` 256x256) exported to an ONNX folder.

Ratio = end-to-end wall time / bare network (the smaller of the two bare passes). Prints a Markdown
report (machine, load average before and after, wall times, per-stage sums from the case reports).

    python3 benchmarks/bench_predict_small.py --run RUN --data /work/shared/data/pelvis --domain pelvis
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from pedseg.export.cpu import cpu_description
from pedseg.export.onnx import export_domain
from pedseg.inference.backends import OnnxBackend, num_threads
from pedseg.inference.predictor import open_predictor
from pedseg.io import read_volume

IMPORTS = (
    "import pedseg.cli.app, pedseg.cli.predict_cmd, pedseg.inference.batch, "
    "pedseg.inference.recognition, pedseg.inference.predictor, pedseg.runfolder.index, "
    "pedseg.export.onnx, onnx, onnxruntime"
)
"""What ``pedseg predict`` imports from a run folder with ONNX exports (no torch since the
torch-free predict path; before it, the run's loading imported torch)."""


def wall(
    command: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True, cwd=cwd)
    return time.perf_counter() - start


def predict_wall(
    inputs: Path, model: Path, domain: str, out: Path, *, src: Path | None
) -> tuple[float, dict[str, float]]:
    """Wall seconds of one ``pedseg predict`` subprocess and the summed per-case timings."""
    # `python -m` puts the working directory first on sys.path, before PYTHONPATH: run from the
    # output's parent, so that the tree PYTHONPATH names is the one that runs.
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src if src is not None else Path(__file__).resolve().parents[1])
    shutil.rmtree(out, ignore_errors=True)
    command = [sys.executable, "-m", "pedseg", "predict", str(inputs), "--model", str(model)]
    seconds = wall([*command, "--domain", domain, "--out", str(out), "-q"], env=env, cwd=out.parent)
    totals: dict[str, float] = {}
    for report in sorted(out.glob("*.json")):
        if report.name.startswith("pedseg-"):
            continue
        for key, value in json.loads(report.read_text())["timings_s"].items():
            totals[key] = totals.get(key, 0.0) + float(value)
    return seconds, totals


def bare_network(backend: OnnxBackend, stacks: list[np.ndarray], batch: int) -> float:
    start = time.perf_counter()
    for images in stacks:
        for first in range(0, images.shape[0], batch):
            backend(images[first : first + batch, None])
    return time.perf_counter() - start


def prepared(model: Path, domain: str, inputs: list[Path]) -> list[np.ndarray]:
    """The slices ``predict`` feeds the network, prepared by the same predictor."""
    predictor = open_predictor(model, domain, backend="onnx", device="cpu")
    return [predictor.prepare(read_volume(path)).images for path in inputs]


def default_export(run: Path, domain: str, folder: Path) -> Path:
    """The default UNet (random weights) for ``domain``'s classes, exported to ``folder``."""
    import torch

    from pedseg.models import ModelConfig, build_model
    from pedseg.models.segmenter import DomainSegmenter
    from pedseg.runfolder.loading import DomainModel, load_run

    torch.manual_seed(0)
    spec = load_run(run).domain(domain).spec
    net = build_model(ModelConfig(), num_classes=[spec.num_classes]).eval()
    module = DomainSegmenter(net, head=0).eval()
    model = DomainModel(spec, (256, 256), module, "0" * 64, "dsl-contrastive", None)
    export_domain(model, folder / f"{domain}.onnx")
    return folder


def measure(
    key: str,
    label: str,
    inputs: list[Path],
    model: Path,
    domain: str,
    tmp: Path,
    *,
    batch: int,
    baseline: tuple[Path, Path] | None = None,
    repeats: int = 1,
) -> list[str]:
    folder = tmp / f"in-{key}"
    folder.mkdir()
    for path in inputs:
        shutil.copy2(path, folder / path.name)
    stacks = prepared(model, domain, inputs)
    onnx = model / f"{domain}.onnx"  # an ONNX folder, else the run's export
    backend = OnnxBackend(
        onnx if onnx.is_file() else model / "onnx" / f"{domain}.onnx",
        device="cpu",
        threads=num_threads(),
    )
    backend(stacks[0][:batch, None])  # warm-up
    slices = sum(int(s.shape[0]) for s in stacks)
    bare = [bare_network(backend, stacks, batch)]
    # Alternating repeats (this branch, baseline, this branch, ...): the smallest of each, as the
    # machine's noise (about +-1 s here) is larger than the differences measured.
    runs: list[tuple[float, dict[str, float]]] = []
    before_runs: list[tuple[float, dict[str, float]]] = []
    for _ in range(repeats):
        runs.append(predict_wall(folder, model, domain, tmp / f"out-{key}", src=None))
        if baseline is not None:
            before_runs.append(
                predict_wall(folder, baseline[1], domain, tmp / f"base-{key}", src=baseline[0])
            )
    e2e, stages = min(runs, key=lambda run: run[0])
    before = min(before_runs, key=lambda run: run[0]) if before_runs else None
    bare.append(bare_network(backend, stacks, batch))
    network = min(bare)
    rows = [
        f"### {label}: {len(inputs)} cases, {slices} slices, batch {batch}",
        "",
        "| what | wall (s) | / bare network |",
        "|---|---:|---:|",
        f"| bare network, onnxruntime (two passes: {bare[0]:.2f}, {bare[1]:.2f}) | "
        f"{network:.2f} | 1.00 |",
        f"| `pedseg predict` end to end, this branch (best of {len(runs)}) | {e2e:.2f} | "
        f"{e2e / network:.2f} |",
    ]
    if before is not None:
        rows.append(
            f"| `pedseg predict` end to end, baseline (best of {len(before_runs)}) | {before[0]:.2f} | "
            f"{before[0] / network:.2f} |"
        )
    rows.append("")
    for name, totals in (("this branch", stages), *((("baseline", before[1]),) if before else ())):
        parts = ", ".join(f"{k} {v:.2f}" for k, v in totals.items() if "/" not in k)
        rows.append(f"- case reports summed, {name} (s): {parts}")
    rows.append("")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder with an ONNX export")
    parser.add_argument("--data", type=Path, required=True, help="MSD folder (imagesTr/)")
    parser.add_argument("--domain", required=True)
    parser.add_argument("--cases", type=int, default=0, help="first N cases (0: all)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--baseline-src", type=Path, help="source tree to compare with")
    parser.add_argument("--baseline-run", type=Path, help="run exported by the baseline code")
    parser.add_argument(
        "--default-cases", type=int, default=0, help="the default UNet on the N smallest cases"
    )
    parser.add_argument("--skip-small", action="store_true", help="only the default UNet")
    parser.add_argument(
        "--repeats", type=int, default=3, help="end-to-end runs of each tree, alternating"
    )
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    inputs = sorted((args.data / "imagesTr").glob("*.nii.gz"))
    inputs = inputs[: args.cases] if args.cases else inputs
    baseline = None
    if args.baseline_src is not None:
        baseline = (args.baseline_src, args.baseline_run or args.run)
    started = time.perf_counter()
    python_s = min(wall([sys.executable, "-c", "pass"]) for _ in range(3))
    imports_s = min(wall([sys.executable, "-c", IMPORTS]) for _ in range(3))
    torch_s = min(wall([sys.executable, "-c", "import torch"]) for _ in range(3))
    lines = [
        f"# Small-model prediction benchmark ({dt.date.today().isoformat()})",
        "",
        f"- command: `python3 benchmarks/bench_predict_small.py {' '.join(argv or sys.argv[1:])}`",
        f"- machine: {cpu_description()}; intra-op threads {num_threads()}",
        f"- load average before: {' / '.join(f'{v:.2f}' for v in load_before)} (1, 5, 15 min)",
        "",
        "| process start | wall (s) |",
        "|---|---:|",
        f"| `python -c pass` | {python_s:.2f} |",
        f'| `python -c "{IMPORTS}"` (what predict imports) | {imports_s:.2f} |',
        f'| `python -c "import torch"` (no longer among them) | {torch_s:.2f} |',
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="pedseg-bench-small-") as name:
        tmp = Path(name)
        if not args.skip_small:
            lines += measure(
                "small",
                "small model",
                inputs,
                args.run,
                args.domain,
                tmp,
                batch=args.batch_size,
                baseline=baseline,
                repeats=args.repeats,
            )
        if args.default_cases:
            folder = default_export(args.run, args.domain, tmp / "onnx-default")
            smallest = sorted(inputs, key=lambda p: (int(np.prod(nib.load(p).shape)), p.name))
            lines += measure(
                "default",
                "default model (256², width 32, random weights)",
                smallest[: args.default_cases],
                folder,
                args.domain,
                tmp,
                batch=args.batch_size,
            )
    load_after = os.getloadavg()
    lines.append(f"- load average after: {' / '.join(f'{v:.2f}' for v in load_after)}")
    lines.append(f"- benchmark wall time: {time.perf_counter() - started:.0f} s")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
