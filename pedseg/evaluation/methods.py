"""Method folders for ``pedseg compare``: reading ``metrics.csv`` / ``slice_dice.csv`` strictly.

A *method folder* holds ``metrics.csv`` (one row per case and label: ``domain, case, label,
label_name, dice, sensitivity, specificity, ravd, assd, mssd, hd95, ...``; fractions and mm, as
written by ``pedseg crossval`` / ``pedseg evaluate``) and optionally ``slice_dice.csv`` (``domain,
case, label, slice, dice``). A folder without ``metrics.csv`` whose sub-folders have one (a crossval
output) expands into those sub-folders. Without a ``domain`` column the domain is ``summary.json``'s
``domain``. The method's name is its folder's name (``evaluation`` folders take their parent's).
Problems name the file, line and column.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pedseg.errors import ConfigError, DatasetError
from pedseg.runfolder.layout import CURVES

__all__ = [
    "ALL",
    "METRICS",
    "REQUIRED_METRICS",
    "CaseLabel",
    "MethodResults",
    "expand_method_dirs",
    "load_method",
    "load_methods",
]

METRICS = ("dice", "sensitivity", "specificity", "ravd", "assd", "mssd", "hd95")
REQUIRED_METRICS = ("dice", "sensitivity", "specificity", "ravd", "assd", "mssd")
ALL = "all"


@dataclass(frozen=True)
class CaseLabel:
    """One row of a ``metrics.csv``: a label of a case (fractions and mm)."""

    domain: str
    case: str
    label: int
    label_name: str
    values: Mapping[str, float]


@dataclass(frozen=True, eq=False)
class MethodResults:
    """A method folder's per-case metrics and slice Dice samples (per domain)."""

    name: str
    path: Path
    rows: tuple[CaseLabel, ...]
    slice_dice: Mapping[str, np.ndarray] | None
    curves: Path | None = None

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(row.domain for row in self.rows))

    def case_values(self, metric: str, domain: str = ALL) -> dict[tuple[str, str], float]:
        """``(domain, case) -> metric averaged over the case's labels``, of one domain or all."""
        grouped: dict[tuple[str, str], list[float]] = {}
        for row in self.rows:
            if domain in (ALL, row.domain):
                grouped.setdefault((row.domain, row.case), []).append(row.values[metric])
        return {key: float(np.mean(values)) for key, values in grouped.items()}

    def values(self, metric: str, domain: str = ALL, label_name: str | None = None) -> list[float]:
        """Per-case values (label-averaged), or one label's per-case values."""
        if label_name is None:
            return list(self.case_values(metric, domain).values())
        return [
            r.values[metric]
            for r in self.rows
            if r.domain == domain and r.label_name == label_name and metric in r.values
        ]

    def slice_samples(self, domain: str = ALL) -> np.ndarray | None:
        """The 2D slice Dice samples of one domain or all, or ``None`` without slice_dice.csv."""
        if self.slice_dice is None:
            return None
        parts = [v for d, v in self.slice_dice.items() if domain in (ALL, d)]
        return np.concatenate(parts) if parts else np.zeros(0)


def _is_method(path: Path) -> bool:
    return (path / "metrics.csv").is_file()


def expand_method_dirs(paths: Sequence[Path]) -> list[Path]:
    """Method folders: each path itself, or its sub-folders holding a ``metrics.csv``."""
    found: list[Path] = []
    for path in paths:
        path = Path(path).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"{path}: no such folder; pass method folders written by `pedseg crossval` or "
                "`pedseg evaluate`"
            )
        children = (
            [path] if _is_method(path) else sorted(p for p in path.iterdir() if _is_method(p))
        )
        if not children:
            raise DatasetError(
                f"{path}: holds no metrics.csv, nor do its sub-folders; pass a method folder "
                "(DIR/<scheme>-<arch>) or a crossval output folder"
            )
        found.extend(c for c in children if c.resolve() not in {f.resolve() for f in found})
    return found


def _method_names(paths: Sequence[Path]) -> list[str]:
    """Folder names (``evaluation`` folders: their parent's), qualified by the parent if clashing."""
    named = [p.parent if p.name == "evaluation" and p.parent.name else p for p in paths]
    names = [p.name for p in named]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in named]


def _read_csv(
    folder: Path, name: str, required: Sequence[str]
) -> list[tuple[int, str, dict[str, str]]]:
    """``(line, domain, row)`` of a CSV with the ``required`` columns (see the module doc)."""
    path = folder / name
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns, rows = list(reader.fieldnames or []), list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"{path}: unreadable ({exc}); re-run `pedseg evaluate`") from exc
    missing = [c for c in required if c not in columns]
    if missing or not rows:
        what = f"required column {missing[0]!r} is missing" if missing else "holds no rows"
        raise DatasetError(
            f"{path}: {what} (columns: {', '.join(columns) or 'none'}); re-run `pedseg evaluate`"
        )
    default = None if "domain" in columns else _summary_domain(folder, path)
    out = [(line, row.get("domain") or default or "", row) for line, row in enumerate(rows, 2)]
    empty = next((line for line, domain, _ in out if not domain), None)
    if empty is not None:
        raise DatasetError(f"{path}: line {empty}, column 'domain' is empty; name the domain")
    return out


