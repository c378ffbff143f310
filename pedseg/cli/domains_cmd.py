"""``pedseg domains list|show``, ``pedseg add-domain``, ``pedseg remove-domain``."""

from __future__ import annotations

from pathlib import Path

import typer

from pedseg.cli.render import console, ok


def domains_list() -> None:
    """List the registered domains and where each comes from."""
    from rich.table import Table

    from pedseg.domains.registry import DomainRegistry

    registry = DomainRegistry()
    table = Table(title=f"Domains (user registry: {registry.user_dir})")
    for column in ("name", "labels", "normalization", "slice axis", "image size", "origin"):
        table.add_column(column)
    for entry in registry.entries():
        spec = registry.get(entry.name)
        table.add_row(
            spec.name,
            ", ".join(f"{i}={n}" for i, n in spec.labels),
            spec.normalization,
            str(spec.slice_axis),
            "x".join(map(str, spec.image_size)),
            entry.origin,
        )
    console.print(table)


def domains_show(name: str = typer.Argument(..., help="Domain name.")) -> None:
    """Print a domain's full descriptor as YAML, with its content hash."""
    from pedseg.domains.registry import DomainRegistry
    from pedseg.domains.yamlio import dump_yaml

    spec = DomainRegistry().get(name)
    console.print(f"# source: {spec.source}", markup=False)
    console.print(f"# content hash: {spec.content_hash()}", markup=False)
    console.print(dump_yaml(spec.to_dict()), markup=False, end="")


def add_domain(
    descriptor: Path = typer.Argument(
        ..., help="Domain descriptor (YAML) to validate and register."
    ),
    force: bool = typer.Option(False, "--force", help="Replace a domain of the same name."),
) -> None:
    """Validate a domain descriptor and register it in the user registry."""
    from pedseg.domains.registry import DomainRegistry

    registry = DomainRegistry()
    spec = registry.add(descriptor, force=force)
    ok(
        f"registered domain {spec.name!r} ({len(spec.labels)} labels) in "
        f"{registry.user_dir / (spec.name + '.yaml')}"
    )


def remove_domain(
    name: str = typer.Argument(..., help="User-registered domain to remove."),
) -> None:
    """Remove a domain added with add-domain (built-ins and plugins cannot be removed)."""
    from pedseg.domains.registry import DomainRegistry

    path = DomainRegistry().remove(name)
    ok(f"removed domain {name!r} ({path})")


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Inspect the domain registry.", no_args_is_help=True)
    group.command("list")(domains_list)
    group.command("show")(domains_show)
    app.add_typer(group, name="domains")
    app.command("add-domain")(add_domain)
    app.command("remove-domain")(remove_domain)
