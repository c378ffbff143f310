"""``pedseg adapt-bn``: re-estimate one domain's batch-norm statistics for a new site."""

from __future__ import annotations

from pathlib import Path

import typer

from pedseg.cli.options import device_option, model_option, out_option
from pedseg.cli.render import ok


def adapt_bn(
    scans: list[Path] = typer.Argument(
        ...,
        metavar="SCAN",
        help="Unlabelled scans of the new site: volume files, DICOM folders, folders of volumes.",
    ),
    model: Path | None = model_option("Run folder to adapt (default: the last run)."),
    domain: str = typer.Option(..., "--domain", "-d", help="Domain of the model to adapt."),
    out: Path | None = out_option(None, "New run folder (default: RUN-adapted-<domain>)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Slices per statistics batch."),
    device: str = device_option(),
) -> None:
    """Re-estimate one domain's batch-norm statistics on unlabelled scans from a new scanner.

    Only that domain's running mean/variance change; the result is a new run folder.
    For intensity and contrast shifts between sites, not for anatomy changes.
    """
    from pedseg.training.adapt import adapt_bn as run_adapt

    report = run_adapt(model, domain, scans, out=out, batch_size=batch_size, device=device)
    ok(
        f"adapted {report.domain!r} batch-norm statistics on {report.n_scans} scan(s) "
        f"({report.n_slices} slices) in {report.seconds:.1f} s; run folder {report.run_dir}"
    )


def register(app: typer.Typer) -> None:
    app.command("adapt-bn")(adapt_bn)
