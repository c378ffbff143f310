"""``pedseg demo``: synth → train → export → predict → evaluate on the phantom domains."""

from __future__ import annotations

from pathlib import Path

import typer

from pedseg.cli.options import device_option, out_option
from pedseg.cli.render import TrainDisplay, console, ok


def demo(
    out: Path = out_option(Path("pedseg-demo"), "Folder for everything the demo writes."),
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes (a smoke test, under a minute)."),
    epochs: int | None = typer.Option(None, "--epochs", help="Override the number of epochs."),
    seed: int = typer.Option(0, "--seed", help="Seed of the phantoms and of training."),
    device: str = device_option(),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier demo in --out."),
) -> None:
    """Run the whole path on the phantom domains in a few minutes and print per-label Dice."""
    from dataclasses import replace

    from rich.table import Table

    from pedseg.workflows.demo import DemoConfig, run_demo

    config = DemoConfig.quick() if quick else DemoConfig()
    config = replace(config, seed=seed, device=device)
    if epochs is not None:
        config = replace(config, epochs=epochs)
    with TrainDisplay(quiet=False) as display:
        result = run_demo(
            out,
            config=config,
            overwrite=overwrite,
            on_stage=lambda message: console.print(f"[bold]»[/] {message}"),
            on_train=display,
        )
    table = Table(title=f"Held-out phantoms: Dice per label ({result.backend} backend)")
    table.add_column("domain")
    table.add_column("label")
    table.add_column("Dice", justify="right")
    for domain, labels in result.dice.items():
        for label, value in labels.items():
            table.add_row(domain, label, f"{value:.3f}")
    console.print(table)
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
    ok(f"demo finished ({timing}); everything is in {result.out}")
    console.print(
        f"  run: {result.run_dir}   predictions: {result.out / 'predictions'}   "
        f"metrics: {result.out / 'evaluation'}"
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
