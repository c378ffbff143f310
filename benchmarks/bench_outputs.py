"""Benchmark: the clinical outputs (pedseg.outputs) against the CPU predict time of the default model.

For a real pelvis case (../shared/data/pelvis, 384x384x47, 0.91x0.91x5.2 mm; skipped when absent)
and a synthetic 256x256x200 case (0.6x0.6x1.5 mm, three labels, the volume of bench_predict.py) it
measures, in one process:

* the default model's bare network (UNet base 32, depth 5, random weights, pedseg's ONNX export,
  onnxruntime, batch 8) on the case's slices: the dominant part of ``pedseg predict`` on a CPU
  (bench_predict.py: end to end = 1.05 x the network);
* every output format of :func:`pedseg.outputs.case.write_case_outputs` (nifti, seg-nrrd,
  dicom-seg from a DICOM series written from the case, mesh-stl, stats, preview-3d), one call, with
  its own per-step timings, and the surface of each label alone.

Target: all outputs together <= 25 % of the network time; meshes well under a second per label.

    python3 benchmarks/bench_outputs.py
    python3 benchmarks/bench_outputs.py --quick      # 48 synthetic slices
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from pedseg.data.preprocess import prepare_volume
from pedseg.domains.spec import DomainSpec
from pedseg.export.cpu import cpu_description
from pedseg.export.onnx import export_domain
from pedseg.inference.backends import OnnxBackend
from pedseg.io import read_label, read_volume
from pedseg.models import ModelConfig, build_model
from pedseg.models.segmenter import DomainSegmenter
from pedseg.outputs import parse_outputs
from pedseg.outputs.case import write_case_outputs
from pedseg.outputs.mesh import surface
from pedseg.runfolder.loading import DomainModel

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.outputs.conftest import write_mr_series  # noqa: E402  (pydicom series writer)

SIZE = (256, 256)
PELVIS = REPO.parent / "shared" / "data" / "pelvis"
FORMATS = "nifti,seg-nrrd,dicom-seg,mesh-stl,stats,preview-3d"


def synthetic_case(folder: Path, slices: int) -> tuple[Path, Path]:
    """bench_predict.py's 256x256xN volume and its three blobs as labels 1-3."""
    rng = np.random.default_rng(0)
    grid = np.ogrid[0:1:256j, 0:1:256j, 0 : 1 : complex(0, slices)]
    image = 200.0 + 50.0 * grid[0] + 30.0 * grid[1]
    labels = np.zeros((256, 256, slices), np.uint8)
    blobs = (
        ((0.3, 0.4, 0.5), (0.12, 0.1, 0.4)),
        ((0.65, 0.45, 0.4), (0.1, 0.15, 0.3)),
        ((0.5, 0.7, 0.6), (0.15, 0.08, 0.3)),
    )
    for k, (centre, axes) in enumerate(blobs, start=1):
        inside = sum(((g - c) / a) ** 2 for g, c, a in zip(grid, centre, axes, strict=True)) <= 1
        image = image + 600.0 * inside
        labels[inside] = k
    image = image + rng.normal(0.0, 20.0, size=image.shape)
    affine = np.diag([0.6, 0.6, 1.5, 1.0])
    image_path, label_path = folder / "synthetic.nii.gz", folder / "synthetic_labels.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.int16), affine), image_path)
    nib.save(nib.Nifti1Image(labels, affine), label_path)
    return image_path, label_path


def network_seconds(backend: OnnxBackend, images: np.ndarray, batch: int = 8) -> float:
    backend(images[:batch, None])  # warm-up
    start = time.perf_counter()
    for first in range(0, images.shape[0], batch):
        backend(images[first : first + batch, None])
    return time.perf_counter() - start


