"""``pedseg export-onnx``: one verified ONNX graph per domain of a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pedseg.cli.options import data_option, domain_names, model_option, out_option
from pedseg.cli.render import console, ok

if TYPE_CHECKING:
    from pedseg.inference.int8_export import Int8Report


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
    int8: bool = typer.Option(
        False,
        "--int8",
        help="Statically quantised int8 graphs (<domain>.int8.onnx), calibrated on the training "
        "slices and verified on the validation cases (needs the data: --data).",
    ),
    calibration: str = typer.Option(
        "minmax", "--calibration", help="With --int8: minmax | entropy | percentile."
    ),
    calibration_slices: int = typer.Option(
        200, "--calibration-slices", help="With --int8: training slices to calibrate on."
    ),
    data: list[str] = data_option(),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="With --int8: slice cache folder (default: $PEDSEG_HOME/cache)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing .onnx files."),
) -> None:
    """Export each domain's segmenter (shared convs, its folded batch norm, its head) to ONNX."""
    from rich.table import Table

    from pedseg.errors import ConfigError
    from pedseg.export.onnx import export_run
    from pedseg.runfolder.loading import load_run

    if int8 and fp16:
        raise ConfigError("--int8 and --fp16 exclude each other; export them one at a time")
    if not int8 and (data or cache_dir is not None):
        raise ConfigError("--data and --cache-dir calibrate int8 graphs; add --int8 or drop them")
    run = load_run(model)
    names = domain_names(domains, more_domains)
    if int8:
        from pedseg.domains.registry import parse_data_overrides
        from pedseg.export.quantize import Int8Options, data_specs
        from pedseg.inference.int8_export import export_int8_run

        options = Int8Options(
            method=calibration,  # type: ignore[arg-type]  # checked by Int8Options
            calibration_slices=calibration_slices,
            cache_root=cache_dir,
        )
        chosen = names or list(run.domains)
        specs = data_specs(run, chosen, parse_data_overrides(data))
        _render_int8(
            export_int8_run(
                run, specs, domains=chosen, out_dir=out, options=options, overwrite=overwrite
            ),
            title=f"pedseg export-onnx --int8 {run.path}",
        )
        return
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


def _render_int8(reports: list[Int8Report], *, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    columns = ("domain", "file", "MB", "slices", "agreement", "worst label", "speed", "s")
    for column in columns:
        table.add_column(column, overflow="fold")
    for report in reports:
        label, drop = report.verification.worst_drop
        table.add_row(
            report.domain,
            str(report.path),
            f"{report.path.stat().st_size / 1e6:.2f}",
            f"{report.calibration['slices']} ({report.calibration['method']})",
            f"{report.verification.min_agreement:.4f}",
            f"{-100 * drop:+.2f} ({label})",
            f"{report.speed.speedup:.2f}x",
            f"{report.seconds:.1f}",
        )
    console.print(table)
    cases = report.verification.cases if reports else ()
    cpu = reports[0].speed.cpu if reports else "-"
    ok(
        f"exported {len(reports)} int8 domain(s), each verified against fp32 on {len(cases)} "
        f"validation case(s) (agreement: min per-volume Dice int8 vs fp32; worst label: its Dice "
        f"vs the reference, int8 - fp32, in points; speed: int8 / fp32 slices/s on {cpu})"
    )


def register(app: typer.Typer) -> None:
    app.command("export-onnx")(export_onnx)
