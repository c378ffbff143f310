"""Help texts and small parsers shared by several commands."""

from __future__ import annotations

from collections.abc import Iterable

import typer

from pedseg.errors import ConfigError

DATA_HELP = "Data folder of a domain for this run, as NAME=DIR (MSD layout); repeatable."
DOMAINS_HELP = "Domains, space- or comma-separated: --domains ankle shoulder."


def domain_names(option: Iterable[str], extra: Iterable[str] | None = None) -> list[str]:
    """Domain names from ``--domains a b`` / ``--domains a,b`` / repeated ``--domains``.

    Click options take one value each, so ``--domains ankle shoulder`` leaves ``shoulder`` as an extra
    positional argument; commands that accept domains collect those and pass them here.
    """
    names: list[str] = []
    for item in [*option, *(extra or [])]:
        names.extend(part for part in item.replace(",", " ").split() if part)
    return names


def parse_image_size(value: str | None) -> tuple[int, int] | None:
    """``256`` or ``256x192`` to ``(H, W)``; ``None`` stays ``None``."""
    if value is None:
        return None
    parts = value.lower().split("x")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--image-size must look like 256 or 256x192, got {value!r}") from None
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or min(numbers) < 1:
        raise ConfigError(f"--image-size must look like 256 or 256x192, got {value!r}")
    return numbers[0], numbers[1]


def given_options(ctx: typer.Context) -> frozenset[str]:
    """The parameter names the user gave on the command line (or through the environment).

    Options with a default cannot tell "given" from "defaulted" by value; this asks click where
    each value came from, so ``--epochs 30`` overrides a plan even though 30 is the default.
    (Typer vendors its own click, so the source is compared by name.)
    """
    given = {"COMMANDLINE", "ENVIRONMENT"}
    return frozenset(
        name
        for name in ctx.params
        if getattr(ctx.get_parameter_source(name), "name", None) in given
    )
