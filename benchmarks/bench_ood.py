"""Benchmark: does ``pedseg predict --domain D`` flag the scans it should, and only those?

Protocol. ``STUDY`` is a ``pedseg crossval`` folder (``folds.json``, ``METHOD/fold-K/run``). For every
fold whose run is complete, the fold's *test* cases (no part in its training or model selection)
are the in-domain scans; the out-of-distribution scans are made from them and from elsewhere
(:mod:`ood_scans`):

* ``inverted``, ``swapped``, ``noise``, ``blank`` (all-zero and constant) variants of the domain's
  first ``--variants`` test cases (default 3), each with the case's own geometry;
* ``phantom``: ankle and shoulder phantoms (another anatomy, pedseg's synthetic MR);
* ``other-domain``: the real test cases of the *other* domains, given as ``--domain D`` (a real scan
  of the wrong anatomy, the commonest mistake).

Each domain's scans go through the real command, ``python -m pedseg predict FOLDER --domain D
--model RUN --device cpu`` (a subprocess, as a user runs it), and each case's JSON report is read:
its ``ood`` entry (flagged, reasons). Printed and, with ``--record``, appended to
``benchmarks/results/ood.md``: per fold and overall, the in-domain false-alarm rate, the detection
rate of each OOD kind, which checks fired, and every miss and false alarm with its evidence.

    python benchmarks/bench_ood.py STUDY --data pelvis=../shared/data/pelvis \\
        --data spine=../shared/data/spine [--fold 0 --fold 1] [--method M] [--record]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ood_scans import KINDS, derived, phantoms  # benchmarks/ood_scans.py (the script's folder)
from recording import append_record  # benchmarks/recording.py (the script's folder)

from pedseg.data.dataset import list_cases
from pedseg.domains.registry import DomainRegistry, parse_data_overrides

IN_DOMAIN = "in-domain"
GROUPS = (IN_DOMAIN, "other-domain", "phantom", "inverted", "swapped", "noise", "blank")
SEP = "__"  # <kind>__<case>.nii.gz


@dataclass(frozen=True)
class Outcome:
    fold: str
    domain: str  # the --domain given
    group: str
    name: str
    flagged: bool
    checks: tuple[str, ...]  # the kinds of evidence that fired (blank, embedding, ...)
    evidence: str  # the values, for misses and false alarms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--data", action="append", default=[])
    parser.add_argument("--method", default="dsl-contrastive-unet")
    parser.add_argument("--fold", action="append", default=None, help="(default: every complete)")
    parser.add_argument("--domain", action="append", default=None, help="(default: every one)")
    parser.add_argument(
        "--variants",
        type=int,
        default=3,
        help="Test cases per domain that inverted/swapped/noise/blank variants are made of.",
    )
    parser.add_argument("--keep", type=Path, default=None, help="Keep scans and outputs here.")
    parser.add_argument("--note", default="", help="A line recorded with the results.")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    load = os.getloadavg()[0]
    plan = json.loads((args.study / "folds.json").read_text(encoding="utf-8"))
    specs = DomainRegistry().resolve(plan["domains"], data=parse_data_overrides(args.data))
    images = {s.name: {c.case_id: c.image for c in list_cases(s)} for s in specs}
    outcomes: list[Outcome] = []
    used: list[str] = []
    failed: set[tuple[str, str]] = set()  # (fold, case): a test case whose prediction lost a label
    for fold in sorted(plan["folds"], key=int):
        run = args.study / args.method / f"fold-{fold}" / "run"
        if args.fold is not None and fold not in args.fold:
            continue
        metrics = run.parent / "metrics.csv"  # written once the fold is trained and evaluated
        if not all(p.is_file() for p in (run / "model.json", run / "domains.json", metrics)):
            print(f"fold {fold}: no complete run at {run}; skipped", file=sys.stderr)
            continue
        used.append(fold)
        failed |= {(fold, case) for case in missed_labels(metrics)}
        tests = {
            d: [images[d][c] for c in parts["test"]] for d, parts in plan["folds"][fold].items()
        }
        with _workspace(args.keep, fold) as tmp:
            others = phantoms(Path(tmp) / "phantoms")
            for spec in specs:
                if args.domain is not None and spec.name not in args.domain:
                    continue
                folder = Path(tmp) / spec.name
                folder.mkdir()
                write_inputs(folder, spec.name, tests, others, variants=args.variants)
                reports = predict(folder, Path(tmp) / f"out-{spec.name}", spec.name, run)
                outcomes += [outcome(fold, spec.name, name, r) for name, r in reports.items()]
    wall = time.monotonic() - started
    text = report(args, used, outcomes, failed, wall=wall, load=load)
    print(text)
    if args.record:
        append_record("ood.md", "Out-of-distribution flagging of `pedseg predict`", text)
    return 0


@contextlib.contextmanager
def _workspace(keep: Path | None, fold: str) -> Iterator[Path]:
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="bench-ood-") as tmp:
            yield Path(tmp)
        return
    folder = keep / f"fold-{fold}"
    folder.mkdir(parents=True)  # refuses an existing one
    yield folder


def write_inputs(
    folder: Path,
    domain: str,
    tests: dict[str, list[Path]],
    others: list[tuple[str, Path]],
    *,
    variants: int,
) -> None:
    """The scans given as ``--domain domain``: ``<group>__<case>.nii.gz`` (links or variants)."""

    def link(group: str, source: Path) -> None:
        (folder / f"{group}{SEP}{source.name}").symlink_to(source.resolve())

    for source in tests[domain]:
        link(IN_DOMAIN, source)
    for other, sources in tests.items():
        for source in sources if other != domain else []:
            link("other-domain", source)
    for _, source in others:
        link("phantom", source)
    made = folder / "variants"
    made.mkdir()
    for index, source in enumerate(tests[domain][:variants]):
        for kind in KINDS:
            path = derived(made, source, kind, index)
            group = "blank" if kind.startswith("blank") else kind
            path.rename(folder / f"{group}{SEP}{kind}-{source.name}")


def predict(folder: Path, out: Path, domain: str, run: Path) -> dict[str, dict[str, Any]]:
    """``pedseg predict`` on every scan of ``folder`` as ``domain``; each case's JSON report."""
    inputs = sorted(p for p in folder.iterdir() if p.name.endswith(".nii.gz"))
    command = [sys.executable, "-m", "pedseg", "predict", *map(str, inputs)]
    command += ["--domain", domain, "--model", str(run), "--out", str(out), "--device", "cpu"]
    done = subprocess.run([*command, "--quiet"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"pedseg predict failed ({done.returncode}): {done.stderr[-2000:]}")
    reports = {}
    for path in sorted(out.glob(f"*{SEP}*.json")):
        reports[path.name.removesuffix(".json")] = json.loads(path.read_text(encoding="utf-8"))
    if len(reports) != len(inputs):
        raise SystemExit(f"{len(inputs)} scans given as {domain}, {len(reports)} reports in {out}")
    return reports


def missed_labels(metrics: Path) -> set[str]:
    """Test cases of a fold where the model missed a label entirely: Dice 0 against a non-empty
    reference (the crossval's own evaluation); a failed segmentation, which the prediction check
    may rightly flag."""
    with metrics.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {r["case"] for r in rows if float(r["dice"]) == 0.0 and r["empty_reference"] == "0"}


def outcome(fold: str, domain: str, name: str, report: dict[str, Any]) -> Outcome:
    group, case = name.split(SEP, 1)
    ood = report.get("ood") or {"flagged": False, "reasons": [], "checks": {}}
    reasons = [str(r) for r in ood["reasons"]]
    fired = tuple(sorted({r.split(":", 1)[0] for r in reasons}))
    values = dict(ood.get("checks") or {})
    distance = (report.get("recognition") or {}).get("median_distance")
    if distance:
        values["distance"] = distance
    return Outcome(fold, domain, group, case, bool(ood["flagged"]), fired, json.dumps(values))


def report(
    args: argparse.Namespace,
    folds: list[str],
    rows: list[Outcome],
    failed: set[tuple[str, str]],
    *,
    wall: float,
    load: float,
) -> str:
    command = ["python", "benchmarks/bench_ood.py", str(args.study)]
    command += [f"--data={d}" for d in args.data] + ["--method", args.method]
    command += [f"--fold={f}" for f in args.fold or []]
    command += [f"--domain={d}" for d in args.domain or []] + [f"--variants={args.variants}"]
    lines = [
        f"## {args.study.name} / {args.method}, folds {', '.join(folds) or 'none'} "
        f"({dt.date.today().isoformat()})",
        "",
        f"`{shlex.join(command)}` on {_cpu()}, {os.cpu_count()} cores, load {load:.1f} at the "
        f"start; wall {wall:.0f} s for {len(rows)} predictions.",
    ]
    if args.note:
        lines += ["", args.note]
    lines += [
        "",
        "Flagged / scans (in-domain: false alarms; every other column: detections), per fold and "
        "the domain given with `--domain`:",
        "",
        "| fold | --domain | " + " | ".join(GROUPS) + " |",
        "|---|---|" + "---|" * len(GROUPS),
    ]
    keys = sorted({(r.fold, r.domain) for r in rows}, key=lambda k: (int(k[0]), k[1]))
    for fold, domain in [*keys, ("all", "all")]:
        subset = [r for r in rows if fold in ("all", r.fold) and domain in ("all", r.domain)]
        lines.append(
            f"| {fold} | {domain} | " + " | ".join(_rate(subset, g) for g in GROUPS) + " |"
        )
    ood = [r for r in rows if r.group != IN_DOMAIN]
    inside = [r for r in rows if r.group == IN_DOMAIN]
    lines += [
        "",
        f"**Overall**: {_rate(ood, None)} out-of-distribution scans flagged "
        f"({_pct(ood)}; target >= 95 %), {_rate(inside, IN_DOMAIN)} in-domain scans flagged "
        f"({_pct(inside)}; target <= 5 %).",
    ]
    sound = [r for r in inside if (r.fold, r.name) not in failed]
    if len(sound) < len(inside):
        lines += [
            "",
            f"{len(inside) - len(sound)} in-domain scans were segmented with a label missed "
            "entirely (Dice 0 against a non-empty reference, in the crossval's `metrics.csv`); "
            f"on the {len(sound)} others {_rate(sound, IN_DOMAIN)} were flagged ({_pct(sound)}).",
        ]
    lines += [
        "",
        "Which checks fired (scans with that reason / flagged scans of the group):",
        "",
        "| group | " + " | ".join(CHECKS) + " |",
        "|---|" + "---|" * len(CHECKS),
    ]
    for group in GROUPS:
        flagged = [r for r in rows if r.group == group and r.flagged]
        fired = Counter(c for r in flagged for c in r.checks)
        lines.append(
            f"| {group} | " + " | ".join(f"{fired[c]}/{len(flagged)}" for c in CHECKS) + " |"
        )
    wrong = [r for r in rows if r.flagged == (r.group == IN_DOMAIN)]
    if wrong:
        lines += [
            "",
            "Misses and false alarms:",
            "",
            "| fold | --domain | group | scan | fired | evidence |",
        ]
        lines.append("|---|---|---|---|---|---|")
        lines += [
            f"| {r.fold} | {r.domain} | {r.group} | {r.name} | {', '.join(r.checks) or '-'} | "
            f"`{r.evidence}` |"
            for r in wrong
        ]
    return "\n".join(lines) + "\n"


CHECKS = ("blank", "embedding", "geometry", "intensities", "prediction")


def _rate(rows: list[Outcome], group: str | None) -> str:
    subset = [r for r in rows if group is None or r.group == group]
    return f"{sum(r.flagged for r in subset)}/{len(subset)}" if subset else "-"


def _pct(rows: list[Outcome]) -> str:
    return f"{100 * sum(r.flagged for r in rows) / max(len(rows), 1):.1f} %"


def _cpu() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return platform.machine()
    names = [ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Model name")]
    return names[0] if names else platform.machine()


if __name__ == "__main__":
    raise SystemExit(main())
