"""Benchmark: the intensity normalisations on real MR volumes, against the voxel-wise formula.

pedseg's ``zscore`` / ``percentile_zscore`` take an integer volume's percentiles, mean and standard
deviation from its histogram (one ``bincount`` pass); the reference computes them voxel by voxel
(``np.percentile``, ``mean``, ``std`` of the float32 volume), as pedseg did before. Both run on the
same volumes in one process, alternating, best of ``--repeats``; the outputs are compared bit for
bit. The normalisation is the largest share of ``pedseg predict``'s preprocessing for a small model
(``results/predict-small.md``).

    python benchmarks/bench_normalize.py --data pelvis=../shared/data/pelvis \\
        --data spine=../shared/data/spine [--repeats 5] [--record]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from recording import append_record  # benchmarks/recording.py (the script's folder)

from pedseg.domains.registry import DomainRegistry, get_normalization, parse_data_overrides
from pedseg.export.cpu import cpu_description
from pedseg.io import read_volume


def reference_zscore(array: np.ndarray) -> np.ndarray:
    data = np.asarray(array, dtype=np.float32)
    return _standardise(data, float(data.mean(dtype=np.float64)), float(data.std(dtype=np.float64)))


def reference_percentile_zscore(array: np.ndarray) -> np.ndarray:
    data = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(data, [0.5, 99.5])
    clipped = np.clip(data, np.float32(lo), np.float32(hi))
    mean, std = float(clipped.mean(dtype=np.float64)), float(clipped.std(dtype=np.float64))
    return _standardise(clipped, mean, std)


def _standardise(data: np.ndarray, mean: float, std: float) -> np.ndarray:
    if std < 1e-6:
        return np.zeros_like(data)
    return (data - mean) / std


REFERENCES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "zscore": reference_zscore,
    "percentile_zscore": reference_percentile_zscore,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", default=[], required=True)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    overrides = parse_data_overrides(args.data)
    specs = DomainRegistry().resolve(list(overrides), data=overrides)
    started = time.monotonic()
    lines = [
        f"### Normalisation on real volumes ({dt.date.today().isoformat()})",
        "",
        "`python benchmarks/bench_normalize.py "
        + " ".join(f"--data {d}" for d in args.data)
        + f" --repeats {args.repeats}` on {cpu_description()}, load before "
        f"{os.getloadavg()[0]:.1f}.",
        "",
        "| domain | normalisation | volumes (voxels) | voxel-wise (s) | pedseg (s) | speed-up "
        "| identical |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for spec in specs:
        root = Path(overrides[spec.name])
        volumes = [read_volume(p).array for p in sorted((root / "imagesTr").glob("*.nii.gz"))]
        ours, reference = get_normalization(spec.normalization), REFERENCES[spec.normalization]
        identical = all(np.array_equal(ours(v), reference(v)) for v in volumes)
        times: dict[str, list[float]] = {"reference": [], "pedseg": []}
        for _ in range(args.repeats):
            for name, fn in (("reference", reference), ("pedseg", ours)):
                t0 = time.perf_counter()
                for volume in volumes:
                    fn(volume)
                times[name].append(time.perf_counter() - t0)
        ref_s, ours_s = min(times["reference"]), min(times["pedseg"])
        voxels = sum(v.size for v in volumes)
        lines.append(
            f"| {spec.name} | {spec.normalization} | {len(volumes)} ({voxels / 1e6:.0f} M) "
            f"| {ref_s:.3f} | {ours_s:.3f} | {ref_s / ours_s:.2f}x | {identical} |"
        )
    lines += ["", f"Wall {time.monotonic() - started:.0f} s, load after {os.getloadavg()[0]:.1f}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.record:
        append_record("predict-small.md", "Small-model prediction benchmark", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
