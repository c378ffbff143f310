"""Benchmark: renumbering a label chain (vertebrae) by order, on the test cases of a cross-validation.

Every fold's trained run of a ``pedseg crossval`` folder predicts that fold's test cases (cases
that played no part in its training or model selection) once; the network's label map is then
post-processed twice, with the run's component rules alone and with the label chain found in that
fold's training labels first (what ``pedseg train`` records in the run card since the chain
landed; runs trained before it are given the chain here, from the same training cases). Both are
scored against the reference. Prints per domain and per label the mean Dice each way, the paired
per-label difference (mean, sd, wins/losses) and how many case-labels have MSSD above 30 mm, and
appends a Markdown section to ``benchmarks/results/chain.md`` with ``--record``.

    python benchmarks/bench_chain.py STUDY --data pelvis=../shared/data/pelvis \\
        --data spine=../shared/data/spine [--method dsl-contrastive-unet] [--fold K ...] [--record]
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
from dataclasses import replace
from pathlib import Path

import numpy as np

from pedseg.data.dataset import list_cases
from pedseg.data.fingerprint import compute_fingerprint
from pedseg.domains.registry import DomainRegistry, parse_data_overrides
from pedseg.evaluation.evaluate import evaluate_labels
from pedseg.inference.postprocess import postprocess
from pedseg.inference.predictor import open_predictor
from pedseg.io import read_label, read_volume

Row = tuple[
    str, str, str, float, float, float, float
]  # fold, case, label, dice off/on, mssd off/on


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--data", action="append", default=[])
    parser.add_argument("--method", default="dsl-contrastive-unet")
    parser.add_argument("--fold", action="append", default=[], help="only these folds")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    folds = json.loads((args.study / "folds.json").read_text())
    specs = DomainRegistry().resolve(folds["domains"], data=parse_data_overrides(args.data))
    rows: dict[str, list[Row]] = {}
    chains: dict[str, list[str]] = {}
    seconds = {False: 0.0, True: 0.0}
    for fold, parts in sorted(folds["folds"].items(), key=lambda kv: int(kv[0])):
        if args.fold and fold not in args.fold:
            continue
        run = args.study / args.method / f"fold-{fold}" / "run"
        if not run.is_dir():
            print(f"fold {fold}: no run at {run}; skipped", file=sys.stderr)
            continue
        for spec in specs:
            training = spec.with_data_root(args.study / "folds" / f"fold-{fold}" / spec.name)
            chain = compute_fingerprint(training).label_chain
            chains.setdefault(spec.name, []).append(
                f"fold {fold}: " + ("none" if chain is None else chain.reason)
            )
            cases = {c.case_id: c for c in list_cases(spec)}
            predictor = open_predictor(
                run, spec.name, backend="torch", device="cpu", postprocess=False
            )
            info = predictor.info if chain is None else replace(predictor.info, label_chain=chain)
            for case_id in parts[spec.name]["test"]:
                case = cases[case_id]
                volume = read_volume(case.image)
                reference = read_label(case.label or case.image, allowed=(0, *spec.label_ids))
                raw = predictor.predict(volume).labels
                scored = {}
                for use_chain in (False, True):
                    t0 = time.perf_counter()
                    labels = postprocess(
                        raw,
                        spec=spec.postprocess,
                        spacing=volume.spacing,
                        label_ids=spec.label_ids,
                        components=info.component_rules(),
                        chain=info.chain_rule() if use_chain else None,
                    )
                    seconds[use_chain] += time.perf_counter() - t0
                    scored[use_chain] = evaluate_labels(
                        case_id, labels, reference, spec=spec
                    ).metrics
                for off, on in zip(scored[False], scored[True], strict=True):
                    name = dict(spec.labels)[off.label]
                    rows.setdefault(spec.name, []).append(
                        (fold, case_id, name, off.dice, on.dice, off.mssd, on.mssd)
                    )
    text = _report(args, rows, chains, seconds, time.monotonic() - started)
    print(text)
    if args.record:
        out = Path(__file__).parent / "results" / "chain.md"
        header = (
            "" if out.exists() else "# Label-chain renumbering on cross-validation test cases\n\n"
        )
        with out.open("a", encoding="utf-8") as handle:
            handle.write(header + text + "\n")
    return 0


def _report(
    args: argparse.Namespace,
    rows: dict[str, list[Row]],
    chains: dict[str, list[str]],
    seconds: dict[bool, float],
    wall: float,
) -> str:
    lines = [
        f"### {args.study.name} / {args.method} ({dt.date.today().isoformat()})",
        "",
        f"`python benchmarks/bench_chain.py {args.study} --method {args.method}` on "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load "
        f"{os.getloadavg()[0]:.1f}; wall {wall:.0f} s; post-processing time with the chain / "
        f"without: {seconds[True] / max(seconds[False], 1e-9):.2f}x "
        f"({seconds[True]:.1f} s / {seconds[False]:.1f} s over all cases)",
        "",
        "Chains found in each fold's training labels:",
        "",
    ]
    for domain, found in chains.items():
        lines += [f"- {domain}: " + "; ".join(found)]
    lines += [
        "",
        "| domain | label | case-labels | mean Dice without | mean Dice with chain | "
        "paired diff (mean ± sd) | better / worse | MSSD > 30 mm without / with |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for domain, items in rows.items():
        names = list(dict.fromkeys(r[2] for r in items))
        for name in [*names, "all"]:
            part = [r for r in items if name in ("all", r[2])]
            diffs = [on - off for _, _, _, off, on, _, _ in part]
            sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
            far = (sum(r[5] > 30 for r in part), sum(r[6] > 30 for r in part))
            lines.append(
                f"| {domain} | {'**all**' if name == 'all' else name} | {len(part)} | "
                f"{np.mean([r[3] for r in part]):.3f} | {np.mean([r[4] for r in part]):.3f} | "
                f"{np.mean(diffs):+.3f} ± {sd:.3f} | {sum(d > 1e-4 for d in diffs)} / "
                f"{sum(d < -1e-4 for d in diffs)} | {far[0]} / {far[1]} |"
            )
    folds = sorted({r[0] for items in rows.values() for r in items}, key=int)
    lines += ["", "Per fold, mean Dice without → with the chain:", ""]
    for domain, items in rows.items():
        parts = []
        for fold in folds:
            part = [r for r in items if r[0] == fold]
            if part:
                parts.append(
                    f"fold {fold} {np.mean([r[3] for r in part]):.3f} → "
                    f"{np.mean([r[4] for r in part]):.3f}"
                )
        lines.append(f"- {domain}: " + ", ".join(parts))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
