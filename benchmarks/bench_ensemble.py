"""Benchmark: does averaging the probabilities of several trained models segment better than one?

Members are (method, checkpoint) jobs of ``pedseg crossval`` studies; a case is scored only with
members for which it was a test case (never part of their training or best-epoch choice), so
members of studies with other splits (other ``--seed``) each contribute the fold that held the
case out. Every member predicts the case with its own image size; the softmax probabilities on the
input grid are averaged, the argmax is post-processed as ``pedseg predict`` does with the first
member's rules (components, label chain), and scored against the reference. Every single member,
every pair and the whole set are evaluated; for each combination the paired difference to its best
member (the member with the higher mean Dice on the domain) is tested per case (Wilcoxon).

``--record`` appends the Markdown to ``benchmarks/results/ensemble.md``.

    python benchmarks/bench_ensemble.py --member A=STUDY[:METHOD][@CHECKPOINT] --member B=… \\
        --data pelvis=../shared/data/pelvis --data spine=../shared/data/spine [--record]

``CHECKPOINT``: ``latest`` (the final weights) or ``best``; default the run's kept weights.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
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
from studies import DEFAULT_METHOD, domain_run, with_checkpoint  # benchmarks/studies.py

from pedseg.data.dataset import list_cases
from pedseg.domains.registry import DomainRegistry, parse_data_overrides
from pedseg.evaluation.evaluate import evaluate_labels
from pedseg.export.cpu import cpu_description
from pedseg.inference.postprocess import postprocess
from pedseg.inference.predictor import Predictor, open_predictor
from pedseg.io import read_label, read_volume

FAR_MM = 30.0


@dataclass(frozen=True)
class Member:
    name: str
    study: Path
    method: str
    checkpoint: str | None
    tests: dict[str, dict[str, str]]  # domain -> case -> fold whose test set holds it

    @classmethod
    def parse(cls, text: str) -> Member:
        name, sep, rest = text.partition("=")
        if not sep or not name or not rest:
            raise SystemExit(f"--member must be NAME=STUDY[:METHOD][@CHECKPOINT], got {text!r}")
        rest, _, checkpoint = rest.partition("@")
        study, _, method = rest.partition(":")
        if checkpoint not in ("", "latest", "best"):
            raise SystemExit(f"checkpoint must be latest or best, got {checkpoint!r}")
        folds = json.loads((Path(study) / "folds.json").read_text())["folds"]
        tests: dict[str, dict[str, str]] = {}
        for fold, parts in folds.items():
            for domain, split in parts.items():
                for case in split["test"]:
                    tests.setdefault(domain, {})[case] = fold
        return cls(name, Path(study), method or DEFAULT_METHOD, checkpoint or None, tests)


@dataclass(frozen=True)
class Score:
    combo: str
    domain: str
    case: str
    dice: float
    far: int


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--member", action="append", required=True)
    parser.add_argument("--data", action="append", default=[])
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    members = [Member.parse(text) for text in args.member]
    if len({m.name for m in members}) != len(members):
        raise SystemExit("member names must differ")
    domains = sorted({d for m in members for d in m.tests})
    specs = DomainRegistry().resolve(domains, data=parse_data_overrides(args.data))
    combos = [(m,) for m in members] + list(itertools.combinations(members, 2))
    if len(members) > 2:
        combos.append(tuple(members))
    started = time.monotonic()
    scores: list[Score] = []
    opened: dict[tuple[str, str, str], Predictor] = {}
    with tempfile.TemporaryDirectory(prefix="pedseg-ensemble-") as scratch:

        def predictor(member: Member, domain: str, fold: str) -> Predictor:
            key = (member.name, domain, fold)
            if key not in opened:
                run = domain_run(member.study / member.method / f"fold-{fold}" / "run", domain)
                if run is None:
                    raise SystemExit(f"{member.study}: no run of {domain} in fold {fold}")
                if member.checkpoint is not None:
                    run = with_checkpoint(
                        run, member.checkpoint, Path(scratch) / "-".join(key).replace("/", "_")
                    )
                opened[key] = open_predictor(
                    run, domain, backend="torch", device="cpu", postprocess=False
                )
            return opened[key]

        for spec in specs:
            for case in list_cases(spec):
                holding = [m for m in members if case.case_id in m.tests.get(spec.name, {})]
                if not holding:
                    continue
                volume = read_volume(case.image)
                reference = read_label(case.label or case.image, allowed=(0, *spec.label_ids))
                probabilities, rules = {}, {}
                for member in holding:
                    p = predictor(member, spec.name, member.tests[spec.name][case.case_id])
                    probabilities[member.name] = p.predict(volume, keep_probabilities=True)
                    rules[member.name] = p.info
                for combo in combos:
                    if any(m.name not in probabilities for m in combo):
                        continue
                    mean = np.mean([probabilities[m.name].probabilities for m in combo], axis=0)
                    info = rules[combo[0].name]
                    labels = postprocess(
                        np.argmax(mean, axis=-1).astype(np.uint8),
                        spec=spec.postprocess,
                        spacing=volume.spacing,
                        label_ids=spec.label_ids,
                        components=info.component_rules(),
                        chain=info.chain_rule(),
                    )
                    scored = evaluate_labels(case.case_id, labels, reference, spec=spec)
                    scores.append(
                        Score(
                            "+".join(m.name for m in combo),
                            spec.name,
                            case.case_id,
                            float(np.mean([m.dice for m in scored.metrics])),
                            sum(m.mssd > FAR_MM for m in scored.metrics),
                        )
                    )
                print(f"{spec.name} {case.case_id} done", file=sys.stderr, flush=True)
    text = _report(args, members, combos, scores, time.monotonic() - started)
    print(text)
    if args.record:
        append_record("ensemble.md", "Ensembles of trained models", text)
    return 0


def _report(
    args: argparse.Namespace,
    members: list[Member],
    combos: list[tuple[Member, ...]],
    scores: list[Score],
    seconds: float,
) -> str:
    table: dict[tuple[str, str], dict[str, Score]] = {}
    for s in scores:
        table.setdefault((s.combo, s.domain), {})[s.case] = s
    domains = sorted({s.domain for s in scores})
    described = "; ".join(
        f"{m.name} = {m.study.name}/{m.method}{'@' + m.checkpoint if m.checkpoint else ''}"
        for m in members
    )
    data = " ".join(f"--data {d}" for d in args.data)
    lines = [
        f"### {', '.join(m.name for m in members)} ({dt.date.today().isoformat()})",
        "",
        f"`python benchmarks/bench_ensemble.py {' '.join('--member ' + t for t in args.member)} "
        f"{data}` on {cpu_description()}, load {os.getloadavg()[0]:.1f}; wall {seconds:.0f} s. "
        f"Members: {described}.",
        "",
        "| combination | domain | cases | mean Dice | median | MSSD > 30 mm | vs best member "
        "(mean ± sd) | better / worse | Wilcoxon p |",
        "|---|---|---:|---:|---:|---:|---|---|---:|",
    ]
    for combo in combos:
        name = "+".join(m.name for m in combo)
        for domain in domains:
            mine = table.get((name, domain))
            if not mine:
                continue
            dice = [s.dice for s in mine.values()]
            cells = [name, domain, str(len(mine)), f"{np.mean(dice):.3f}"]
            cells += [f"{np.median(dice):.3f}", str(sum(s.far for s in mine.values()))]
            if len(combo) == 1:
                cells += ["", "", ""]
            else:
                best = max(
                    (table[(m.name, domain)] for m in combo),
                    key=lambda t: np.mean([t[c].dice for c in mine]),
                )
                diffs = [mine[c].dice - best[c].dice for c in mine]
                nonzero = [d for d in diffs if abs(d) > 1e-9]
                p = stats.wilcoxon(nonzero).pvalue if len(nonzero) >= 2 else float("nan")
                sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
                cells += [
                    f"{np.mean(diffs):+.3f} ± {sd:.3f}",
                    f"{sum(d > 1e-4 for d in diffs)} / {sum(d < -1e-4 for d in diffs)}",
                    f"{p:.3f}",
                ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
