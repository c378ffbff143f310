"""``pedseg compare``: per-method metrics folders -> the paper's Tables 1, S1 and 2.

Input. A *method folder* holds ``metrics.csv`` (one row per case and label: ``domain, case, label,
label_name, dice, sensitivity, specificity, ravd, assd, mssd, hd95, ...``; fractions and mm, as
written by ``pedseg crossval`` / ``pedseg evaluate``) and optionally ``slice_dice.csv`` (``domain,
case, label, slice, dice``). A folder without ``metrics.csv`` whose sub-folders have one (a crossval
output) expands into those sub-folders. Without a ``domain`` column the domain is ``summary.json``'s
``domain``. The method's name is its folder's name (``evaluation`` folders take their parent's).

Tables 1 and S1: each metric is first averaged over a case's labels (the paper reports "the average
scores" over bones), then mean ± sample std (ddof 1) over cases per domain, plus "all" (every case)
with several domains; the per-label table: mean ± std over the cases of each label. Dice,
sensitivity, specificity, RAVD in %, distances in mm; an infinite RAVD (hallucinated structure)
stays ``inf``. Best values (max Dice/sensitivity/specificity, min RAVD/distances, at display
precision, ties all best) are marked per group of at least two methods.

Table 2, every method against the reference: two-sample Kolmogorov–Smirnov on 2D slice Dice
(``slice_dice.csv``, pooled over cases and labels) as in the paper, and paired Wilcoxon signed-rank on
per-case Dice (label-averaged, pairs matched by ``(domain, case)``; unmatched cases are left out and
counted in the note), all domains pooled and per domain; Holm's correction per (test, scope).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from pedseg.errors import ConfigError, UnknownNameError
from pedseg.evaluation.methods import (
    ALL,
    METRICS,
    CaseLabel,
    MethodResults,
    expand_method_dirs,
    load_method,
    load_methods,
)
from pedseg.evaluation.stats import holm_correction, ks_test, wilcoxon_paired

__all__ = [
    "DEFAULT_REFERENCE",
    "METRICS",
    "CaseLabel",
    "Comparison",
    "MethodResults",
    "MetricTable",
    "Stat",
    "TableRow",
    "TestRow",
    "compare",
    "expand_method_dirs",
    "format_value",
    "load_method",
    "load_methods",
]

DEFAULT_REFERENCE = "dsl-contrastive-unet"
PERCENT = frozenset({"dice", "sensitivity", "specificity", "ravd"})
HIGHER_IS_BETTER = frozenset({"dice", "sensitivity", "specificity"})
DECIMALS = {"dice": 1, "sensitivity": 1, "specificity": 1, "ravd": 1}  # distances: 2
TABLE1 = ("table1", "Table 1: Dice, ASSD, MSSD", ("Domain",))
TABLE_S1 = ("tableS1", "Table S1: sensitivity, specificity, RAVD", ("Domain",))
PER_LABEL = ("per_label", "Per-label metrics (mean ± std over cases)", ("Domain", "Label"))
KS_TEST = "KS (2D slice Dice)"
WILCOXON_TEST = "Wilcoxon (per-case Dice)"


@dataclass(frozen=True)
class Stat:
    """Mean ± sample std over ``n`` values (in display units: % or mm)."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float], *, scale: float = 1.0) -> Stat | None:
        data = np.asarray(list(values), dtype=np.float64) * scale
        if data.size == 0:
            return None
        finite = bool(np.all(np.isfinite(data)))
        std = float(np.std(data, ddof=1)) if data.size > 1 and finite else 0.0
        return cls(float(np.mean(data)), std if finite else math.inf, int(data.size))


@dataclass(frozen=True)
class TableRow:
    group: tuple[str, ...]
    method: str
    stats: Mapping[str, Stat | None]
    best: frozenset[str] = frozenset()


@dataclass(frozen=True)
class MetricTable:
    key: str
    title: str
    group_names: tuple[str, ...]
    metrics: tuple[str, ...]
    rows: tuple[TableRow, ...]


@dataclass(frozen=True)
class TestRow:
    """One test of ``method`` against ``reference``, with the Dice samples' mean ± std in %."""

    __test__: ClassVar[bool] = False

    test: str
    scope: str
    method: str
    reference: str
    n_reference: int
    n_method: int
    dice_reference: Stat | None
    dice_method: Stat | None
    statistic: float | None
    pvalue: float | None
    pvalue_holm: float | None = None
    note: str = ""


@dataclass(frozen=True)
class Comparison:
    methods: tuple[MethodResults, ...]
    reference: str
    tables: tuple[MetricTable, ...]
    tests: tuple[TestRow, ...]
    notes: tuple[str, ...] = field(default=())

    def table(self, key: str) -> MetricTable:
        return next(t for t in self.tables if t.key == key)


def format_value(metric: str, value: float) -> str:
    """``value`` (display units) at the metric's precision; ``inf`` stays ``inf``."""
    if not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    return f"{value:.{DECIMALS.get(metric, 2)}f}"


