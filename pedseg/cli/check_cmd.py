"""``pedseg check NAME``: dataset integrity, one row per case."""

from __future__ import annotations

import typer

from pedseg.cli.options import DATA_HELP
from pedseg.cli.render import console

_STYLE = {"ok": "green", "warning": "yellow", "error": "red"}


def check(
    name: str = typer.Argument(..., help="Domain whose dataset to check."),
    data: list[str] = typer.Option([], "--data", metavar="NAME=DIR", help=DATA_HELP),
) -> None:
    """Check a domain's dataset: pairs, readability, geometry, label values, NaN/Inf, empty labels."""
    from rich.table import Table

    from pedseg.data.check import check_dataset
    from pedseg.domains.registry import DomainRegistry, parse_data_overrides

    spec = DomainRegistry().resolve([name], data=parse_data_overrides(data))[0]
    report = check_dataset(spec)

    table = Table(title=f"pedseg check {spec.name} ({report.root})")
    for column in ("case", "status", "shape", "spacing (mm)", "findings"):
        table.add_column(column, overflow="fold")
    for finding in report.cases:
        style = _STYLE.get(finding.status, "")
        shape = "x".join(map(str, finding.shape)) if finding.shape else "-"
        spacing = " x ".join(f"{s:.2f}" for s in finding.spacing) if finding.spacing else "-"
        table.add_row(
            finding.case_id,
            f"[{style}]{finding.status}[/]",
            shape,
            spacing,
            "; ".join(finding.messages) or "",
        )
    console.print(table)
    spacing_range = report.spacing_range
    if spacing_range is not None:
        lo, hi = spacing_range
        span = " x ".join(
            f"{a:.2f}" if f"{a:.2f}" == f"{b:.2f}" else f"{a:.2f}-{b:.2f}"
            for a, b in zip(lo, hi, strict=True)
        )
        console.print(f"spacing (mm, canonical axes): {span}")
    axes = ", ".join(map(str, sorted(set(report.slice_axes)))) or "-"
    console.print(
        f"slice axis: {report.slice_axis} -> canonical axis {axes}; {report.total_slices} slices in all"
    )
    for remark in report.messages:
        console.print(f"[yellow]![/] {remark}")
    n_err = sum(f.status == "error" for f in report.cases)
    n_warn = sum(f.status == "warning" for f in report.cases)
    if not report.ok:
        console.print(f"[red]✗ {n_err} unusable case(s)[/], {n_warn} warning(s)")
        raise typer.Exit(1)
    console.print(f"[green]✓ {len(report.cases)} case(s) usable[/], {n_warn} warning(s)")


def register(app: typer.Typer) -> None:
    app.command("check")(check)
