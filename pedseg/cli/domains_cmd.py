"""``pedseg domains list|show``, ``pedseg add-domain``, ``pedseg remove-domain``."""

from __future__ import annotations

from pathlib import Path

import typer

from pedseg.cli.options import DATA_HELP, device_option, out_option
from pedseg.cli.render import console, epoch_lines, ok, trained_line
from pedseg.errors import ConfigError


def domains_list() -> None:
    """List the registered domains and where each comes from (unusable ones are named below)."""
    from rich.markup import escape
    from rich.table import Table

    from pedseg.domains.registry import DomainRegistry
    from pedseg.errors import PedsegError

    registry = DomainRegistry()
    table = Table(title=f"Domains (user registry: {registry.user_dir})")
    for column in ("name", "labels", "normalization", "slice axis", "image size", "origin"):
        table.add_column(column)
    unusable: list[str] = []
    for entry in registry.entries():
        try:
            spec = registry.get(entry.name)
        except PedsegError as error:  # one broken file must not hide the others
            unusable.append(f"{entry.name} ({entry.origin}): {error}")
            continue
        table.add_row(
            spec.name,
            ", ".join(f"{i}={n}" for i, n in spec.labels),
            spec.normalization,
            str(spec.slice_axis),
            "x".join(map(str, spec.image_size)),
            entry.origin,
        )
    console.print(table)
    for line in unusable:
        console.print(f"[yellow]warning: skipped {escape(line)}[/]", soft_wrap=True)


def domains_show(name: str = typer.Argument(..., help="Domain name.")) -> None:
    """Print a domain's full descriptor as YAML, with its content hash."""
    from pedseg.domains.registry import DomainRegistry
    from pedseg.domains.yamlio import dump_yaml

    spec = DomainRegistry().get(name)
    console.print(f"# source: {spec.source}", markup=False, soft_wrap=True)
    console.print(f"# content hash: {spec.content_hash()}", markup=False)
    where = str(spec.data.root) if spec.data is not None else "none (pass --data NAME=DIR)"
    console.print(f"# data root: {where}", markup=False, soft_wrap=True)
    console.print(dump_yaml(spec.to_dict()), markup=False, end="", soft_wrap=True)


def add_domain(
    descriptor: Path = typer.Argument(
        ..., help="Domain descriptor (YAML) to validate and register."
    ),
    force: bool = typer.Option(False, "--force", help="Replace a domain of the same name."),
    to_model: Path | None = typer.Option(
        None,
        "--to-model",
        metavar="RUN",
        help="Also add the domain to this trained DSBN run: train only its batch norm and head.",
    ),
    data: list[str] = typer.Option(
        [], "--data", metavar="NAME=DIR", help=f"With --to-model: {DATA_HELP}"
    ),
    out: Path | None = out_option(
        None, "With --to-model: new run folder (default: RUN-plus-<domain>)."
    ),
    epochs: int = typer.Option(10, "--epochs", help="With --to-model: epochs."),
    batch_size: int = typer.Option(16, "--batch-size", help="With --to-model: slices per step."),
    lr: float = typer.Option(1e-3, "--lr", help="With --to-model: Adam learning rate."),
    seed: int = typer.Option(0, "--seed", help="With --to-model: seed."),
    steps_per_epoch: int | None = typer.Option(
        None, "--steps-per-epoch", help="With --to-model: steps per epoch."
    ),
    device: str = device_option(help="With --to-model: auto | cpu | cuda."),
    seg_loss: str = typer.Option(
        "ce", "--seg-loss", help="With --to-model: ce (the paper's) | dice-ce (adds soft Dice)."
    ),
) -> None:
    """Validate a domain descriptor and register it in the user registry (and add it to a model)."""
    from pedseg.domains.registry import (
        DomainRegistry,
        data_option,
        load_descriptor,
        parse_data_overrides,
    )
    from pedseg.training.base_run import extendable_base
    from pedseg.training.extend import ExtendConfig, extend_run

    registry = DomainRegistry()
    if to_model is None:
        if data or out is not None:
            raise ConfigError("--data and --out are only used with --to-model RUN")
        spec = registry.add(descriptor, force=force)
        ok(
            f"registered domain {spec.name!r} ({len(spec.labels)} labels) in "
            f"{registry.user_dir / (spec.name + '.yaml')}"
        )
        return
    config = ExtendConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
        device=device,
        seg_loss=seg_loss,
    )
    name = load_descriptor(descriptor).name
    overrides = parse_data_overrides(data)
    extra = sorted(set(overrides) - {name})
    if extra:
        raise ConfigError(f"--data names domain(s) other than {name!r}: {', '.join(extra)}")
    base = extendable_base(to_model, name)
    spec, registered = registry.add_or_reuse(descriptor, force=force)
    if registered:
        ok(f"registered domain {spec.name!r} ({len(spec.labels)} labels)")
    if spec.name in overrides:
        spec = spec.with_data_root(
            overrides[spec.name], given_as=data_option(spec.name, overrides[spec.name])
        )
    result = extend_run(base.root, spec, config=config, out=out, callback=epoch_lines)
    ok(trained_line(f"added domain {spec.name!r} to {base.root}", result))


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
