"""Benchmark: renumbering a label chain (vertebrae) by order, on the test cases of a cross-validation.

Every fold's trained run of a ``pedseg crossval`` folder predicts that fold's test cases (cases
that played no part in its training or model selection) once; the network's label map is then
post-processed three ways: with the run's component rules alone (*none*), and with the label chain
found in that fold's training labels first, numbered by the offset that agrees with most of the
network's voxels (*votes*) or from the descriptor's ``postprocess.chain_anchor`` (*anchored*, what
``pedseg predict`` does now). Runs trained before label chains landed are given the chain here, from
the same training cases, as ``pedseg train`` now records it. With ``--select-on-validation`` a
fourth variant, *selected*, is the one of the three with the best mean Dice on that fold's
*validation* cases (the cases its training held out for the best-epoch choice, pinned in
``folds.json``: one per domain in ``pedseg crossval``; ties go to anchored, then votes): a choice made without the test cases, so its test
figure is an honest estimate of numbering chosen from data. Prints per domain and per label the
mean Dice of each variant, the paired per-label difference anchored - none (mean, sd,
wins/losses) and how many case-labels have MSSD above 30 mm, and appends a Markdown section to
``benchmarks/results/chain.md`` with ``--record``.

    python benchmarks/bench_chain.py STUDY --data pelvis=../shared/data/pelvis \\
        --data spine=../shared/data/spine [--method dsl-contrastive-unet] [--fold K ...] [--record]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
from recording import append_record  # benchmarks/recording.py (the script's folder)

from pedseg.data.dataset import Case, list_cases
from pedseg.data.fingerprint import compute_fingerprint
from pedseg.domains.registry import DomainRegistry, parse_data_overrides
from pedseg.domains.spec import DomainSpec
from pedseg.evaluation.evaluate import CaseResult, evaluate_labels
from pedseg.export.cpu import cpu_description
from pedseg.inference.chain import ChainRule
from pedseg.inference.postprocess import postprocess
from pedseg.inference.predictor import ModelInfo, Predictor, open_predictor
from pedseg.io import read_label, read_volume

VARIANTS = ("none", "votes", "anchored")
Row = tuple[str, str, str, dict[str, float], dict[str, float]]  # fold, case, label, dice, mssd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--data", action="append", default=[])
    parser.add_argument("--method", default="dsl-contrastive-unet")
    parser.add_argument("--fold", action="append", default=[], help="only these folds")
    parser.add_argument("--record", action="store_true")
    parser.add_argument(
        "--select-on-validation",
        action="store_true",
        help="add the variant chosen on each fold's validation cases",
    )
    args = parser.parse_args()
    started = time.monotonic()
    folds = json.loads((args.study / "folds.json").read_text())
    specs = DomainRegistry().resolve(folds["domains"], data=parse_data_overrides(args.data))
    rows: dict[str, list[Row]] = {}
    chains: dict[str, list[str]] = {}
    seconds = dict.fromkeys(VARIANTS, 0.0)
    selected: dict[str, list[str]] = {}
    for fold, parts in sorted(folds["folds"].items(), key=lambda kv: int(kv[0])):
        run = args.study / args.method / f"fold-{fold}" / "run"
        if args.fold and fold not in args.fold:
            continue
        if not run.is_dir():
            print(f"fold {fold}: no run at {run}; skipped", file=sys.stderr)
            continue
        for spec in specs:
            training = spec.with_data_root(args.study / "folds" / f"fold-{fold}" / spec.name)
            chain = compute_fingerprint(training).label_chain
            found = "none" if chain is None else chain.reason
            chains.setdefault(spec.name, []).append(f"fold {fold}: {found}")
            predictor = open_predictor(
                run, spec.name, backend="torch", device="cpu", postprocess=False
            )
            info = replace(predictor.info, label_chain=chain)
            rules = _variants(info.chain_rule(), spec)
            cases = {c.case_id: c for c in list_cases(spec)}

            scores = partial(_scores, cases, spec, predictor, rules, info, seconds)
            choice = None
            if args.select_on_validation:
                choice = _select(parts[spec.name]["val"], scores)
                selected.setdefault(spec.name, []).append(f"fold {fold}: {choice}")
            for case_id in parts[spec.name]["test"]:
                scored = scores(case_id)
                if choice is not None:
                    scored["selected"] = scored[choice]
                for k, metric in enumerate(scored["none"].metrics):
                    dice = {v: scored[v].metrics[k].dice for v in scored}
                    mssd = {v: scored[v].metrics[k].mssd for v in scored}
                    name = dict(spec.labels)[metric.label]
                    rows.setdefault(spec.name, []).append((fold, case_id, name, dice, mssd))
    text = _report(args, rows, chains, selected, seconds, time.monotonic() - started)
    print(text)
    if args.record:
        append_record("chain.md", "Label-chain renumbering on cross-validation test cases", text)
    return 0


def _scores(
    cases: dict[str, Case],
    spec: DomainSpec,
    predictor: Predictor,
    rules: dict[str, ChainRule | None],
    info: ModelInfo,
    seconds: dict[str, float],
    case_id: str,
) -> dict[str, CaseResult]:
    """One case predicted once, post-processed and scored with each variant's rule."""
    case = cases[case_id]
    volume = read_volume(case.image)
    reference = read_label(case.label or case.image, allowed=(0, *spec.label_ids))
    raw = predictor.predict(volume).labels
    out = {}
    for variant, rule in rules.items():
        t0 = time.perf_counter()
        labels = postprocess(
            raw,
            spec=spec.postprocess,
            spacing=volume.spacing,
            label_ids=spec.label_ids,
            components=info.component_rules(),
            chain=rule,
        )
        seconds[variant] += time.perf_counter() - t0
        out[variant] = evaluate_labels(case_id, labels, reference, spec=spec)
    return out