def _number(text: str | None, path: Path, line: int, column: str) -> float:
    try:
        value = float(text if text is not None else "")
    except ValueError:
        value = math.nan
    if math.isnan(value):
        raise DatasetError(f"{path}: line {line}, column {column!r}: {text!r} is not a number")
    return value


def _summary_domain(folder: Path, csv_path: Path) -> str:
    summary = folder / "summary.json"
    try:
        domain = json.loads(summary.read_text(encoding="utf-8")).get("domain")
    except (OSError, ValueError, AttributeError):
        domain = None
    if not isinstance(domain, str) or not domain:
        raise DatasetError(
            f"{csv_path}: has no 'domain' column and {summary} gives no 'domain'; add the "
            "column or re-run `pedseg evaluate --domain NAME`"
        )
    return domain


def load_method(path: Path, *, name: str | None = None) -> MethodResults:
    """Read one method folder (see the module docstring)."""
    path, rows = Path(path), []
    where = path / "metrics.csv"
    for line, domain, item in _read_csv(path, "metrics.csv", ("case", "label", *REQUIRED_METRICS)):
        values = {m: _number(item[m], where, line, m) for m in METRICS if item.get(m) is not None}
        bad = next(
            (m for m in ("dice", "sensitivity", "specificity") if not 0.0 <= values[m] <= 1.0), None
        )
        if bad is not None:
            raise DatasetError(
                f"{where}: line {line}, column {bad!r} must be a fraction in [0, 1], got "
                f"{values[bad]}; write fractions, not percentages"
            )
        label = int(_number(item["label"], where, line, "label"))
        rows.append(
            CaseLabel(domain, item["case"], label, item.get("label_name") or str(label), values)
        )
    slice_dice: dict[str, list[float]] | None = None
    if (path / "slice_dice.csv").is_file():
        slice_dice = {}
        for line, domain, item in _read_csv(path, "slice_dice.csv", ("case", "label", "dice")):
            value = _number(item["dice"], path / "slice_dice.csv", line, "dice")
            slice_dice.setdefault(domain, []).append(value)
    curves = (p for p in sorted(path.rglob(CURVES)) if "predictions" not in p.parts)
    return MethodResults(
        name=name or path.name,
        path=path,
        rows=tuple(rows),
        slice_dice=None
        if slice_dice is None
        else {k: np.asarray(v) for k, v in slice_dice.items()},
        curves=next(curves, None),
    )


def load_methods(paths: Sequence[Path]) -> list[MethodResults]:
    """:func:`expand_method_dirs` then :func:`load_method` each, with unique names. The parts of
    one sharded study (``pedseg crossval --shard I/N`` into separate folders: same settings but
    the shard) are merged: a method's rows from every part form one method."""
    folders = expand_method_dirs(paths)
    groups: dict[tuple[str, str], list[Path]] = {}
    for folder in folders:
        groups.setdefault((_study_key(folder.parent), folder.name), []).append(folder)
    merged: list[MethodResults] = []
    singles: list[Path] = []
    for (study, _), members in groups.items():
        if study and len(members) > 1:
            merged.append(_merge([load_method(m) for m in members]))
        else:
            singles.extend(members)
    loaded = [load_method(p, name=n) for p, n in zip(singles, _method_names(singles), strict=True)]
    order = {folder.name: k for k, folder in enumerate(folders)}
    return sorted([*loaded, *merged], key=lambda m: order.get(m.path.name, len(order)))


def _study_key(root: Path) -> str:
    """The settings of the crossval study in ``root`` without its shard (``""``: not a shard)."""
    try:
        settings = json.loads((root / "crossval.json").read_text(encoding="utf-8"))["settings"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        return ""
    if not isinstance(settings, dict) or "shard" not in settings:
        return ""
    return json.dumps({k: v for k, v in settings.items() if k != "shard"}, sort_keys=True)


def _merge(parts: Sequence[MethodResults]) -> MethodResults:
    """One method from the parts of a sharded study; a case in two parts is an error."""
    seen: dict[tuple[str, str, int], Path] = {}
    rows: list[CaseLabel] = []
    for part in parts:
        for row in part.rows:
            key = (row.domain, row.case, row.label)
            if key in seen:
                raise DatasetError(
                    f"{part.path}: case {row.case!r} of domain {row.domain!r} is also in "
                    f"{seen[key]}; the shards overlap: merge the parts of one study only"
                )
            seen[key] = part.path
            rows.append(row)
    slices: dict[str, list[np.ndarray]] = {}
    for part in parts:
        for domain, values in (part.slice_dice or {}).items():
            slices.setdefault(domain, []).append(values)
    return MethodResults(
        name=parts[0].name,
        path=parts[0].path,
        rows=tuple(rows),
        slice_dice={d: np.concatenate(v) for d, v in slices.items()} if slices else None,
        curves=next((p.curves for p in parts if p.curves is not None), None),
    )