# ---------------------------------------------------------------------- tables
def _mark_best(rows: list[TableRow], metrics: Sequence[str]) -> list[TableRow]:
    out: list[TableRow] = []
    groups = list(dict.fromkeys(r.group for r in rows))
    for group in groups:
        members = [r for r in rows if r.group == group]
        best: dict[str, set[str]] = {r.method: set() for r in members}
        for metric in metrics:
            shown = {
                r.method: float(format_value(metric, s.mean))
                for r in members
                if (s := r.stats.get(metric)) is not None and math.isfinite(s.mean)
            }
            if len(members) < 2 or not shown:
                continue
            target = max(shown.values()) if metric in HIGHER_IS_BETTER else min(shown.values())
            for method, value in shown.items():
                if value == target:
                    best[method].add(metric)
        out.extend(TableRow(r.group, r.method, r.stats, frozenset(best[r.method])) for r in members)
    return out


def _table(
    methods: Sequence[MethodResults],
    groups: Sequence[tuple[str, ...]],
    metrics: Sequence[str],
    heading: tuple[str, str, tuple[str, ...]],
) -> MetricTable:
    """Rows per group (``(domain,)`` or ``(domain, label name)``) and method with values."""
    rows: list[TableRow] = []
    for group in groups:
        for m in methods:
            if group[0] != ALL and group[0] not in m.domains:
                continue
            per_metric = {metric: m.values(metric, *group) for metric in metrics}
            if any(per_metric.values()):
                scale = {k: 100.0 if k in PERCENT else 1.0 for k in metrics}
                stats = {k: Stat.of(v, scale=scale[k]) for k, v in per_metric.items()}
                rows.append(TableRow(group, m.name, stats))
    key, title, names = heading
    return MetricTable(key, title, names, tuple(metrics), tuple(_mark_best(rows, metrics)))


# ---------------------------------------------------------------------- tests
def _ks_row(ref: MethodResults, other: MethodResults, scope: str) -> TestRow:
    a, b = ref.slice_samples(scope), other.slice_samples(scope)
    dice_a, dice_b = (None if v is None else Stat.of(v, scale=100.0) for v in (a, b))
    statistic = pvalue = None
    if a is None or b is None:
        note = f"{ref.name if a is None else other.name} has no slice_dice.csv"
    elif a.size == 0 or b.size == 0:
        note = "no slices"
    else:
        result = ks_test(a, b)
        statistic, pvalue, note = result.statistic, result.pvalue, ""
    n_a, n_b = (0 if a is None else a.size), (0 if b is None else b.size)
    return TestRow(
        KS_TEST, scope, other.name, ref.name, n_a, n_b, dice_a, dice_b, statistic, pvalue, note=note
    )


def _wilcoxon_row(ref: MethodResults, other: MethodResults, scope: str) -> TestRow:
    a, b = ref.case_values("dice", scope), other.case_values("dice", scope)
    common = sorted(set(a) & set(b))
    unmatched = len(set(a) ^ set(b))
    x = np.asarray([a[k] for k in common])
    y = np.asarray([b[k] for k in common])
    notes = [f"{unmatched} unmatched case(s) left out"] if unmatched else []
    statistic = pvalue = None
    if x.size >= 2:
        result = wilcoxon_paired(x, y)
        statistic, pvalue = result.statistic, result.pvalue
        notes += [result.note] if result.note else []
    else:
        notes.append(f"{x.size} paired case(s); the test needs at least 2")
    return TestRow(
        WILCOXON_TEST, scope, other.name, ref.name, x.size, y.size, Stat.of(x, scale=100.0),
        Stat.of(y, scale=100.0), statistic, pvalue, note="; ".join(notes),
    )  # fmt: skip


def _with_holm(rows: list[TestRow]) -> list[TestRow]:
    out = list(rows)
    for family in dict.fromkeys((r.test, r.scope) for r in rows):
        index = [
            i for i, r in enumerate(rows) if (r.test, r.scope) == family and r.pvalue is not None
        ]
        adjusted = holm_correction([rows[i].pvalue or 0.0 for i in index])
        for i, p in zip(index, adjusted, strict=True):
            out[i] = replace(rows[i], pvalue_holm=float(p))
    return out


def compare(methods: Sequence[MethodResults], *, reference: str | None = None) -> Comparison:
    """Tables 1, S1, per-label and the tests of every method against ``reference``."""
    if not methods:
        raise ConfigError("no method to compare; pass at least one method folder")
    names = [m.name for m in methods]
    if reference is None:
        reference = DEFAULT_REFERENCE if DEFAULT_REFERENCE in names else names[0]
    elif reference not in names:
        raise UnknownNameError("reference method", reference, names)
    ref = methods[names.index(reference)]
    domains = list(dict.fromkeys(d for m in methods for d in m.domains))
    groups = [*domains, ALL] if len(domains) > 1 else domains
    labels = [(d, r.label_name) for d in domains for m in methods for r in m.rows if r.domain == d]
    tables = (
        _table(methods, [(g,) for g in groups], ("dice", "assd", "mssd"), TABLE1),
        _table(methods, [(g,) for g in groups], ("sensitivity", "specificity", "ravd"), TABLE_S1),
        _table(methods, list(dict.fromkeys(labels)), METRICS, PER_LABEL),
    )
    tests: list[TestRow] = []
    others = [m for m in methods if m.name != reference]
    for scope in [ALL, *domains] if len(domains) > 1 else domains:
        for builder in (_ks_row, _wilcoxon_row):
            tests.extend(builder(ref, m, scope) for m in others)
    notes = [
        f"{m.name} has no slice_dice.csv: its KS tests are not computed"
        for m in methods
        if m.slice_dice is None
    ]
    return Comparison(tuple(methods), reference, tables, tuple(_with_holm(tests)), tuple(notes))
