"""Benchmark: int8 onnxruntime against fp32 onnxruntime, speed per slice and accuracy on real data.

Speed (random weights, timing only; batch norms given random statistics so that folded biases
differ as in a trained model): for each model shape the fp32 export (pedseg's exporter) and int8
graphs built through pedseg's int8 path (calibrated on a few synthetic slices) are timed on the same
batch, interleaved round by round (best round kept), so load from other processes hits all alike:

* ``int8`` -- the export's graph: uint8 activations, int8 per-channel weights, up-sampling
  rewritten as 1x1 conv + pixel shuffle, the first encoder level float (what ``export-onnx --int8``
  writes);
* ``every level int8`` -- the same with the first encoder level quantised too;
* ``int8, int8 activations`` -- the same with signed activations;
* ``int8, ConvTranspose kept`` -- without the up-sampling rewrite (onnxruntime then runs the
  transposed convolutions in float between dequantise and quantise).

Accuracy (``--run RUN --data NAME=DIR``, ``--run`` repeatable): each run's (first) domain is calibrated on its training slices with
each method (minmax, entropy, percentile) and activation type, and every graph is verified on the
validation cases through pedseg's Predictor (per-volume Dice agreement with fp32, per-label Dice
against the reference labels); an fp16 export gives the agreement of a harmless numeric change.

    python3 benchmarks/bench_int8.py --run RUN --data pelvis=/work/shared/data/pelvis
    python3 benchmarks/bench_int8.py --quick      # speed only, the small shapes
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from pedseg.data.preprocess import prepare_volume
from pedseg.domains.registry import parse_data_overrides
from pedseg.domains.spec import DomainSpec
from pedseg.export.cpu import cpu_flags, cpu_model
from pedseg.export.int8_check import verify_int8
from pedseg.export.int8_graph import int8_source, untie_initializers
from pedseg.export.onnx import export_domain
from pedseg.export.quantize import (
    Int8Options,
    calibration_data,
    data_specs,
    quantize_graph,
)
from pedseg.inference.backends import OnnxBackend, num_threads
from pedseg.inference.int8_export import predictor_pair
from pedseg.io.volume import Volume
from pedseg.models import ModelConfig, build_model, count_flops
from pedseg.models.segmenter import DomainSegmenter
from pedseg.runfolder.loading import DomainModel, load_run

SHAPES = ((256, 32, "default model"), (128, 16, "small CPU model"), (96, 8, "small CPU model"))
Backend = Callable[[np.ndarray], np.ndarray]


def lscpu() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    fields = {
        k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())
    }
    cores = int(fields.get("Core(s) per socket", "0") or 0) * int(fields.get("Socket(s)", "1") or 1)
    return f"{fields.get('Model name', 'unknown')}, {cores} cores, {os.cpu_count()} logical CPUs"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"load average {os.getloadavg()[0]:.2f}"


def random_model(size: int, width: int) -> DomainModel:
    """A default-depth UNet with random weights and random batch-norm statistics."""
    torch.manual_seed(0)
    net = build_model(ModelConfig(base_width=width, depth=5), num_classes=[4]).eval()
    generator = torch.Generator().manual_seed(1)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            module.weight.data.copy_(0.8 + 0.4 * torch.rand(n, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(n, generator=generator))
    spec = DomainSpec(
        name="bench",
        labels=((1, "a"), (2, "b"), (3, "c")),
        normalization="zscore",
        slice_axis=2,
        image_size=(size, size),
    )
    module = DomainSegmenter(net, head=0).eval()
    return DomainModel(spec, (size, size), module, "0" * 64, "dsl-contrastive", None)


def synthetic_slices(spec: DomainSpec, n: int) -> np.ndarray:
    """``n`` normalised MR-like slices at the spec's size (smooth background, blobs, noise)."""
    size = spec.image_size[0]
    rng = np.random.default_rng(0)
    grid = np.ogrid[0 : 1 : complex(0, size), 0 : 1 : complex(0, size), 0 : 1 : complex(0, n)]
    image = 200.0 + 50.0 * grid[0] + 30.0 * grid[1]
    for centre, axes in (
        ((0.3, 0.4, 0.5), (0.12, 0.1, 0.4)),
        ((0.65, 0.45, 0.4), (0.1, 0.15, 0.3)),
    ):
        r2 = sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, axes, strict=True))
        image = image + 600.0 * (r2 <= 1.0)
    image = image + rng.normal(0.0, 20.0, size=(size, size, n))
    volume = Volume(np.asarray(image, np.float32), (1.0, 1.0, 1.0), np.eye(4), None)  # type: ignore[arg-type]
    return prepare_volume(volume, spec).images