def _select(validation: list[str], scores: Callable[[str], dict[str, CaseResult]]) -> str:
    """The variant with the best mean Dice over the fold's validation cases (those its training
    held out for the best-epoch choice, pinned in ``folds.json``)."""
    means = dict.fromkeys(VARIANTS, 0.0)
    for case_id in validation:
        for variant, result in scores(case_id).items():
            means[variant] += float(np.mean([m.dice for m in result.metrics])) / len(validation)
    preference = ("anchored", "votes", "none")  # ties: the descriptor's default first
    return max(preference, key=lambda v: (round(means[v], 6), -preference.index(v)))


def _variants(rule: ChainRule | None, spec: DomainSpec) -> dict[str, ChainRule | None]:
    """The chain rule of each variant (the anchor from ``spec``, the descriptor as it is now)."""
    ids = {name: label_id for label_id, name in spec.labels}
    anchor = ids.get(spec.postprocess.chain_anchor or "")
    return {
        "none": None,
        "votes": None if rule is None else rule._replace(anchor=None),
        "anchored": None if rule is None else rule._replace(anchor=anchor),
    }


def _report(
    args: argparse.Namespace,
    rows: dict[str, list[Row]],
    chains: dict[str, list[str]],
    selected: dict[str, list[str]],
    seconds: dict[str, float],
    wall: float,
) -> str:
    shown_variants = (*VARIANTS, "selected") if selected else VARIANTS
    lines = [
        f"### {args.study.name} / {args.method} ({dt.date.today().isoformat()})",
        "",
        f"`python benchmarks/bench_chain.py {args.study} --method {args.method}"
        f"{' --select-on-validation' if selected else ''}` on "
        f"{cpu_description()}, load "
        f"{os.getloadavg()[0]:.1f}; wall {wall:.0f} s; post-processing seconds over all cases: "
        + ", ".join(f"{v} {seconds[v]:.1f}" for v in VARIANTS),
        "",
        "Chains found in each fold's training labels:",
        "",
    ]
    lines += [f"- {domain}: " + "; ".join(found) for domain, found in chains.items()]
    if selected:
        lines += ["", "Variant chosen on each fold's validation cases:", ""]
        lines += [f"- {domain}: " + "; ".join(found) for domain, found in selected.items()]
    names = " / ".join(shown_variants)
    lines += [
        "",
        f"| domain | label | case-labels | mean Dice {' | '.join(shown_variants)} | "
        f"anchored - none (mean ± sd) | better / worse | MSSD > 30 mm {names} |",
        "|---|---|---|" + "---|" * len(shown_variants) + "---|---|---|",
    ]
    for domain, items in rows.items():
        for name in [*dict.fromkeys(r[2] for r in items), "all"]:
            part = [r for r in items if name in ("all", r[2])]
            diffs = [r[3]["anchored"] - r[3]["none"] for r in part]
            sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
            means = " | ".join(
                f"{np.mean([r[3].get(v, np.nan) for r in part]):.3f}" for v in shown_variants
            )
            far = " / ".join(str(sum(r[4].get(v, 0.0) > 30 for r in part)) for v in shown_variants)
            shown = "**all**" if name == "all" else name
            lines.append(
                f"| {domain} | {shown} | {len(part)} | {means} | {np.mean(diffs):+.3f} ± {sd:.3f} | "
                f"{sum(d > 1e-4 for d in diffs)} / {sum(d < -1e-4 for d in diffs)} | {far} |"
            )
    folds = sorted({r[0] for items in rows.values() for r in items}, key=int)
    lines += ["", f"Per fold, mean Dice over case-labels, {names}:", ""]
    for domain, items in rows.items():
        parts = []
        for fold in folds:
            part = [r for r in items if r[0] == fold]
            if part:
                means = " / ".join(
                    f"{np.mean([r[3].get(v, np.nan) for r in part]):.3f}" for v in shown_variants
                )
                parts.append(f"fold {fold}: {means}")
        lines.append(f"- {domain}: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
