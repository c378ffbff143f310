"""Shared option helpers: which options the user really gave."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from pedseg.cli.options import given_options


def test_given_options_tell_given_from_defaulted() -> None:
    seen: list[frozenset[str]] = []
    app = typer.Typer()

    @app.command()
    def run(
        ctx: typer.Context,
        epochs: int = typer.Option(30, "--epochs"),
        lr: float = typer.Option(1e-4, "--lr"),
        quiet: bool = typer.Option(False, "--quiet"),
    ) -> None:
        seen.append(given_options(ctx))

    runner = CliRunner()
    assert runner.invoke(app, ["--epochs", "30"]).exit_code == 0  # the default value, given
    assert runner.invoke(app, ["--lr", "0.001", "--quiet"]).exit_code == 0
    assert runner.invoke(app, []).exit_code == 0
    assert seen == [frozenset({"epochs"}), frozenset({"lr", "quiet"}), frozenset()]
