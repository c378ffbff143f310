"""``pedseg compare DIR…``: Tables 1, S1 and 2 of several methods, as Markdown/HTML/CSV/JSON."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pedseg.cli.options import DATA_HELP
from pedseg.cli.render import console, ok

if TYPE_CHECKING:
    from pedseg.evaluation.compare import Comparison, MethodResults
    from pedseg.evaluation.report import ReportFigure


def compare(
    dirs: list[Path] = typer.Argument(
        ...,
        metavar="DIR...",
        help="Method folders (with metrics.csv) or crossval output folders holding several.",
    ),
    reference: str | None = typer.Option(
        None,
        "--reference",
        "-r",
        help="Method the others are tested against (default: dsl-contrastive-unet, else the first).",
    ),
    out: Path = typer.Option(Path("comparison"), "--out", "-o", help="Report folder."),
    formats: str = typer.Option(
        "md,html,csv,json", "--format", help="Comma-separated: md, html, csv, json."
    ),
    overlays: bool = typer.Option(
        False,
        "--overlays",
        help="Draw prediction overlays from DIR/<method>/predictions/<domain>/ (needs the data).",
    ),
    data: list[str] = typer.Option([], "--data", metavar="NAME=DIR", help=DATA_HELP),
    overlay_cases: int = typer.Option(
        3, "--overlay-cases", min=1, help="Cases per overlay figure."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing report."),
) -> None:
    """Compare methods: mean ± std tables (best in bold), KS and Wilcoxon tests, figures."""
    from pedseg.errors import OutputExistsError
    from pedseg.evaluation.compare import compare as run_compare
    from pedseg.evaluation.compare import load_methods
    from pedseg.evaluation.crossval_summary import settings_note
    from pedseg.evaluation.report import parse_formats, planned_files, write_report

    wanted = parse_formats(formats)
    methods = load_methods(dirs)
    comparison = run_compare(methods, reference=reference)
    notes = [note for note in map(settings_note, dirs) if note is not None]
    if notes:
        comparison = dataclasses.replace(comparison, notes=(*notes, *comparison.notes))
    if not overwrite:
        for path in planned_files(out, wanted):
            if path.exists():
                raise OutputExistsError(path, "pass --overwrite to replace the report")
    figures: list[ReportFigure] = []
    if "md" in wanted or "html" in wanted:
        figures = _figures(comparison, out / "figures", overlays, data, overlay_cases)
    elif overlays:
        console.print("[yellow]![/] --overlays is ignored without md or html in --format")
    _print_summary(comparison)
    written = write_report(comparison, out, formats=wanted, figures=figures, overwrite=True)
    ok(f"compared {len(methods)} methods; wrote {', '.join(p.name for p in written)} to {out}")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _figures(
    comparison: Comparison, folder: Path, overlays: bool, data: list[str], cases: int
) -> list[ReportFigure]:
    from pedseg.evaluation.plots import dice_boxplot
    from pedseg.evaluation.report import ReportFigure
    from pedseg.io.atomic import atomic_path

    figures = [
        ReportFigure(
            "Per-case Dice",
            dice_boxplot(comparison.methods, folder / "dice_boxplot.png"),
            "Dice per case (label-averaged) per domain and method; triangles: means.",
        )
    ]
    for method in comparison.methods:
        if method.curves is not None:
            target = folder / f"curves-{_slug(method.name)}.png"
            with atomic_path(target) as tmp:
                shutil.copyfile(method.curves, tmp)
            caption = f"Training curves of {method.name} ({method.curves})."
            figures.append(ReportFigure(f"Training curves: {method.name}", target, caption))
    if overlays:
        figures += _overlay_figures(comparison.methods, folder, data, cases)
    elif data:
        console.print("[yellow]![/] --data is only used with --overlays")
    return figures


def _overlay_figures(
    methods: tuple[MethodResults, ...], folder: Path, data: list[str], cases: int
) -> list[ReportFigure]:
    from pedseg.domains.registry import DomainRegistry, data_option, parse_data_overrides
    from pedseg.errors import ConfigError, RegistryError
    from pedseg.evaluation.plots import overlay_grid, overlay_rows
    from pedseg.evaluation.report import ReportFigure

    roots = parse_data_overrides(data)
    domains = list(dict.fromkeys(d for m in methods for d in m.domains))
    unknown = sorted(set(roots) - set(domains))
    if unknown:
        raise ConfigError(f"--data names domain {unknown[0]!r} which no method was evaluated on")
    registry = DomainRegistry()
    figures: list[ReportFigure] = []
    for domain in domains:
        try:
            spec = registry.get(domain)
        except RegistryError:
            console.print(f"[yellow]![/] no overlays for {domain}: it is not a registered domain")
            continue
        if domain in roots:
            spec = spec.with_data_root(roots[domain], given_as=data_option(domain, roots[domain]))
        if spec.data is None:
            console.print(f"[yellow]![/] no overlays for {domain}: pass --data {domain}=DIR")
            continue
        rows = overlay_rows(methods, spec, max_cases=cases)
        if not rows:
            console.print(f"[yellow]![/] no overlays for {domain}: no predictions/{domain}/ found")
            continue
        path = overlay_grid(
            rows, dict(spec.labels), folder / f"overlay-{_slug(domain)}.png", title=domain
        )
        caption = "Reference contours in red; predictions filled, coloured per label."
        figures.append(ReportFigure(f"Predictions: {domain}", path, caption))
    return figures


def _print_summary(comparison: Comparison) -> None:
    from rich.table import Table

    from pedseg.evaluation.compare import format_value
    from pedseg.evaluation.report import LABELS

    table1 = comparison.table("table1")
    table = Table(title=table1.title)
    for column in ("domain", "method", *(LABELS[m] for m in table1.metrics)):
        table.add_column(column)
    for row in table1.rows:
        cells = []
        for metric in table1.metrics:
            stat = row.stats.get(metric)
            text = (
                "–"
                if stat is None
                else (f"{format_value(metric, stat.mean)} ± {format_value(metric, stat.std)}")
            )
            cells.append(f"[bold green]{text}[/]" if metric in row.best else text)
        table.add_row(row.group[0], row.method, *cells)
    console.print(table)
    tests = Table(title=f"Tests against {comparison.reference}")
    for column in ("test", "scope", "method", "n", "p", "p (Holm)"):
        tests.add_column(column)
    for t in comparison.tests:
        p = "–" if t.pvalue is None else f"{t.pvalue:.2g}"
        holm = "–" if t.pvalue_holm is None else f"{t.pvalue_holm:.2g}"
        tests.add_row(t.test, t.scope, t.method, f"{t.n_reference}/{t.n_method}", p, holm)
    if comparison.tests:
        console.print(tests)
    for note in comparison.notes:
        console.print(f"[yellow]![/] {note}")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
