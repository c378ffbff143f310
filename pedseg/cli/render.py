"""Shared rendering helpers: one rich console for stdout."""

from __future__ import annotations

from rich.console import Console

console = Console(highlight=False)


def ok(message: str) -> None:
    console.print(f"[green]✓[/] {message}")
