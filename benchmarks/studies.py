"""What the benchmarks that re-predict a ``pedseg crossval`` study's test cases share: the command
line (``STUDY --data NAME=DIR … --method M … --record``) and the study's folds and domains."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pedseg.domains.registry import DomainRegistry, parse_data_overrides
from pedseg.domains.spec import DomainSpec

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
