"""A cross-validated method's totals: all folds' rows in one ``metrics.csv`` / ``slice_dice.csv``
and the per-domain ``summary.json`` that ``pedseg compare`` reads."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError
from pedseg.evaluation.evaluate import (
    METRIC_COLUMNS,
    SLICE_COLUMNS,
    CaseResult,
    dump_json,
    summarize_cases,
    write_csv,
)
from pedseg.evaluation.metrics import METRIC_NAMES, LabelMetrics
from pedseg.evaluation.protocol import FoldPlan
from pedseg.io.atomic import write_text_atomic

__all__ = ["FOLD_COLUMNS", "aggregate_method", "settings_note"]

#: The columns that place a per-case row of a cross-validation in its fold.
FOLD_COLUMNS: tuple[str, ...] = ("domain", "fold")


def aggregate_method(
    folder: Path, plan: FoldPlan, specs: Sequence[DomainSpec], method: str, scheme: str, arch: str
) -> None:
    """The method's ``metrics.csv``, ``slice_dice.csv`` (all its folds that ran: a shard of a
    study has some of them) and ``summary.json``; nothing when no fold of it ran."""
    metrics: list[dict[str, str]] = []
    slices: list[dict[str, str]] = []
    present: list[int] = []
    for fold in plan.folds:
        rows = _read_rows(folder / f"fold-{fold.index}" / "metrics.csv")
        if rows:
            present.append(fold.index)
        metrics += rows
        slices += _read_rows(folder / f"fold-{fold.index}" / "slice_dice.csv")
    if not metrics:
        return
    write_csv(folder / "metrics.csv", (*FOLD_COLUMNS, *METRIC_COLUMNS), metrics, overwrite=True)
    write_csv(folder / "slice_dice.csv", (*FOLD_COLUMNS, *SLICE_COLUMNS), slices, overwrite=True)
    domains: dict[str, Any] = {}
    for spec in specs:
        results = _results_from_rows([r for r in metrics if r["domain"] == spec.name], spec)
        if results:
            domains[spec.name] = summarize_cases(results, spec)
    summary = {
        "method": method,
        "scheme": scheme,
        "arch": arch,
        "folds": len(plan.folds),
        "folds_present": present,
        "fold_method": plan.method,
        "domains": domains,
    }
    write_text_atomic(folder / "summary.json", dump_json(summary))


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _results_from_rows(rows: Sequence[Mapping[str, str]], spec: DomainSpec) -> list[CaseResult]:
    """Metrics-only :class:`CaseResult` objects from ``metrics.csv`` rows (one per label)."""
    groups: dict[tuple[str, str], list[LabelMetrics]] = {}
    for row in rows:
        metric = LabelMetrics(
            label=int(row["label"]),
            **{name: float(row[name]) for name in METRIC_NAMES},
            empty_reference=row["empty_reference"] == "1",
            empty_prediction=row["empty_prediction"] == "1",
        )
        groups.setdefault((row["fold"], row["case"]), []).append(metric)
    out: list[CaseResult] = []
    for (_, case), metrics in groups.items():
        if [m.label for m in metrics] != list(spec.label_ids):
            raise ConfigError(
                f"metrics.csv rows of {spec.name} case {case!r} do not hold its labels "
                f"{list(spec.label_ids)}; delete the method's fold folders to recompute them"
            )
        out.append(CaseResult(case, None, None, tuple(metrics), slice_dice=(), axis=-1))
    return out


def settings_note(folder: Path) -> str | None:
    """One line describing the training settings of the crossval study in ``folder`` (read from
    its ``crossval.json``), for the comparison report; ``None`` when ``folder`` is not a study."""
    import json

    path = Path(folder) / "crossval.json"
    try:
        settings = json.loads(path.read_text(encoding="utf-8"))["settings"]
        training = settings["training"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(training, dict):
        return None
    head = f"training settings of {folder} (folds: {settings.get('folds')})"
    budget = settings.get("budget_s")
    if isinstance(budget, int | float) and not isinstance(budget, bool) and budget > 0:
        # The stored config is what the plan started from, not what ran: say so, and what the
        # user fixed (the planned sizes, widths and steps are in each run's card).
        given = [key for key in settings.get("explicit") or () if key in training]
        fixed = ", ".join(f"{key} {_setting(key, training[key])}" for key in given)
        return (
            f"{head}: every (method, fold) planned for a {budget / 60:g}-minute budget from its "
            "fold's training data (image size, width, batch and steps: each run's card)"
            + (f"; given: {fixed}" if fixed else "")
        )
    shown = ", ".join(f"{key} {_setting(key, value)}" for key, value in training.items())
    return f"{head}: {shown}"


def _setting(key: str, value: Any) -> str:
    if isinstance(value, list):
        return ("x" if key == "image_size" else " ").join(str(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
