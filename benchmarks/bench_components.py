"""Benchmark: the 3D post-processing on cross-validation test cases, and the cause of every large
surface distance.

Every fold's trained run of a ``pedseg crossval`` folder predicts that fold's test cases (cases
that played no part in its training or model selection) once, without post-processing. The label
map is then post-processed two ways:

- *largest*: the label chain renumbered, then the run's component rules as they were before
  ``slot_rules`` (a vertebra keeps its largest component);
- *slots*: what ``pedseg predict`` does now: a renumbered chain member keeps its slot, every
  component of at least a chain unit (``pedseg.inference.postprocess.slot_rules``).

Domains without a chain get the same result both ways. Printed per domain and label: mean Dice of
each, the paired difference slots - largest (mean, sd, better / worse case-labels) and how many
case-labels have an MSSD (maximum symmetric surface distance) above 30 mm. Then every case-label
whose MSSD under *slots* is above 30 mm is given its cause, from the voxels farther than 30 mm
(less one voxel) from the other mask:

- *another label's structure*: a predicted component that touches no reference voxel of the
  label but another label's (a vertebra numbered one level off);
- *stray component*: a predicted component that touches no labelled reference voxel;
- *over-extent*: a predicted component that overlaps the reference but reaches far beyond it;
- *reference speck*: a reference component of less than 5 % of the label's reference volume, far
  from the prediction (an annotation artefact: no prediction can be near it);
- *missed part*: a larger reference component that the prediction leaves far uncovered.

``--record`` appends the Markdown to ``benchmarks/results/components.md``.

    python benchmarks/bench_components.py STUDY --data pelvis=../shared/data/pelvis \\
        --data spine=../shared/data/spine [--method dsl-contrastive-unet ...] [--record]
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cc3d
import numpy as np
from recording import append_record  # benchmarks/recording.py (the script's folder)
from scipy import ndimage
from studies import Study, study_arguments  # benchmarks/studies.py

from pedseg.data.dataset import list_cases
from pedseg.evaluation.evaluate import evaluate_labels
from pedseg.export.cpu import cpu_description
from pedseg.inference.chain import order_chain
from pedseg.inference.postprocess import postprocess
from pedseg.inference.predictor import open_predictor
from pedseg.io import read_label, read_volume

VARIANTS = ("largest", "slots")
FAR_MM = 30.0
SPECK_FRACTION = 0.05


@dataclass(frozen=True)
class Row:
    method: str
    fold: str
    case: str
    label: str
    dice: dict[str, float]
    mssd: dict[str, float]
    causes: tuple[str, ...]


def main() -> int:
    args = study_arguments(__doc__.splitlines()[0])
    methods, specs = args.methods, args.specs
    started = time.monotonic()
    rows: dict[str, list[Row]] = {}
    for method in methods:
        for fold, parts in args.folds:
            for spec in specs:
                run = _run_for(args.root / method / f"fold-{fold}")
                if run is None:
                    print(f"{method} fold {fold}: no run for {spec.name}; skipped", file=sys.stderr)
                    continue
                predictor = open_predictor(
                    run, spec.name, backend="torch", device="cpu", postprocess=False
                )
                info = predictor.info
                chain, rules = info.chain_rule(), info.component_rules()
                cases = {c.case_id: c for c in list_cases(spec)}
                for case_id in parts[spec.name]["test"]:
                    case = cases[case_id]
                    volume = read_volume(case.image)
                    reference = read_label(case.label or case.image, allowed=(0, *spec.label_ids))
                    raw = predictor.predict(volume).labels
                    spacing = volume.spacing
                    renumbered = raw if chain is None else order_chain(raw, chain, spacing=spacing)
                    clean = partial(
                        postprocess,
                        spec=spec.postprocess,
                        spacing=spacing,
                        label_ids=spec.label_ids,
                        components=rules,
                    )
                    maps = {"largest": clean(renumbered), "slots": clean(raw, chain=chain)}
                    scored = {
                        v: evaluate_labels(case_id, m, reference, spec=spec)
                        for v, m in maps.items()
                    }
                    for k, metric in enumerate(scored["slots"].metrics):
                        mssd = {v: scored[v].metrics[k].mssd for v in VARIANTS}
                        causes: tuple[str, ...] = ()
                        if mssd["slots"] > FAR_MM:
                            causes = _causes(
                                maps["slots"] == metric.label,
                                reference.array == metric.label,
                                reference.array > 0,
                                volume.spacing,
                            )
                        rows.setdefault(spec.name, []).append(
                            Row(
                                method,
                                fold,
                                case_id,
                                dict(spec.labels)[metric.label],
                                {v: scored[v].metrics[k].dice for v in VARIANTS},
                                mssd,
                                causes,
                            )
                        )
    text = _report(args, methods, rows, time.monotonic() - started)
    print(text)
    if args.record:
        append_record("components.md", "Component rules on cross-validation test cases", text)
    return 0


def _run_for(fold_dir: Path) -> Path | None:
    """The fold's run folder (for the separate baseline it holds one model per domain, which
    ``open_predictor`` picks by ``domain``)."""
    run = fold_dir / "run"
    return run if (run / "model.json").is_file() else None


def _causes(
    pred: np.ndarray, ref: np.ndarray, labelled: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[str, ...]:
    """Why the masks are far apart somewhere (see the module docstring); ``labelled``: every
    reference voxel of any label."""
    if not pred.any() or not ref.any():
        return ("empty prediction" if not pred.any() else "empty reference",)
    limit = FAR_MM - max(spacing)
    causes: list[str] = []
    to_ref = ndimage.distance_transform_edt(~ref, sampling=spacing)
    far_pred = pred & (to_ref > limit)
    if far_pred.any():
        components = cc3d.connected_components(pred, connectivity=26)
        for component in np.unique(components[far_pred]):
            inside = components == component
            if (inside & ref).any():
                causes.append("over-extent")
            elif (inside & labelled).any():
                causes.append("another label's structure")
            else:
                causes.append("stray component")
    to_pred = ndimage.distance_transform_edt(~pred, sampling=spacing)
    far_ref = ref & (to_pred > limit)
    if far_ref.any():
        components = cc3d.connected_components(ref, connectivity=26)
        sizes = np.bincount(components.ravel())
        for component in np.unique(components[far_ref]):
            small = sizes[component] < SPECK_FRACTION * int(ref.sum())
            causes.append("reference speck" if small else "missed part")
    return tuple(dict.fromkeys(causes))


def _report(args: Study, methods: list[str], rows: dict[str, list[Row]], wall: float) -> str:
    lines = [
        f"### {args.root.name} / {', '.join(methods)} ({dt.date.today().isoformat()})",
        "",
        f"`python benchmarks/bench_components.py {args.root}"
        + "".join(f" --method {m}" for m in methods)
        + f"` on {cpu_description()}, load {os.getloadavg()[0]:.1f}; wall {wall:.0f} s.",
        "",
        "| domain | label | case-labels | mean Dice largest / slots | slots - largest (mean ± sd) "
        "| better / worse | MSSD > 30 mm largest / slots |",
        "|---|---|---|---|---|---|---|",
    ]
    for domain, items in rows.items():
        for name in [*dict.fromkeys(r.label for r in items), "all"]:
            part = [r for r in items if name in ("all", r.label)]
            diffs = [r.dice["slots"] - r.dice["largest"] for r in part]
            sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
            means = " / ".join(f"{np.mean([r.dice[v] for r in part]):.3f}" for v in VARIANTS)
            far = " / ".join(str(sum(r.mssd[v] > FAR_MM for r in part)) for v in VARIANTS)
            shown = "**all**" if name == "all" else name
            lines.append(
                f"| {domain} | {shown} | {len(part)} | {means} | {np.mean(diffs):+.3f} ± {sd:.3f} "
                f"| {sum(d > 1e-4 for d in diffs)} / {sum(d < -1e-4 for d in diffs)} | {far} |"
            )
    lines += ["", "Per method and fold, mean Dice over case-labels, largest / slots:", ""]
    for domain, items in rows.items():
        parts = []
        for method in methods:
            for fold in sorted({r.fold for r in items}, key=int):
                part = [r for r in items if r.fold == fold and r.method == method]
                if part:
                    means = " / ".join(
                        f"{np.mean([r.dice[v] for r in part]):.3f}" for v in VARIANTS
                    )
                    parts.append(f"{method} fold {fold}: {means}")
        lines.append(f"- {domain}: " + "; ".join(parts))
    lines += ["", f"Case-labels with MSSD > {FAR_MM:g} mm (slots) and their causes:", ""]
    tally: dict[str, dict[str, int]] = {}
    for domain, items in rows.items():
        for r in items:
            if r.causes:
                lines.append(
                    f"- {domain} {r.case} {r.label} ({r.method} fold {r.fold}): MSSD "
                    f"{r.mssd['slots']:.1f} mm, Dice {r.dice['slots']:.3f}: {', '.join(r.causes)}"
                )
                for cause in r.causes:
                    tally.setdefault(domain, {}).setdefault(cause, 0)
                    tally[domain][cause] += 1
    lines += [""]
    lines += [
        f"- {domain}: " + ", ".join(f"{cause} {n}" for cause, n in sorted(counts.items()))
        for domain, counts in tally.items()
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