def measure(
    name: str, image_path: Path, label_path: Path, spec: DomainSpec, onnx: Path, tmp: Path
) -> dict[str, object]:
    image = read_volume(image_path)
    labels = read_label(label_path).array
    raw = nib.load(image_path)
    series = tmp / f"{name}_dicom"
    write_mr_series(series, np.asarray(raw.dataobj), raw.affine)
    dicom = read_volume(series)
    images = prepare_volume(image, spec).images
    network = network_seconds(OnnxBackend(onnx, device="cpu"), images)
    per_label = []
    for label_id, _ in spec.labels:
        start = time.perf_counter()
        surface(labels == label_id, image.affine)
        per_label.append(time.perf_counter() - start)
    start = time.perf_counter()
    result = write_case_outputs(
        labels,
        dicom,
        spec,
        formats=parse_outputs(FORMATS),
        stem=tmp / name / name,
        model_sha256="0" * 64,
    )
    total = time.perf_counter() - start
    return {
        "name": name,
        "shape": image.source.shape,
        "spacing": image.spacing,
        "slices": images.shape[0],
        "network": network,
        "per_label": per_label,
        "timings": result.timings,
        "total": total,
    }


def report(rows: list[dict[str, object]], load: tuple[float, float], export_s: float) -> str:
    lines = [
        "| case | shape (on disk) | spacing (mm) | slices | network (s) | all outputs (s) | ratio | target |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        ratio = float(r["total"]) / float(r["network"])  # type: ignore[arg-type]
        spacing = "x".join(f"{s:.2f}" for s in r["spacing"])  # type: ignore[attr-defined]
        shape = "x".join(str(n) for n in r["shape"])  # type: ignore[attr-defined]
        lines.append(
            f"| {r['name']} | {shape} | {spacing} | {r['slices']} | {r['network']:.1f} | "
            f"{r['total']:.2f} | {ratio:.1%} | <= 25 % |"
        )
    lines += ["", "| case | step | seconds |", "|---|---|---:|"]
    for r in rows:
        for step, seconds in r["timings"].items():  # type: ignore[attr-defined]
            lines.append(f"| {r['name']} | {step} | {seconds:.3f} |")
        per = ", ".join(f"{s:.2f}" for s in r["per_label"])  # type: ignore[attr-defined]
        lines.append(
            f"| {r['name']} | one surface per label (max {max(r['per_label']):.2f}) | {per} |"
        )  # type: ignore[type-var]
    lines += [
        "",
        f"ONNX export of the default model: {export_s:.1f} s (not counted); "
        f"load average before/after: {load[0]:.2f} / {load[1]:.2f}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="48 synthetic slices")
    args = parser.parse_args(argv)
    import torch

    torch.manual_seed(0)
    load_before = os.getloadavg()[0]
    print(
        f"machine: {cpu_description()}; uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="pedseg-bench-outputs-") as tmp_name:
        tmp = Path(tmp_name)
        net = build_model(ModelConfig(), num_classes=[5]).eval()
        pelvis = DomainSpec(
            name="pelvis",
            labels=((1, "femur"), (2, "ilium"), (3, "spine"), (4, "sacrum")),
            normalization="percentile_zscore",
            image_size=SIZE,
        )
        model = DomainModel(
            pelvis, SIZE, DomainSegmenter(net, head=0).eval(), "0" * 64, "dsl-contrastive", None
        )
        start = time.perf_counter()
        export_domain(model, tmp / "model.onnx")
        export_s = time.perf_counter() - start
        if (PELVIS / "imagesTr" / "pelvis_01.nii.gz").is_file():
            rows.append(
                measure(
                    "pelvis_01",
                    PELVIS / "imagesTr" / "pelvis_01.nii.gz",
                    PELVIS / "labelsTr" / "pelvis_01.nii.gz",
                    pelvis,
                    tmp / "model.onnx",
                    tmp,
                )
            )
        else:
            print(f"real pelvis data not found under {PELVIS}; skipped")
        image, labels = synthetic_case(tmp, 48 if args.quick else 200)
        three = DomainSpec(
            name="synthetic",
            labels=((1, "a"), (2, "b"), (3, "c")),
            normalization="zscore",
            slice_axis=2,
            image_size=SIZE,
        )
        rows.append(measure("synthetic", image, labels, three, tmp / "model.onnx", tmp))
    print(report(rows, (load_before, os.getloadavg()[0]), export_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
