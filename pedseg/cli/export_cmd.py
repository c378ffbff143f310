"""``pedseg export-onnx``: one verified ONNX graph per domain of a trained run."""

from __future__ import annotations

from pathlib import Path

import typer

from pedseg.cli.options import domain_names, model_option, out_option
from pedseg.cli.render import console, ok


def export_onnx(
    model: Path | None = model_option(),
    domains: list[str] = typer.Option(
        [], "--domains", "-d", help="Domains to export (default: all): --domains ankle shoulder."
    ),
    more_domains: list[str] = typer.Argument(None, hidden=True, metavar="DOMAIN"),
    out: Path | None = out_option(None, "Output folder (default: RUN/onnx)."),
    fp16: bool = typer.Option(
        False, "--fp16", help="Half-precision graphs (float16 input and output)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing .onnx files."),
) -> None:
    """Export each domain's segmenter (shared convs, its folded batch norm, its head) to ONNX."""
    from rich.table import Table

    from pedseg.export.onnx import export_run
    from pedseg.runfolder.loading import load_run

    run = load_run(model)
    names = domain_names(domains, more_domains)
    reports = export_run(run, domains=names or None, out_dir=out, fp16=fp16, overwrite=overwrite)
    table = Table(title=f"pedseg export-onnx {run.path}")
    for column, justify in (
        ("domain", "left"),
        ("file", "left"),
        ("size (MB)", "right"),
        ("max |diff|", "right"),
        ("seconds", "right"),
    ):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for report in reports:
        table.add_row(
            report.domain,
            str(report.path),
            f"{report.path.stat().st_size / 1e6:.2f}",
            f"{report.max_abs_diff:.2e}",
            f"{report.seconds:.1f}",
        )
    console.print(table)
    checked = len(reports[0].sizes_checked) if reports else 0
    ok(
        f"exported {len(reports)} domain(s) ({'fp16' if fp16 else 'fp32'}), each checked against "
        f"PyTorch on {checked} input shapes"
    )


def register(app: typer.Typer) -> None:
    app.command("export-onnx")(export_onnx)
