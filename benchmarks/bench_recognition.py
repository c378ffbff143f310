"""Benchmark: how well does a trained run recognise the domain of held-out scans, and flag others?

Protocol. ``--model`` is a run trained with the contrastive scheme on pelvis + spine (for instance
the proposed method of the real-data study, ``STUDY/dsl-contrastive-unet/fold-0/run``); ``--folds``
is that study's ``folds.json``, whose fold-0 *test* cases were never seen in training. Scans:

* in distribution: the held-out pelvis and spine cases (expected: their own domain, not OOD);
* out of distribution, each a thing a user may plausibly feed by mistake:
  - ``ankle`` / ``shoulder`` phantoms (another joint; pedseg's own synthetic MR);
  - ``inverted``: held-out real scans with inverted intensities (``max - x``: another contrast, as a
    T2-weighted or fat-suppressed scan of the right anatomy would look to a T1 model);
  - ``noise``: smooth random noise volumes with the geometry of a real scan;
  - ``swapped``: held-out real scans with the first two array axes transposed, the affine kept (a
    wrongly recorded orientation).

The run's profiles are recomputed on a copy (from the fold's training scans, with cross centroids,
as pedseg now stores them at the end of training), and every scan is identified twice: with the
cross centroids, and with each domain's own centroid only (how pedseg decided before they existed).
For every scan it records the decision, the confidence and the median normalised distance (in
units of the domain's 95th percentile); then the accuracy on in-distribution scans and, for a range
of thresholds, how many in-distribution scans would be flagged (false alarms) and how many OOD scans
would be (detections). The default ``pedseg`` threshold is ``OOD_THRESHOLD``.

    python3 benchmarks/bench_recognition.py --model STUDY/dsl-contrastive-unet/fold-0/run \\
        --folds STUDY/folds.json --out benchmarks/results/recognition.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ood_scans import derived, phantoms  # benchmarks/ood_scans.py (the script's folder)

from pedseg.data.preprocess import prepare_volume
from pedseg.inference.recognition import OOD_THRESHOLD, Candidate, Recognition, Recognizer
from pedseg.io import read_volume
from pedseg.runfolder.loading import load_run
from pedseg.runfolder.profiles import MAX_PROFILE_SLICES, central_range, cross_slices, store_profile

THRESHOLDS = (1.0, 1.25, 1.5, 2.0, 3.0, 5.0)
DATA = Path(os.environ.get("PEDSEG_SHARED_DATA", Path(__file__).parents[2] / "shared" / "data"))


@dataclass(frozen=True)
class Scan:
    name: str
    group: str  # pelvis | spine (in distribution) or an OOD kind
    expected: str | None  # the domain for in-distribution scans
    path: Path


def fold_cases(folds: Path, domain: str, part: str = "test") -> list[str]:
    plan = json.loads(folds.read_text(encoding="utf-8"))
    return list(plan["folds"]["0"][domain][part])


def held_out(folds: Path, domain: str) -> list[str]:
    return fold_cases(folds, domain, "test")


def reprofile(run_dir: Path, folds: Path) -> None:
    """Recompute the run's domain profiles, with cross centroids, from the fold's training scans."""
    run = load_run(run_dir)
    size = run.domain(run.domains[0]).image_size
    specs = [run.domain(name).spec for name in run.domains]
    images = {
        s.name: [image_path(s.name, c) for c in fold_cases(folds, s.name, "train")] for s in specs
    }
    own: dict[str, np.ndarray] = {}
    for spec in specs:
        parts = []
        for path in images[spec.name]:
            stack = prepare_volume(read_volume(path), spec, image_size=size).images
            lo, hi = central_range(int(stack.shape[0]))
            parts.append(np.asarray(stack[lo:hi], dtype=np.float32))
        own[spec.name] = np.concatenate(parts)[:MAX_PROFILE_SLICES]
    scans = ((name, read_volume(path)) for name, paths in images.items() for path in paths)
    store_profile(run_dir, own, cross=cross_slices(specs, scans, image_size=size))


def image_path(domain: str, case: str) -> Path:
    return DATA / domain / "imagesTr" / f"{case}.nii.gz"


def scans(folds: Path, tmp: Path) -> Iterator[Scan]:
    for domain in ("pelvis", "spine"):
        for case in held_out(folds, domain):
            yield Scan(case, domain, domain, image_path(domain, case))
    for domain, path in phantoms(tmp / "phantoms"):
        yield Scan(path.name.split(".")[0], domain, None, path)
    for domain in ("pelvis", "spine"):
        for index, case in enumerate(held_out(folds, domain)[:3]):
            source = image_path(domain, case)
            for kind in ("inverted", "swapped", "noise"):
                yield Scan(f"{kind}-{case}", kind, None, derived(tmp, source, kind, index))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--folds", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None, help="Markdown report (default: stdout)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "run"
        shutil.copytree(args.model, copy)
        reprofile(copy, args.folds)
        profile_s = time.perf_counter() - started
        crossed = Recognizer.from_run(load_run(copy), device=torch.device("cpu"))
        own_only = Recognizer(
            [
                Candidate(c.spec, c.image_size, c.embed, dataclasses.replace(c.profile, cross={}))
                for c in crossed.candidates
            ]
        )
        rows: list[tuple[Scan, Recognition]] = []
        old_rows: list[tuple[Scan, Recognition]] = []
        started = time.perf_counter()
        for scan in scans(args.folds, Path(tmp)):
            volume = read_volume(scan.path)
            rows.append((scan, crossed.identify(volume)))
            old_rows.append((scan, own_only.identify(volume)))
        seconds = (time.perf_counter() - started) / 2
    text = report(args, rows, seconds, profile_s)
    text += "\n" + report(args, old_rows, seconds, profile_s, title=OWN_ONLY).split("\n", 3)[3]
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")


OWN_ONLY = "Own centroids only (before cross centroids)"


def report(
    args: argparse.Namespace,
    rows: list[tuple[Scan, Recognition]],
    seconds: float,
    profile_s: float,
    *,
    title: str = "With cross centroids",
) -> str:
    inside = [(s, r) for s, r in rows if s.expected is not None]
    outside = [(s, r) for s, r in rows if s.expected is None]
    correct = sum(r.domain == s.expected for s, r in inside)
    lines = [
        "# Domain recognition and OOD warning on held-out real scans",
        "",
        f"Run {dt.date.today()} on {platform.node()} ({os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}); model `{args.model}`; profiles with cross centroids "
        f"recomputed in {profile_s:.0f} s; {len(rows)} scans in {seconds:.0f} s "
        f"({seconds / len(rows):.2f} s per scan).",
        "",
        f"## {title}",
        "",
        f"**Recognition**: {correct} of {len(inside)} held-out scans get their own domain.",
        "",
        "| threshold | false alarms (in-distribution flagged) | OOD detected |"
        + "".join(f" {g} |" for g in sorted({s.group for s, _ in outside})),
        "|---|---|---|" + "---|" * len({s.group for s, _ in outside}),
    ]
    groups = sorted({s.group for s, _ in outside})
    for threshold in THRESHOLDS:
        alarms = sum(_best(r) > threshold for _, r in inside)
        found = sum(_best(r) > threshold for _, r in outside)
        per_group = [
            f"{sum(_best(r) > threshold for s, r in outside if s.group == g)}/"
            f"{sum(s.group == g for s, _ in outside)}"
            for g in groups
        ]
        mark = " (default)" if threshold == OOD_THRESHOLD else ""
        lines.append(
            f"| {threshold:g}{mark} | {alarms}/{len(inside)} | {found}/{len(outside)} |"
            + "".join(f" {cell} |" for cell in per_group)
        )
    lines += [
        "",
        f"Largest in-distribution distance {max(_best(r) for _, r in inside):.2f}; smallest OOD "
        f"distance {min(_best(r) for _, r in outside):.2f}.",
        "",
        "| scan | kind | decided | confidence | distance to each domain | flagged at default |",
        "|---|---|---|---|---|---|",
    ]
    for scan, result in rows:
        distances = ", ".join(f"{k} {v:.2f}" for k, v in result.distances.items())
        lines.append(
            f"| {scan.name} | {scan.group} | {result.domain} | {result.confidence:.0%} | "
            f"{distances} | {'yes' if result.ood else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def _best(result: Recognition) -> float:
    return result.distances[result.domain]


if __name__ == "__main__":
    main()
