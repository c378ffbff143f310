"""Benchmark: test-time augmentation (``predict --tta``) on the test cases of a cross-validation.

Every fold's trained run of a ``pedseg crossval`` folder predicts that fold's test cases (cases
that played no part in its training or model selection) twice, without and with TTA (the flip of
domains trained with one, shifts along a label chain for domains with one), and both label maps
are scored against the reference. Prints per domain the mean Dice and max MSSD each way, the
paired per-label Dice difference (mean, spread, wins/losses), the same per case (mean over its
labels; Wilcoxon signed-rank p), case-labels with an MSSD above 30 mm, the cases whose mean Dice
moved by more than 0.1 (a vertebra count gained or lost) and the time ratio, and appends a Markdown
section to ``benchmarks/results/tta.md`` with ``--record``.

    python benchmarks/bench_tta.py STUDY --data pelvis=../shared/data/pelvis \\
        --data spine=../shared/data/spine [--method dsl-contrastive-unet] [--record]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from pedseg.data.dataset import list_cases
from pedseg.domains.registry import DomainRegistry, parse_data_overrides
from pedseg.evaluation.evaluate import evaluate_labels
from pedseg.inference.predictor import open_predictor
from pedseg.io import read_label, read_volume


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--data", action="append", default=[])
    parser.add_argument("--method", default="dsl-contrastive-unet")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    folds = json.loads((args.study / "folds.json").read_text())
    specs = DomainRegistry().resolve(folds["domains"], data=parse_data_overrides(args.data))
    rows: dict[str, list[tuple[str, str, float, float, float, float]]] = {}
    seconds = {False: 0.0, True: 0.0}
    for fold, parts in sorted(folds["folds"].items(), key=lambda kv: int(kv[0])):
        run = args.study / args.method / f"fold-{fold}" / "run"
        if not run.is_dir():
            print(f"fold {fold}: no run at {run}; skipped", file=sys.stderr)
            continue
        for spec in specs:
            cases = {c.case_id: c for c in list_cases(spec)}
            predictors = {
                tta: open_predictor(run, spec.name, backend="torch", device="cpu", tta=tta)
                for tta in (False, True)
            }
            for case_id in parts[spec.name]["test"]:
                case = cases[case_id]
                volume = read_volume(case.image)
                reference = read_label(case.label or case.image, allowed=(0, *spec.label_ids))
                scored = {}
                for tta, predictor in predictors.items():
                    t0 = time.perf_counter()
                    labels = predictor.predict(volume).labels
                    seconds[tta] += time.perf_counter() - t0
                    scored[tta] = evaluate_labels(case_id, labels, reference, spec=spec).metrics
                for off, on in zip(scored[False], scored[True], strict=True):
                    name = dict(spec.labels)[off.label]
                    rows.setdefault(spec.name, []).append(
                        (case_id, name, off.dice, on.dice, off.mssd, on.mssd)
                    )
    lines = [
        f"### {args.study.name} / {args.method} ({dt.date.today().isoformat()})",
        "",
        f"`python benchmarks/bench_tta.py {args.study} --method {args.method}` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
        f"{os.getloadavg()[0]:.1f}; wall {time.monotonic() - started:.0f} s; network + "
        f"post-processing time with TTA / without: {seconds[True] / max(seconds[False], 1e-9):.2f}x",
        "",
        "| domain | label-cases | mean Dice off | mean Dice TTA | paired diff (mean ± sd) | "
        "TTA better / worse | max MSSD off | max MSSD TTA |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for domain, items in rows.items():
        diffs = [on - off for _, _, off, on, _, _ in items]
        better = sum(d > 1e-4 for d in diffs)
        worse = sum(d < -1e-4 for d in diffs)
        sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        lines.append(
            f"| {domain} | {len(items)} | {np.mean([r[2] for r in items]):.3f} | "
            f"{np.mean([r[3] for r in items]):.3f} | {np.mean(diffs):+.4f} ± {sd:.4f} | "
            f"{better} / {worse} | {max(r[4] for r in items):.1f} | {max(r[5] for r in items):.1f} |"
        )
    lines += [
        "",
        "| domain | cases | case mean Dice off / TTA | better / worse cases | Wilcoxon p "
        "| MSSD > 30 mm off / TTA | cases moved by > 0.1 (off -> TTA) |",
        "|---|---:|---|---|---:|---|---|",
    ]
    for domain, items in rows.items():
        per_case: dict[str, list[tuple[float, float]]] = {}
        for case_id, _, off, on, _, _ in items:
            per_case.setdefault(case_id, []).append((off, on))
        means = {
            c: (np.mean([a for a, _ in v]), np.mean([b for _, b in v])) for c, v in per_case.items()
        }
        diffs = [b - a for a, b in means.values()]
        nonzero = [d for d in diffs if abs(d) > 1e-9]
        p = stats.wilcoxon(nonzero).pvalue if len(nonzero) >= 2 else float("nan")
        moved = ", ".join(
            f"{c} {a:.2f} -> {b:.2f}" for c, (a, b) in means.items() if abs(b - a) > 0.1
        )
        far = f"{sum(r[4] > 30 for r in items)} / {sum(r[5] > 30 for r in items)}"
        lines.append(
            f"| {domain} | {len(means)} | {np.mean([a for a, _ in means.values()]):.3f} / "
            f"{np.mean([b for _, b in means.values()]):.3f} | {sum(d > 1e-4 for d in diffs)} / "
            f"{sum(d < -1e-4 for d in diffs)} | {p:.3f} | {far} | {moved or 'none'} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.record:
        out = Path(__file__).parent / "results" / "tta.md"
        header = (
            "" if out.exists() else "# Test-time augmentation on cross-validation test cases\n\n"
        )
        with out.open("a", encoding="utf-8") as handle:
            handle.write(header + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