def interleaved(backends: dict[str, Backend], batch: np.ndarray, rounds: int) -> dict[str, float]:
    best = dict.fromkeys(backends, float("inf"))
    for backend in backends.values():
        backend(batch)
    for r in range(rounds):
        names = list(backends)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            backends[name](batch)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def speed_section(shapes: Sequence[tuple[int, int, str]], rounds: int, tmp: Path) -> list[str]:
    lines = [
        "| shape | GFLOP/slice | fp32 slices/s | int8 slices/s | int8 / fp32 | "
        "every level int8 | int8 activations | ConvTranspose kept |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    options = Int8Options(calibration_slices=16)
    for size, width, label in shapes:
        model = random_model(size, width)
        gflop = count_flops(model.module.net, (size, size)) / 1e9  # type: ignore[union-attr]
        folder = tmp / f"{size}-{width}"
        export_domain(model, folder / "fp32.onnx")
        fp32 = (folder / "fp32.onnx").read_bytes()
        slices = synthetic_slices(model.spec, 16)
        source = int8_source(model, folder / "source.onnx", reference=fp32)
        plain = onnx.load_model(str(folder / "fp32.onnx"))
        untie_initializers(plain)
        onnx.save_model(plain, str(folder / "plain.onnx"))
        graphs = {
            "fp32": fp32,
            "int8": quantize_graph(source, folder / "u8.onnx", slices, options),
            "all": quantize_graph(
                source, folder / "all.onnx", slices, replace(options, float_first_level=False)
            ),
            "s8": quantize_graph(
                source, folder / "s8.onnx", slices, replace(options, activations="int8")
            ),
            "kept": quantize_graph(folder / "plain.onnx", folder / "kept.onnx", slices, options),
        }
        backends: dict[str, Backend] = {
            k: OnnxBackend(v if isinstance(v, bytes) else v.SerializeToString(), device="cpu")
            for k, v in graphs.items()
        }
        best = interleaved(backends, slices[:8, None], rounds)
        rate = {k: 8 / v for k, v in best.items()}
        lines.append(
            f"| {size}², width {width}, depth 5 ({label}) | {gflop:.2f} | {rate['fp32']:.1f} | "
            f"{rate['int8']:.1f} | **{rate['int8'] / rate['fp32']:.2f}x** | "
            f"{rate['all'] / rate['fp32']:.2f}x | {rate['s8'] / rate['fp32']:.2f}x | "
            f"{rate['kept'] / rate['fp32']:.2f}x |"
        )
        print(lines[-1], file=sys.stderr, flush=True)
    return lines


def accuracy_section(run_path: Path, data: list[str], rounds: int, tmp: Path) -> list[str]:
    run = load_run(run_path)
    domain = run.domains[0]
    model = run.domain(domain)
    spec = data_specs(run, [domain], parse_data_overrides(data))[domain]
    export_domain(model, tmp / "fp32.onnx")
    export_domain(model, tmp / "fp16.onnx", fp16=True)
    fp32 = (tmp / "fp32.onnx").read_bytes()
    source = int8_source(model, tmp / "source.onnx", reference=fp32)
    lines = [
        f"Run `{run_path}` (domain {domain}, image size {model.image_size[0]}², "
        f"best validation Dice {run.card.best_metric}).\n",
        "| graph | calibration | agreement per volume | min | worst label drop (points) | "
        "passes | int8 / fp32 speed |",
        "|---|---|---|---:|---:|---|---:|",
    ]
    detail: list[str] = []
    variants: list[tuple[str, Int8Options | None]] = [
        ("fp16 (reference)", None),
        ("int8 (the export's defaults)", Int8Options()),
        ("int8, every level int8", Int8Options(float_first_level=False)),
    ]
    for activations in ("uint8", "int8"):
        for method in ("minmax", "entropy", "percentile"):
            if (activations, method) != ("uint8", "minmax"):
                options = Int8Options(method=method, activations=activations)  # type: ignore[arg-type]
                variants.append((f"int8, {activations} activations", options))
    images = cases = None
    for label, options in variants:
        t0 = time.perf_counter()
        if options is None:
            graph, calibration = (tmp / "fp16.onnx").read_bytes(), "-"
        else:
            images, train, cases = calibration_data(model, spec, options=options)
            name = f"{options.method}-{options.activations}.onnx"
            graph = quantize_graph(source, tmp / name, images, options).SerializeToString()
            calibration = f"{options.method}, {images.shape[0]} slices of {len(train)} cases"
            if options.float_first_level:
                calibration += ", first level float"
        if cases is None:
            images, _, cases = calibration_data(model, spec, options=Int8Options())
        a, b = predictor_pair(model, fp32, graph)
        result = verify_int8(a, b, cases, spec=model.spec)
        speed = "-"
        if options is not None and images is not None:
            best = interleaved({"fp32": a.backend, "int8": b.backend}, images[:8, None], rounds)
            speed = f"{best['fp32'] / best['int8']:.2f}x"
        worst, drop = result.worst_drop
        lines.append(
            f"| {label} | {calibration} | {', '.join(f'{v:.4f}' for v in result.agreement)} | "
            f"{result.min_agreement:.4f} | {100 * drop:+.2f} ({worst}) | "
            f"{'yes' if result.passed else 'no'} | {speed} |"
        )
        print(lines[-1], f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
        if options == Int8Options():
            detail = [
                "\nPer-label Dice against the reference labels, mean over the validation volumes "
                f"({', '.join(result.cases)}), the export's defaults (minmax, uint8, first level float):\n",
                "| label | fp32 | int8 | int8 - fp32 (points) |",
                "|---|---:|---:|---:|",
                *(
                    f"| {k} | {result.dice_fp32[k]:.4f} | {result.dice_int8[k]:.4f} | "
                    f"{100 * (result.dice_int8[k] - result.dice_fp32[k]):+.2f} |"
                    for k in result.dice_fp32
                ),
            ]
    return lines + detail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--run", type=Path, action="append", default=[], help="trained run folder(s): accuracy"
    )
    parser.add_argument("--data", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (best kept)")
    parser.add_argument("--quick", action="store_true", help="small shapes only, 3 rounds")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else args.rounds
    shapes = SHAPES[1:] if args.quick else SHAPES
    started, load_before = time.perf_counter(), uptime()
    with tempfile.TemporaryDirectory(prefix="pedseg-bench-int8-") as name:
        tmp = Path(name)
        speed = speed_section(shapes, rounds, tmp)
        accuracy: list[str] = []
        for k, run in enumerate(args.run):
            (tmp / f"run{k}").mkdir()
            accuracy += [*accuracy_section(run, args.data, rounds, tmp / f"run{k}"), ""]
    wall = time.perf_counter() - started
    command = "python3 benchmarks/bench_int8.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
    )
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in cpu_flags().items())
    print(f"# int8 benchmark ({dt.date.today().isoformat()})\n")
    print(f"- command: `{command.strip()}`")
    print(f"- machine: {lscpu()} (`{cpu_model()}`); {flags}")
    print(
        f"- versions: python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}, onnx {onnx.__version__}; intra-op threads {num_threads()}"
    )
    print(f"- load before: `{load_before}`; after: `{uptime()}`")
    print(f"- wall time: {wall:.0f} s; batch 8 slices, best of {rounds} interleaved rounds\n")
    print("## Speed (onnxruntime, CPU, random weights)\n")
    print("\n".join(speed))
    if accuracy:
        print("\n## Accuracy on real data (validation volumes, through pedseg's Predictor)\n")
        print("\n".join(accuracy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
