"""What the benchmarks that re-predict a ``pedseg crossval`` study's test cases share: the command
line (``STUDY --data NAME=DIR … --method M … --record``), the study's folds and domains, the run
of a domain in a (method, fold) job, and a copy of a run with another checkpoint's weights."""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pedseg.domains.registry import DomainRegistry, parse_data_overrides
from pedseg.domains.spec import DomainSpec
from pedseg.runfolder import RunLayout, file_sha256
from pedseg.runfolder.card import read_card, write_card
from pedseg.runfolder.checkpoint import checkpoint_weights

DEFAULT_METHOD = "dsl-contrastive-unet"


@dataclass(frozen=True)
class Study:
    root: Path
    methods: list[str]
    folds: list[tuple[str, dict[str, Any]]]  # (fold, per-domain train/val/test), in fold order
    specs: list[DomainSpec]
    data: list[str]
    record: bool


def study_arguments(description: str) -> Study:
    """Parse the command line of a study benchmark and read the study's ``folds.json``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("study", type=Path)
    parser.add_argument("--data", action="append", default=[])
    parser.add_argument("--method", action="append", default=[], help=f"default {DEFAULT_METHOD}")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    folds = json.loads((args.study / "folds.json").read_text())
    specs = DomainRegistry().resolve(folds["domains"], data=parse_data_overrides(args.data))
    return Study(
        root=args.study,
        methods=args.method or [DEFAULT_METHOD],
        folds=sorted(folds["folds"].items(), key=lambda kv: int(kv[0])),
        specs=list(specs),
        data=list(args.data),
        record=args.record,
    )


def domain_run(run: Path, domain: str) -> Path | None:
    """The run folder holding ``domain``'s network (a baseline run holds one per domain); None
    when ``run`` has no model card (a job of the study that did not finish)."""
    if not (run / "model.json").is_file():
        return None
    card = read_card(run)
    if card.kind == "baseline":
        return run / card.members[domain]
    return run


def with_checkpoint(run: Path, checkpoint: str, out: Path) -> Path:
    """A copy of ``run``'s card and artifacts whose weights are those of ``checkpoint`` (the
    study itself is never changed; the card records the copied weights' SHA-256)."""
    layout = RunLayout(run)
    out.mkdir(parents=True)
    for item in run.iterdir():
        if item.is_file():
            shutil.copy2(item, out / item.name)
    target = RunLayout(out)
    shutil.copy2(checkpoint_weights(layout.checkpoint(checkpoint)), target.weights)
    write_card(target, replace(read_card(layout), model_sha256=file_sha256(target.weights)))
    return out
