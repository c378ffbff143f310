"""Benchmark: does `pedseg adapt-bn` recover Dice on a simulated new scanner?

Protocol (real data, ../shared/data/spine, 24 sagittal lumbar-spine MR volumes, labels L1-L5):

1. Cases are sorted; the first ``--train-cases`` (default 16) are copied into a private training
   folder, the others are the held-out test cases (never seen in training).
2. A small ``dsl`` model is trained on the training cases only (image 96x96, width 8, depth 5 by
   default; pedseg's own training loop, its validation split picks the best epoch).
3. Each "site" is a deterministic intensity transform of the held-out scans, simulating another
   scanner: a power-law contrast change (gamma), a smooth multiplicative bias field and a global
   gain (the gain alone is removed by z-score normalisation; gamma and the bias field are not).
4. For each site, Dice (3D, per case on the network's slice grid, mean over L1-L5, no
   post-processing) on the held-out cases: the trained model as is; and after ``adapt_bn`` on the
   site's *unlabelled* scans in two folds (adapt on half of the held-out cases, evaluate on the
   other half, and vice versa), so no case is segmented by a model adapted on itself; and
   "transductive" (adapt on all held-out scans of the site, then segment them), the usual use.

    python3 benchmarks/bench_adapt_bn.py                       # about 12 min on 2 busy cores
    python3 benchmarks/bench_adapt_bn.py --steps 60 --epochs 2 # smoke run
    python3 benchmarks/bench_adapt_bn.py --phantom             # ankle phantoms instead of spine

It prints a Markdown report (config, timings, a Dice table).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pedseg.data.dataset import list_cases
from pedseg.data.preprocess import prepare_volume
from pedseg.domains.registry import DomainRegistry
from pedseg.domains.spec import DomainSpec
from pedseg.io import read_label, read_volume, write_volume
from pedseg.runfolder.loading import load_run
from pedseg.training.adapt import adapt_bn
from pedseg.training.config import TrainConfig
from pedseg.training.loop import train
from pedseg.training.validate import dice_per_label

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class Site:
    name: str
    gamma: float
    bias: float  # max |log| of the multiplicative bias field (a linear ramp along the first axis)
    gain: float

    def describe(self) -> str:
        if self.gamma == 1.0 and self.bias == 0.0 and self.gain == 1.0:
            return "original scans"
        return f"gamma {self.gamma}, bias field exp(±{self.bias}), gain x{self.gain}"

    def apply(self, array: np.ndarray) -> np.ndarray:
        data = array.astype(np.float64)
        low, high = float(data.min()), float(data.max())
        unit = (data - low) / max(high - low, 1e-9)
        ramp = np.linspace(-1.0, 1.0, data.shape[0])[:, None, None]
        out = self.gain * 1000.0 * unit**self.gamma * np.exp(self.bias * ramp)
        return np.round(out).astype(np.int16)  # scanners write integers


SITES = (
    Site("A (original)", 1.0, 0.0, 1.0),
    Site("B: darker contrast", 1.8, 0.3, 3.0),
    Site("C: brighter contrast", 0.5, 0.3, 0.5),
    Site("D: strong bias field", 1.0, 0.7, 1.0),
)


def link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def write_site(site: Site, cases: Sequence[tuple[str, Path]], folder: Path) -> list[Path]:
    paths = []
    for case_id, image in cases:
        volume = read_volume(image)
        path = folder / f"{case_id}.nii.gz"
        write_volume(site.apply(volume.array), volume.affine, path)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class Prepared:
    """A held-out case on the network grid: normalised slices and reference labels."""

    images: np.ndarray
    labels: np.ndarray


def prepare(spec: DomainSpec, scan: Path, label: Path, size: tuple[int, int]) -> Prepared:
    stack = prepare_volume(read_volume(scan), spec, image_size=size, label=read_label(label))
    assert stack.labels is not None
    return Prepared(stack.images, stack.labels)


def dice_scores(
    run: Path, domain: str, cases: Sequence[Prepared]
) -> tuple[list[float], list[float]]:
    """Per case: mean Dice over the labels, and Dice of the union of labels (foreground)."""
    model = load_run(run).domain(domain)
    ids = model.spec.label_ids
    lut = np.array([0, *ids])
    per_label: list[float] = []
    foreground: list[float] = []
    for case in cases:
        with torch.inference_mode():
            blocks = [
                model.module(torch.from_numpy(case.images[i : i + 32])[:, None])
                for i in range(0, case.images.shape[0], 32)
            ]
        predicted = lut[torch.cat(blocks).argmax(dim=1).numpy()]
        per_label.append(float(np.mean(dice_per_label(predicted, case.labels, ids))))
        foreground.append(dice_per_label(predicted > 0, case.labels > 0, [True])[0])
    return per_label, foreground


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-cases", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50, help="steps per epoch")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phantom", action="store_true", help="ankle phantoms instead of spine")
    parser.add_argument("--keep", type=Path, default=None, help="keep the work folder here")
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    work = args.keep if args.keep is not None else Path(tempfile.mkdtemp(prefix="pedseg-adapt-"))
    os.environ["PEDSEG_HOME"] = str(work / "home")  # never the user's registry or last-run pointer
    size = (args.image_size, args.image_size)
    registry = DomainRegistry(home=work / "home")
    domain = "ankle" if args.phantom else "spine"
    if args.phantom:
        from pedseg.data.synth import PhantomConfig, synth_dataset

        synth_dataset(
            work / "phantoms",
            domains=("ankle",),
            cases=24,
            seed=0,
            config=PhantomConfig(shape=(96, 96, 32)),
        )
        source = work / "phantoms" / "ankle"
    else:
        source = DATA / "spine"
    spec = registry.get(domain).with_data_root(source)
    cases = list_cases(spec)
    train_cases, test_cases = cases[: args.train_cases], cases[args.train_cases :]
    train_root = work / "train_data"
    for case in train_cases:
        assert case.label is not None
        link_or_copy(case.image, train_root / "imagesTr" / case.image.name)
        link_or_copy(case.label, train_root / "labelsTr" / case.label.name)
    train_spec = spec.with_data_root(train_root)

    config = TrainConfig(
        domains=(domain,),
        scheme="dsl",
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=size,
        base_width=args.width,
        depth=args.depth,
        lr=args.lr,
        seed=args.seed,
        steps_per_epoch=args.steps,
        device="cpu",
    )
    run = work / "run"
    started = time.perf_counter()
    result = train(config, [train_spec], out=run, cache_root=work / "cache")
    train_s = time.perf_counter() - started

    labels = [c.label for c in test_cases if c.label is not None]
    n = len(test_cases)
    halves = (list(range(n // 2)), list(range(n // 2, n)))
    folds = ((halves[0], halves[1]), (halves[1], halves[0]))  # (adapt on, evaluate on)
    lines: list[str] = []
    adapt_times: list[float] = []
    for k, site in enumerate(SITES):
        scans = write_site(site, [(c.case_id, c.image) for c in test_cases], work / f"site{k}")
        prepared = [prepare(spec, s, lab, size) for s, lab in zip(scans, labels, strict=True)]
        before = dice_scores(run, domain, prepared)
        inductive: tuple[list[float], list[float]] = ([0.0] * n, [0.0] * n)
        for f, (adapt_on, evaluate_on) in enumerate(folds):
            t0 = time.perf_counter()
            adapted = adapt_bn(
                run, domain, [scans[i] for i in adapt_on], out=work / f"ad{k}-{f}", device="cpu"
            )
            adapt_times.append(time.perf_counter() - t0)
            scores = dice_scores(adapted.run_dir, domain, [prepared[i] for i in evaluate_on])
            for metric in range(2):
                for i, score in zip(evaluate_on, scores[metric], strict=True):
                    inductive[metric][i] = score
        everything = adapt_bn(run, domain, scans, out=work / f"ad{k}-all", device="cpu")
        transductive = dice_scores(everything.run_dir, domain, prepared)
        cells = []
        for metric in range(2):
            b, i, t = before[metric], inductive[metric], transductive[metric]
            worst = float(np.min(np.subtract(i, b)))
            cells.append(f"{np.mean(b):.3f} | {np.mean(i):.3f} | {np.mean(t):.3f} | {worst:+.3f}")
        lines.append(f"| {site.name} | {site.describe()} | {' | '.join(cells)} |")

    data = "ankle phantoms (96x96x32)" if args.phantom else "spine, ../shared/data/spine"
    cpu = platform.processor() or platform.machine()
    print(f"# adapt-bn benchmark ({dt.date.today().isoformat()})\n")
    print(f"- data: {data}: {len(train_cases)} training cases (pedseg holds out 20 % of them")
    print(f"  for validation), {n} held-out test cases")
    print(f"- model: dsl UNet, image {size[0]}x{size[1]}, base width {args.width}, depth")
    print(f"  {args.depth}; {args.epochs} epochs x {args.steps} steps, batch {args.batch_size},")
    print(f"  Adam lr {args.lr}, seed {args.seed}, augmentation on")
    print(f"- training: {train_s:.0f} s, best epoch {result.best_epoch}, validation Dice")
    print(f"  {result.best_metric:.3f}; adapt-bn: {np.mean(adapt_times):.1f} s per run of {n // 2}")
    print("  scans (reading + preprocessing + statistics)")
    print(f"- machine: {cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}")
    print(f"  ({torch.get_num_threads()} threads), python {sys.version.split()[0]}")
    print(
        "- Dice per case in 3D on the network grid, no post-processing, mean over held-out cases;"
    )
    print(
        "  labels = mean over the labels, fg = union of labels vs background; 2-fold = adapted on"
    )
    print("  the other half's unlabelled scans; transductive = adapted on all the site's scans;")
    print("  worst = smallest per-case change (2-fold minus before)\n")
    head = "before | 2-fold | transductive | worst"
    print(f"| site | transform | labels: {head} | fg: {head} |")
    print("|---|---|" + "---:|" * 8)
    print("\n".join(lines))
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
