"""Benchmark: pedseg's case metrics (k-d tree surface distances, per-label crops) against the
straightforward implementation (scipy's exact Euclidean distance transform on the whole volume).

A realistic pair: a 256x256x200 label map (0.5 x 0.5 x 1.0 mm) with three smooth, irregular,
bone-like blobs, and a prediction made from it by perturbing each blob's boundary with smooth noise
(up to a few voxels) and adding two small false-positive specks. Both implementations must give the
same numbers; the script prints a Markdown report (machine, versions, date, timings, metrics).

    python3 benchmarks/bench_metrics.py            # full size, 3 repeats
    python3 benchmarks/bench_metrics.py --quick    # 128x128x100, 1 repeat
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np
import scipy
from scipy import ndimage

import pedseg
from pedseg.evaluation.metrics import LabelMetrics, case_metrics
from pedseg.export.cpu import cpu_description

SPACING = (0.5, 0.5, 1.0)
LABELS = (1, 2, 3)
FIELDS = ("dice", "sensitivity", "specificity", "ravd", "assd", "mssd", "hd95")


# ----------------------------------------------------------------------------- data


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]-ish: a coarse random grid, linearly upsampled."""
    coarse = rng.normal(size=tuple(max(2, n // cells) for n in shape)).astype(np.float32)
    zoom = [n / c for n, c in zip(shape, coarse.shape, strict=True)]
    return ndimage.zoom(coarse, zoom, order=1, grid_mode=True, mode="nearest")[
        tuple(slice(0, n) for n in shape)
    ]


def make_pair(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(prediction, reference) uint8 label maps with three bone-like blobs."""
    rng = np.random.default_rng(seed)
    s = np.asarray(shape, dtype=np.float32)
    # centre and semi-axes as fractions of the volume: calcaneus-, talus-, tibia-like
    bones = [
        ((0.32, 0.40, 0.45), (0.16, 0.12, 0.22)),
        ((0.62, 0.48, 0.42), (0.12, 0.16, 0.18)),
        ((0.50, 0.74, 0.58), (0.10, 0.11, 0.36)),
    ]
    ref = np.zeros(shape, dtype=np.uint8)
    pred = np.zeros(shape, dtype=np.uint8)
    coords = np.ogrid[: shape[0], : shape[1], : shape[2]]
    for label, (centre, axes) in zip(LABELS, bones, strict=True):
        field = sum(
            ((c.astype(np.float32) - f * n) / (a * n)) ** 2
            for c, f, a, n in zip(coords, centre, axes, s, strict=True)
        )
        shape_noise = _smooth_noise(rng, shape, 24)  # irregular outline of the "bone"
        error_noise = _smooth_noise(rng, shape, 12)  # the prediction's boundary error
        implicit = np.sqrt(field) - 1.0 + 0.15 * shape_noise
        ref[implicit < 0] = label
        pred[implicit + 0.05 * error_noise < 0] = label
    # two false-positive specks, far from everything
    pred[4:7, 4:8, 4:6] = 1
    pred[-9:-6, 10:13, -8:-5] = 2
    return pred, ref


# ----------------------------------------------------------------------------- reference


def edt_case_metrics(
    pred: np.ndarray, ref: np.ndarray, *, spacing: Sequence[float], label_ids: Sequence[int]
) -> list[LabelMetrics]:
    """The textbook implementation: whole-volume erosion and exact EDT per label."""
    structure = ndimage.generate_binary_structure(3, 1)
    results = []
    voxel_ml = float(np.prod(spacing)) / 1000.0
    for label in label_ids:
        p, r = pred == label, ref == label
        n_p, n_r, tp = int(p.sum()), int(r.sum()), int((p & r).sum())
        surf_p = p & ~ndimage.binary_erosion(p, structure, border_value=0)
        surf_r = r & ~ndimage.binary_erosion(r, structure, border_value=0)
        d_p = ndimage.distance_transform_edt(~surf_r, sampling=spacing)[surf_p]
        d_r = ndimage.distance_transform_edt(~surf_p, sampling=spacing)[surf_r]
        pooled = np.concatenate([d_p, d_r])
        results.append(
            LabelMetrics(
                label=label,
                dice=2 * tp / (n_p + n_r),
                sensitivity=tp / n_r,
                specificity=(r.size - n_r - (n_p - tp)) / (r.size - n_r),
                ravd=abs(n_r - n_p) / n_r,
                assd=float(pooled.mean()),
                mssd=float(pooled.max()),
                hd95=float(np.percentile(pooled, 95)),
                volume_ref_ml=n_r * voxel_ml,
                volume_pred_ml=n_p * voxel_ml,
                empty_reference=False,
                empty_prediction=False,
            )
        )
    return results


# ----------------------------------------------------------------------------- report


def _timed(fn: Callable[[], list[LabelMetrics]], repeats: int) -> tuple[float, list[LabelMetrics]]:
    times, result = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128x128x100, one repeat")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    shape = (128, 128, 100) if args.quick else (256, 256, 200)
    repeats = args.repeats or (1 if args.quick else 3)

    load = os.getloadavg()
    pred, ref = make_pair(shape)
    ours_s, ours = _timed(
        lambda: case_metrics(pred, ref, spacing=SPACING, label_ids=LABELS), repeats
    )
    edt_s, edt = _timed(
        lambda: edt_case_metrics(pred, ref, spacing=SPACING, label_ids=LABELS), repeats
    )
    diff = max(
        abs(getattr(a, f) - getattr(b, f)) for a, b in zip(ours, edt, strict=True) for f in FIELDS
    )

    print("# Benchmark: case metrics (3 labels)\n")
    print(f"- date: {datetime.date.today().isoformat()}")
    print(f"- machine: {cpu_description()}")
    print(f"- load average at start (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    print(
        f"- versions: Python {platform.python_version()}, numpy {np.__version__}, "
        f"scipy {scipy.__version__}, pedseg {pedseg.__version__}"
    )
    print(f"- volume: {shape[0]}x{shape[1]}x{shape[2]}, spacing {SPACING} mm, labels {LABELS}")
    print(f"- timing: median of {repeats} run(s), wall clock, single-threaded code paths\n")
    print("| implementation | time per case (s) | speed-up |")
    print("|---|---:|---:|")
    print(f"| scipy EDT on the whole volume | {edt_s:.3f} | 1.0x |")
    print(f"| pedseg `case_metrics` (k-d tree, crops) | {ours_s:.3f} | {edt_s / ours_s:.1f}x |\n")
    print(f"Largest absolute difference over all metrics and labels: {diff:.3g}\n")
    print("| label | impl | Dice | sens | spec | RAVD | ASSD mm | MSSD mm | HD95 mm | ref ml |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for a, b in zip(ours, edt, strict=True):
        for name, m in (("pedseg", a), ("EDT", b)):
            print(
                f"| {m.label} | {name} | {m.dice:.4f} | {m.sensitivity:.4f} | "
                f"{m.specificity:.5f} | {m.ravd:.4f} | {m.assd:.4f} | {m.mssd:.4f} | "
                f"{m.hd95:.4f} | {m.volume_ref_ml:.2f} |"
            )


if __name__ == "__main__":
    main()
