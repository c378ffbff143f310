"""Benchmark: which epoch's weights to keep, the best on validation or the final ones.

Every (method, fold) run of a ``pedseg crossval`` folder keeps two checkpoints: ``best`` (the epoch
whose mean validation Dice was highest; with a few dozen scans that is one or two validation cases
per domain) and ``latest`` (the end of the run, where the cosine schedule has decayed). Each fold's
test cases (cases that played no part in its training or its best-epoch choice) are predicted with
both weights, post-processed as ``pedseg predict`` does, and scored against their reference.

Printed per domain: mean Dice (over each case's labels) with both weights, the paired difference
final - best per case (mean, sd, better / worse cases, Wilcoxon signed-rank p over the cases),
case-labels with an MSSD above 30 mm, then per method and fold the two epochs and mean Dice. The
benchmark never changes the study: each variant is a temporary copy of the run's card and
artifacts with the checkpoint's verified weights (the card records their SHA-256).

``--record`` appends the Markdown to ``benchmarks/results/selection.md``.

    python benchmarks/bench_selection.py STUDY --data pelvis=../shared/data/pelvis \\
        --data spine=../shared/data/spine [--method dsl-contrastive-unet ...] [--record]
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from recording import append_record  # benchmarks/recording.py (the script's folder)
from scipy import stats
from studies import Study, domain_run, study_arguments, with_checkpoint  # benchmarks/studies.py

from pedseg.data.dataset import list_cases
from pedseg.evaluation.evaluate import evaluate_labels
from pedseg.export.cpu import cpu_description
from pedseg.inference.predictor import open_predictor
from pedseg.io import read_label, read_volume
from pedseg.runfolder import RunLayout
from pedseg.runfolder.checkpoint import read_state

VARIANTS = {"best": "best", "final": "latest"}  # variant -> checkpoint
FAR_MM = 30.0


@dataclass(frozen=True)
class Row:
    method: str
    fold: str
    case: str
    dice: dict[str, float]  # variant -> mean Dice over the case's labels
    far: dict[str, int]  # variant -> labels with MSSD > FAR_MM


def main() -> int:
    args = study_arguments(__doc__.splitlines()[0])
    methods, specs = args.methods, args.specs
    started = time.monotonic()
    rows: dict[str, list[Row]] = {}
    epochs: dict[tuple[str, str, str], dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="pedseg-selection-") as scratch:
        for method in methods:
            for fold, parts in args.folds:
                for spec in specs:
                    run = domain_run(args.root / method / f"fold-{fold}" / "run", spec.name)
                    if run is None:
                        print(f"{method} fold {fold}: no run for {spec.name}", file=sys.stderr)
                        continue
                    copies = {
                        variant: with_checkpoint(
                            run,
                            checkpoint,
                            Path(scratch) / f"{method}-{fold}-{spec.name}-{variant}",
                        )
                        for variant, checkpoint in VARIANTS.items()
                    }
                    epochs[(method, fold, spec.name)] = {
                        v: int(read_state(RunLayout(run).checkpoint(c))["epoch"])
                        for v, c in VARIANTS.items()
                    }
                    predictors = {
                        v: open_predictor(path, spec.name, backend="torch", device="cpu")
                        for v, path in copies.items()
                    }
                    cases = {c.case_id: c for c in list_cases(spec)}
                    for case_id in parts[spec.name]["test"]:
                        case = cases[case_id]
                        volume = read_volume(case.image)
                        reference = read_label(
                            case.label or case.image, allowed=(0, *spec.label_ids)
                        )
                        scored = {
                            v: evaluate_labels(
                                case_id, p.predict(volume).labels, reference, spec=spec
                            )
                            for v, p in predictors.items()
                        }
                        rows.setdefault(spec.name, []).append(
                            Row(
                                method,
                                fold,
                                case_id,
                                {
                                    v: float(np.mean([m.dice for m in s.metrics]))
                                    for v, s in scored.items()
                                },
                                {
                                    v: sum(m.mssd > FAR_MM for m in s.metrics)
                                    for v, s in scored.items()
                                },
                            )
                        )
    text = _report(args, methods, rows, epochs, time.monotonic() - started)
    print(text)
    if args.record:
        append_record("selection.md", "Best-validation vs final weights", text)
    return 0


def _report(
    args: Study,
    methods: list[str],
    rows: dict[str, list[Row]],
    epochs: dict[tuple[str, str, str], dict[str, int]],
    seconds: float,
) -> str:
    data = " ".join(f"--data {d}" for d in args.data)
    lines = [
        f"### {args.root.name} / {', '.join(methods)} ({dt.date.today().isoformat()})",
        "",
        f"`python benchmarks/bench_selection.py {args.root} {data} "
        + " ".join(f"--method {m}" for m in methods)
        + f"` on {cpu_description()}, load {os.getloadavg()[0]:.1f}; wall {seconds:.0f} s.",
        "",
        "| domain | cases | mean Dice best / final | final - best per case (mean ± sd) "
        "| better / worse | Wilcoxon p | MSSD > 30 mm best / final |",
        "|---|---:|---|---|---|---:|---|",
    ]
    for domain, items in [*rows.items(), ("all", [r for part in rows.values() for r in part])]:
        diffs = [r.dice["final"] - r.dice["best"] for r in items]
        nonzero = [d for d in diffs if abs(d) > 1e-9]
        p = stats.wilcoxon(nonzero).pvalue if len(nonzero) >= 2 else float("nan")
        sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        means = " / ".join(f"{np.mean([r.dice[v] for r in items]):.3f}" for v in VARIANTS)
        far = " / ".join(str(sum(r.far[v] for r in items)) for v in VARIANTS)
        shown = "**all**" if domain == "all" else domain
        lines.append(
            f"| {shown} | {len(items)} | {means} | {np.mean(diffs):+.3f} ± {sd:.3f} "
            f"| {sum(d > 1e-4 for d in diffs)} / {sum(d < -1e-4 for d in diffs)} | {p:.3f} "
            f"| {far} |"
        )
    lines += ["", "Per method, pooled over its folds' test cases, mean Dice best / final:", ""]
    for method in methods:
        parts = []
        for domain, items in rows.items():
            mine = [r for r in items if r.method == method]
            if mine:
                means = " / ".join(f"{np.mean([r.dice[v] for r in mine]):.3f}" for v in VARIANTS)
                parts.append(f"{domain} {means} ({len(mine)} cases)")
        lines.append(f"- {method}: " + "; ".join(parts))
    lines += ["", "Per method and fold: epoch best / final, mean Dice best / final:", ""]
    for (method, fold, domain), pair in epochs.items():
        part = [r for r in rows.get(domain, []) if r.method == method and r.fold == fold]
        means = " / ".join(f"{np.mean([r.dice[v] for r in part]):.3f}" for v in VARIANTS)
        lines.append(
            f"- {method} fold {fold} {domain}: epoch {pair['best']} / {pair['final']}, {means}"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
