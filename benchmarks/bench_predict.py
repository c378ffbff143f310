"""Benchmark: `pedseg predict` end to end against the bare network, onnxruntime against PyTorch.

Builds the default UNet (base width 32, depth 5, 4 classes, random weights: timing only), exports it
with pedseg's exporter to a temporary ONNX folder, writes a synthetic 256x256xN int16 NIfTI (N =
``--slices``, slices along z, no resizing) and measures, in one process one after the other:

* the bare network on the volume's N slices in batches of ``--batch-size``: onnxruntime, eager
  PyTorch (NCHW) and PyTorch channels_last (pedseg's torch backend), interleaved batch by batch so
  that load from other processes hits all three alike;
* ``predict`` end to end on the file (read, normalise, slice, network, restore, argmax,
  post-processing, write label map + JSON report), through the same code as ``pedseg predict``,
  followed right away by a bare onnxruntime pass through the same session (the e2e ratio's
  denominator); the report's own network time gives a second, same-window ratio.

It prints a Markdown report: times, slices/s, GFLOP/s achieved, e2e / bare-network (target <= 1.2)
and the onnxruntime speed-up over PyTorch (target >= 1.5x).

    python3 benchmarks/bench_predict.py                  # 200 slices (about 3 min on 2 cores)
    python3 benchmarks/bench_predict.py --slices 48
    python3 benchmarks/bench_predict.py --quick          # 16 slices
    python3 benchmarks/bench_predict.py --device cuda    # GPU: onnxruntime CUDA EP + torch CUDA
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime as ort
import torch

from pedseg.data.preprocess import prepare_volume
from pedseg.domains.spec import DomainSpec
from pedseg.export.cpu import cpu_description
from pedseg.export.onnx import export_domain
from pedseg.inference.backends import OnnxBackend, TorchBackend, num_threads
from pedseg.inference.batch import BatchOptions, predict_cases
from pedseg.inference.predictor import open_predictor
from pedseg.io import read_volume
from pedseg.models import ModelConfig, build_model, count_flops
from pedseg.models.segmenter import DomainSegmenter
from pedseg.runfolder.loading import DomainModel

SIZE = (256, 256)


def gpu_model() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return "none"
    return out.strip().splitlines()[0] if out.strip() else "none"


def synthetic_volume(slices: int, *, seed: int = 0) -> np.ndarray:
    """A 256x256xN int16 MR-like volume: smooth background, three bright blobs, noise."""
    rng = np.random.default_rng(seed)
    grid = np.ogrid[0:1:256j, 0:1:256j, 0 : 1 : complex(0, slices)]
    image = 200.0 + 50.0 * grid[0] + 30.0 * grid[1]
    for centre, axes in (
        ((0.3, 0.4, 0.5), (0.12, 0.1, 0.4)),
        ((0.65, 0.45, 0.4), (0.1, 0.15, 0.3)),
        ((0.5, 0.7, 0.6), (0.15, 0.08, 0.3)),
    ):
        r2 = sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, axes, strict=True))
        image = image + 600.0 * (r2 <= 1.0)
    image = image + rng.normal(0.0, 20.0, size=(256, 256, slices))
    return np.asarray(image, dtype=np.int16)


def timed(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def network_pass(
    backend: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: int
) -> None:
    for start in range(0, images.shape[0], batch):
        backend(images[start : start + batch, None])


def interleaved(
    backends: list[tuple[str, Callable[[np.ndarray], np.ndarray]]],
    images: np.ndarray,
    batch: int,
    repeat: int,
) -> dict[str, float]:
    """Seconds per backend for all slices, measured batch by batch in turn (the order rotates),
    so that load from other processes on a shared machine hits every backend alike."""
    best = {name: float("inf") for name, _ in backends}
    for _ in range(repeat):
        total = dict.fromkeys(best, 0.0)
        for k, start in enumerate(range(0, images.shape[0], batch)):
            chunk = images[start : start + batch, None]
            for j in range(len(backends)):
                name, backend = backends[(j + k) % len(backends)]
                t0 = time.perf_counter()
                backend(chunk)
                total[name] += time.perf_counter() - t0
        best = {name: min(best[name], total[name]) for name in best}
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--slices", type=int, default=200, help="slices of the volume (z)")
    parser.add_argument("--quick", action="store_true", help="16 slices")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--repeat", type=int, default=1, help="passes per measurement (best kept)")
    parser.add_argument("--fp16", action="store_true", help="export fp16 for onnxruntime (GPU)")
    args = parser.parse_args(argv)
    slices = 16 if args.quick else args.slices
    device = args.device
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]

    net = build_model(ModelConfig(), num_classes=[4]).eval()
    gflop = count_flops(net, SIZE) / 1e9
    spec = DomainSpec(
        name="bench",
        labels=((1, "a"), (2, "b"), (3, "c")),
        normalization="zscore",
        slice_axis=2,
        image_size=SIZE,
    )
    module = DomainSegmenter(net, head=0).eval()
    model = DomainModel(spec, SIZE, module, "0" * 64, "dsl-contrastive", None)

    with tempfile.TemporaryDirectory(prefix="pedseg-bench-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        export_domain(model, tmp / "onnx" / "bench.onnx", fp16=args.fp16)
        export_s = time.perf_counter() - t0
        source = tmp / "case.nii.gz"
        nib.save(nib.Nifti1Image(synthetic_volume(slices), np.diag([0.6, 0.6, 1.5, 1.0])), source)
        images = prepare_volume(read_volume(source), spec).images

        backends: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = [
            ("onnxruntime", OnnxBackend(tmp / "onnx" / "bench.onnx", device=device)),
            # private copies: TorchBackend moves its module (device, memory format) in place
            (
                "torch eager (NCHW)",
                TorchBackend(
                    copy.deepcopy(module),
                    device=device,
                    channels_last=False,
                    allow_cpu_fallback=True,
                ),
            ),
            (
                "torch channels_last",
                TorchBackend(
                    copy.deepcopy(module),
                    device=device,
                    channels_last=True,
                    allow_cpu_fallback=True,
                ),
            ),
        ]
        used = {name: getattr(b, "device", "?") for name, b in backends}
        for _, backend in backends:
            backend(images[: args.batch_size, None])  # warm-up (allocations, cuDNN autotune)
        bare = interleaved(backends, images, args.batch_size, args.repeat)

        predictor = open_predictor(
            tmp / "onnx", "bench", backend="onnx", device=device, batch_size=args.batch_size
        )
        predictor.backend(images[: args.batch_size, None])
        reports: list[dict[str, object]] = []

        def e2e() -> None:
            result = predict_cases(
                predictor, [source], BatchOptions(out=tmp / "out", overwrite=True)
            )
            if result.failed:
                raise RuntimeError(result.failed[0].reason)
            reports.append(json.loads((tmp / "out" / "case.json").read_text()))

        # e2e, then the bare network right after it through the same session (adjacent in time)
        e2e_s = timed(e2e, args.repeat)
        adjacent_s = timed(
            partial(network_pass, predictor.backend, images, args.batch_size), args.repeat
        )

    rows = list(bare.items())
    onnx_s = adjacent_s
    timings = reports[-1]["timings_s"]
    assert isinstance(timings, dict)
    command = "python3 benchmarks/bench_predict.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    print(f"# Prediction benchmark ({dt.date.today().isoformat()})\n")
    print(f"- command: `{command.strip()}`")
    print(f"- machine: {cpu_description()}; GPU: {gpu_model()}; device asked: {device}")
    print(
        f"- versions: python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}, numpy {np.__version__}; intra-op threads {num_threads()}"
    )
    print(
        f"- model: UNet base 32, depth 5, 4 classes, random weights, {gflop:.1f} GFLOP per "
        f"{SIZE[0]}x{SIZE[1]} slice; ONNX export + verification {export_s:.1f} s"
        f"{' (fp16)' if args.fp16 else ''}"
    )
    print(
        f"- volume: 256x256x{slices} int16 NIfTI (.nii.gz), {slices} axial slices, batch "
        f"{args.batch_size}; best of {args.repeat} pass(es); bare networks interleaved batch by "
        "batch; load average before/after: "
        f"{load_before:.1f} / {os.getloadavg()[0]:.1f}\n"
    )
    print("| what | device | time (s) | ms / slice | slices/s | GFLOP/s |")
    print("|---|---|---:|---:|---:|---:|")
    for name, seconds in rows:
        print(
            f"| bare network, {name} | {used[name]} | {seconds:.2f} | {1000 * seconds / slices:.0f} "
            f"| {slices / seconds:.1f} | {gflop * slices / seconds:.0f} |"
        )
    for name, seconds in (
        ("`predict` end to end (onnxruntime)", e2e_s),
        ("bare network, onnxruntime, right after e2e", adjacent_s),
    ):
        print(
            f"| {name} | {predictor.backend.device} | {seconds:.2f} | "
            f"{1000 * seconds / slices:.0f} | {slices / seconds:.1f} | "
            f"{gflop * slices / seconds:.0f} |"
        )
    steps = ", ".join(f"{k} {float(v):.2f}" for k, v in timings.items())
    print(f"\nend-to-end steps (s, from the case report): {steps}\n")
    print("| ratio | value | target |")
    print("|---|---:|---|")
    inside = float(timings["inference"])
    print(f"| e2e / bare network (onnxruntime, adjacent pass) | {e2e_s / onnx_s:.2f} | <= 1.2 |")
    print(f"| e2e / network time inside e2e (same window) | {e2e_s / inside:.2f} | <= 1.2 |")
    for name in ("torch eager (NCHW)", "torch channels_last"):
        ratio = bare[name] / bare["onnxruntime"]
        print(f"| onnxruntime speed-up over {name} (interleaved) | {ratio:.2f}x | >= 1.5x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
