"""``pedseg synth OUT``: deterministic phantom datasets in MSD layout."""

from __future__ import annotations

from pathlib import Path

import typer

from pedseg.cli.render import ok


def synth(
    out: Path = typer.Argument(..., help="Folder to write <domain>/imagesTr and labelsTr into."),
    domains: list[str] = typer.Option(
        ["ankle", "shoulder"], "--domains", "-d", help="Phantom domains to generate."
    ),
    cases: int = typer.Option(8, "--cases", "-n", min=1, help="Cases per domain."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same files."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing phantom folders."),
) -> None:
    """Generate phantom MR datasets (bones with cortex and marrow, soft tissue, noise, bias)."""
    from pedseg.data.synth import PhantomConfig, synth_dataset

    written = synth_dataset(
        out,
        domains=tuple(domains),
        cases=cases,
        seed=seed,
        config=PhantomConfig(),
        overwrite=overwrite,
    )
    ok(f"wrote {len(written)} files for {', '.join(domains)} under {out}")
    for domain in domains:
        typer.echo(f"  check with: pedseg check {domain} --data {domain}={out / domain}")


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
