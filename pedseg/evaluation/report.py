"""Rendering a :class:`~pedseg.evaluation.compare.Comparison`: Markdown, self-contained HTML, CSV, JSON.

* ``report.md``: the tables (best values in bold) and the figures as relative links.
* ``report.html``: the same page with inline CSS and every figure embedded as a base64 PNG
  (``data:image/png;base64,...``), no external resource: it can be mailed or archived alone.
* ``tables.csv``: the metric tables in long form (``table, domain, label, method, metric, mean, std,
  n, best``; display units: % or mm); ``tests.csv``: the tests (Table 2).
* ``comparison.json``: :meth:`Comparison.to_dict`.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pedseg import __version__
from pedseg.errors import ConfigError
from pedseg.evaluation.compare import (
    DEFAULT_REFERENCE,
    Comparison,
    MetricTable,
    Stat,
    TestRow,
    format_value,
)
from pedseg.io.atomic import write_text_atomic

__all__ = [
    "FORMATS",
    "ReportFigure",
    "comparison_dict",
    "parse_formats",
    "planned_files",
    "render_html",
    "render_markdown",
    "tables_csv",
    "tests_csv",
    "write_report",
]

FORMATS = ("md", "html", "csv", "json")
LABELS = {
    "dice": "Dice (%)",
    "sensitivity": "Sensitivity (%)",
    "specificity": "Specificity (%)",
    "ravd": "RAVD (%)",
    "assd": "ASSD (mm)",
    "mssd": "MSSD (mm)",
    "hd95": "HD95 (mm)",
}
SIGNIFICANCE = 0.05
AGGREGATION = (
    "Per case, each metric is averaged over the case's labels; tables show mean ± sample std over "
    "cases (per-label table: over the cases of that label). Dice, sensitivity, specificity and "
    "RAVD in %, distances in mm. Bold: best per group (max Dice/sensitivity/specificity, min "
    "RAVD/distances). Tests compare each method with the reference: Kolmogorov–Smirnov on 2D "
    "slice Dice (pooled over cases and labels) and paired Wilcoxon signed-rank on per-case Dice "
    f"(pairs matched by domain and case); Holm-corrected per test and scope; bold p < {SIGNIFICANCE}."
)


@dataclass(frozen=True)
class ReportFigure:
    """A PNG shown in the report (``path`` should lie under the report folder for Markdown)."""

    title: str
    path: Path
    caption: str = ""


def parse_formats(text: str) -> tuple[str, ...]:
    """``"md,html"`` -> ``("md", "html")``; unknown formats raise :class:`ConfigError`."""
    formats = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(
            f"--format must list some of {', '.join(FORMATS)} (comma-separated), got {text!r}"
        )
    return formats


def display_name(name: str) -> str:
    return f"{name} (proposed)" if name == DEFAULT_REFERENCE else name


def _cell(metric: str, stat: Stat | None) -> str:
    if stat is None:
        return "–"
    return f"{format_value(metric, stat.mean)} ± {format_value(metric, stat.std)}"


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.2g}"


def _num(value: float | None, decimals: int = 1) -> str:
    return "–" if value is None else f"{value:.{decimals}f}"


def _table_grid(table: MetricTable) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Header and rows of (text, bold) cells, shared by Markdown and HTML."""
    header = [*table.group_names, "Method", "n", *(LABELS[m] for m in table.metrics)]
    rows: list[list[tuple[str, bool]]] = []
    for row in table.rows:
        first = next((s for s in row.stats.values() if s is not None), None)
        cells = [(g, False) for g in row.group]
        cells += [(display_name(row.method), False), (str(first.n if first else 0), False)]
        cells += [(_cell(m, row.stats.get(m)), m in row.best) for m in table.metrics]
        rows.append(cells)
    return header, rows


def _tests_grid(tests: Sequence[TestRow]) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    header = [
        "Test", "Scope", "Method", "n (ref / method)", "Dice ref (%)", "Dice method (%)",
        "Statistic", "p", "p (Holm)", "Note",
    ]  # fmt: skip
    rows: list[list[tuple[str, bool]]] = []
    for t in tests:
        significant = [p is not None and p < SIGNIFICANCE for p in (t.pvalue, t.pvalue_holm)]
        rows.append(
            [
                (t.test, False),
                (t.scope, False),
                (display_name(t.method), False),
                (f"{t.n_reference} / {t.n_method}", False),
                (_cell("dice", t.dice_reference), False),
                (_cell("dice", t.dice_method), False),
                (_num(t.statistic, 3), False),
                (_p(t.pvalue), significant[0]),
                (_p(t.pvalue_holm), significant[1]),
                (t.note, False),
            ]
        )
    return header, rows


def _sections(comparison: Comparison) -> list[tuple[str, list[str], list[list[tuple[str, bool]]]]]:
    out = [(t.title, *_table_grid(t)) for t in comparison.tables]
    title = f"Table 2: tests against {display_name(comparison.reference)}"
    return [out[0], (title, *_tests_grid(comparison.tests)), *out[1:]]


# ---------------------------------------------------------------------- Markdown
def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(
    comparison: Comparison, *, figures: Sequence[ReportFigure] = (), base: Path | None = None
) -> str:
    """The report as Markdown; figure links are relative to ``base`` (the report folder)."""
    lines = [f"# pedseg comparison ({len(comparison.methods)} methods)", "", AGGREGATION, ""]
    lines += [f"Reference method: **{display_name(comparison.reference)}**.", ""]
    for m in comparison.methods:
        cases = len({(r.domain, r.case) for r in m.rows})
        lines.append(f"- `{m.name}`: {cases} cases, domains {', '.join(m.domains)} ({m.path})")
    lines += [f"- note: {note}" for note in comparison.notes]
    for title, header, rows in _sections(comparison):
        lines += ["", f"## {title}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join("---" for _ in header) + "|")
        for row in rows:
            cells = [f"**{_md_escape(t)}**" if bold else _md_escape(t) for t, bold in row]
            lines.append("| " + " | ".join(cells) + " |")
    if figures:
        lines += ["", "## Figures"]
    for figure in figures:
        link = figure.path
        if base is not None and link.is_relative_to(base):
            link = link.relative_to(base)
        lines += ["", f"### {figure.title}", "", f"![{figure.title}]({link.as_posix()})"]
        lines += ["", figure.caption] if figure.caption else []
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1200px;
color:#222;line-height:1.4;padding:0 1em}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:0.25em 0.6em;text-align:right}
th{background:#f0f0f0}td:nth-child(-n+2){text-align:left}
tr:nth-child(even){background:#fafafa}b{color:#0a4}
figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}
figcaption{font-size:0.9em;color:#555}.note{color:#555;font-size:0.9em}
"""


def _html_table(header: list[str], rows: list[list[tuple[str, bool]]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td><b>{html.escape(t)}</b></td>" if bold else f"<td>{html.escape(t)}</td>"
            for t, bold in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(comparison: Comparison, *, figures: Sequence[ReportFigure] = ()) -> str:
    """The report as one self-contained HTML page (inline CSS, figures as base64 PNG)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>pedseg comparison</title><style>{_CSS}</style></head><body>",
        f"<h1>pedseg comparison ({len(comparison.methods)} methods)</h1>",
        f'<p class="note">{html.escape(AGGREGATION)}</p>',
        f"<p>Reference method: <b>{html.escape(display_name(comparison.reference))}</b>.</p><ul>",
    ]
    for m in comparison.methods:
        cases = len({(r.domain, r.case) for r in m.rows})
        parts.append(
            f"<li><code>{html.escape(m.name)}</code>: {cases} cases, domains "
            f"{html.escape(', '.join(m.domains))}</li>"
        )
    parts += [f"<li>note: {html.escape(note)}</li>" for note in comparison.notes]
    parts.append("</ul>")
    for title, header, rows in _sections(comparison):
        parts += [f"<h2>{html.escape(title)}</h2>", _html_table(header, rows)]
    if figures:
        parts.append("<h2>Figures</h2>")
    for figure in figures:
        data = base64.b64encode(figure.path.read_bytes()).decode("ascii")
        caption = (
            f"<figcaption>{html.escape(figure.caption)}</figcaption>" if figure.caption else ""
        )
        parts.append(
            f"<figure><h3>{html.escape(figure.title)}</h3>"
            f'<img alt="{html.escape(figure.title)}" src="data:image/png;base64,{data}">'
            f"{caption}</figure>"
        )
    parts.append(f'<p class="note">pedseg {html.escape(__version__)}</p></body></html>')
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------- CSV / JSON
def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def comparison_dict(comparison: Comparison) -> dict[str, Any]:
    """Everything in plain JSON types (non-finite numbers as the strings ``"inf"``/``"nan"``)."""
    methods = [
        {
            "name": m.name,
            "path": str(m.path),
            "domains": list(m.domains),
            "cases": len({(r.domain, r.case) for r in m.rows}),
            "has_slice_dice": m.slice_dice is not None,
            "curves": None if m.curves is None else str(m.curves),
        }
        for m in comparison.methods
    ]
    tables = [
        {
            "key": t.key,
            "title": t.title,
            "group_names": list(t.group_names),
            "metrics": list(t.metrics),
            "rows": [
                {
                    "group": list(r.group),
                    "method": r.method,
                    "best": sorted(r.best),
                    "stats": {k: None if s is None else vars(s) for k, s in r.stats.items()},
                }
                for r in t.rows
            ],
        }
        for t in comparison.tables
    ]
    payload = {
        "reference": comparison.reference,
        "methods": methods,
        "tables": tables,
        "tests": [
            {k: vars(v) if isinstance(v, Stat) else v for k, v in vars(t).items()}
            for t in comparison.tests
        ],
        "notes": list(comparison.notes),
    }
    return dict(_plain(payload))


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def tables_csv(comparison: Comparison) -> str:
    """The metric tables in long form (display units)."""
    rows: list[list[object]] = []
    for table in comparison.tables:
        for row in table.rows:
            domain, label = row.group[0], row.group[1] if len(row.group) > 1 else ""
            for metric in table.metrics:
                stat = row.stats.get(metric)
                if stat is not None:
                    best = int(metric in row.best)
                    rows.append(
                        [table.key, domain, label, row.method, metric, repr(stat.mean),
                         repr(stat.std), stat.n, best]
                    )  # fmt: skip
    header = ("table", "domain", "label", "method", "metric", "mean", "std", "n", "best")
    return _csv_text(header, rows)


def tests_csv(comparison: Comparison) -> str:
    """Table 2 as CSV (Dice mean and std of the samples in %)."""
    keys = [f.name for f in fields(TestRow) if not f.name.startswith("dice_")]
    keys[6:6] = ["dice_reference_mean", "dice_reference_std", "dice_method_mean", "dice_method_std"]
    rows = []
    for t in comparison.tests:
        values: dict[str, Any] = dict(vars(t))
        for side in ("reference", "method"):
            stat = values.pop(f"dice_{side}")
            values[f"dice_{side}_mean"] = None if stat is None else stat.mean
            values[f"dice_{side}_std"] = None if stat is None else stat.std
        rows.append(["" if values[k] is None else values[k] for k in keys])
    return _csv_text(keys, rows)


def planned_files(out: Path, formats: Sequence[str]) -> list[Path]:
    """The files :func:`write_report` writes for ``formats`` (to check before writing anything)."""
    names = {
        "md": ["report.md"],
        "html": ["report.html"],
        "csv": ["tables.csv", "tests.csv"],
        "json": ["comparison.json"],
    }
    return [Path(out) / n for f in formats for n in names.get(f, [])]


def write_report(
    comparison: Comparison,
    out: Path,
    *,
    formats: Sequence[str] = FORMATS,
    figures: Sequence[ReportFigure] = (),
    overwrite: bool = False,
) -> list[Path]:
    """Write the requested formats into ``out`` (atomically); return the files written."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"unknown report format {unknown[0]!r}; known: {', '.join(FORMATS)}")
    out = Path(out)
    texts: dict[str, str] = {}
    if "md" in formats:
        texts["report.md"] = render_markdown(comparison, figures=figures, base=out)
    if "html" in formats:
        texts["report.html"] = render_html(comparison, figures=figures)
    if "csv" in formats:
        texts["tables.csv"] = tables_csv(comparison)
        texts["tests.csv"] = tests_csv(comparison)
    if "json" in formats:
        payload = comparison_dict(comparison)
        payload["figures"] = [
            {"title": f.title, "path": str(f.path), "caption": f.caption} for f in figures
        ]
        texts["comparison.json"] = json.dumps(payload, indent=2, allow_nan=False) + "\n"
    written: list[Path] = []
    for name, text in texts.items():
        write_text_atomic(out / name, text, overwrite=overwrite)
        written.append(out / name)
    return written
