"""``pedseg adapt-bn``, and the CLI side of adding a domain to a trained model.

``add-domain FILE --to-model RUN`` and ``train --domains NEW --from RUN --freeze-shared`` both end in
:func:`run_extension` (see :mod:`pedseg.training.extend`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pedseg.cli.render import ok
from pedseg.errors import ConfigError

if TYPE_CHECKING:
    from pedseg.domains.spec import DomainSpec
    from pedseg.training.events import TrainEvent
    from pedseg.training.extend import ExtendConfig


def adapt_bn(
    scans: list[Path] = typer.Argument(
        ...,
        metavar="SCAN",
        help="Unlabelled scans of the new site: volume files, DICOM folders, folders of volumes.",
    ),
    model: Path | None = typer.Option(
        None, "--model", "-m", help="Run folder to adapt (default: the last run)."
    ),
    domain: str = typer.Option(..., "--domain", "-d", help="Domain of the model to adapt."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="New run folder (default: RUN-adapted-<domain>)."
    ),
    batch_size: int = typer.Option(32, "--batch-size", help="Slices per statistics batch."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
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


def extension_config(
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    steps_per_epoch: int | None,
    device: str,
    augment: bool = True,
    seg_loss: str = "ce",
) -> ExtendConfig:
    """The validated :class:`~pedseg.training.extend.ExtendConfig` of the command-line options."""
    from pedseg.training.extend import ExtendConfig

    return ExtendConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
        device=device,
        augment=augment,
        seg_loss=seg_loss,
    )


def check_target(model: Path, domain: str) -> Path:
    """Fail early (before registering or caching anything) when ``domain`` cannot be added."""
    from pedseg.training.base_run import check_extendable, read_card

    root, card = read_card(model)
    check_extendable(card, root, domain)
    return root


def run_extension(
    model: Path,
    spec: DomainSpec,
    *,
    config: ExtendConfig,
    out: Path | None,
    cache_root: Path | None = None,
) -> None:
    """Train ``spec``'s domain into a copy of ``model``, one progress line per epoch."""
    from pedseg.training.extend import extend_run

    result = extend_run(
        model, spec, config=config, out=out, cache_root=cache_root, callback=_epoch_line
    )
    ok(
        f"added domain {spec.name!r} to {model}: best epoch {result.best_epoch}, validation "
        f"Dice {result.best_metric:.3f}; new run folder {result.run_dir}"
    )


def train_from_run(
    base: Path | None,
    names: list[str],
    *,
    freeze_shared: bool,
    data: list[str],
    out: Path | None,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    steps_per_epoch: int | None,
    device: str,
    augment: bool,
    cache_dir: Path | None,
    fixed_by_base: Mapping[str, bool],
    seg_loss: str = "ce",
) -> None:
    """``pedseg train --domains NEW --from RUN --freeze-shared``."""
    from pedseg.domains.registry import DomainRegistry, parse_data_overrides

    if base is None:
        raise ConfigError("--freeze-shared needs --from RUN (the trained model to extend)")
    if not freeze_shared:
        raise ConfigError(
            "--from RUN without --freeze-shared would fine-tune the whole model, which is not "
            "supported yet; pass --freeze-shared to train only the new domain's batch norm and head"
        )
    given = [option for option, changed in fixed_by_base.items() if changed]
    if given:
        raise ConfigError(
            f"{', '.join(given)} cannot be used with --from: the base run fixes the scheme, "
            "architecture and image size, and only the new domain's segmentation loss is trained "
            "(fp32); drop the option(s)"
        )
    if len(names) != 1:
        raise ConfigError(
            f"--from adds one new domain at a time; name exactly one with --domains, got "
            f"{', '.join(names) or 'none'}"
        )
    config = extension_config(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
        device=device,
        augment=augment,
        seg_loss=seg_loss,
    )
    model = check_target(base, names[0])
    (spec,) = DomainRegistry().resolve(names, data=parse_data_overrides(data))
    run_extension(model, spec, config=config, out=out, cache_root=cache_dir)


def _epoch_line(event: TrainEvent) -> None:
    if event.kind != "epoch_end":
        return
    dice = event.metrics.get("val_dice", float("nan"))
    loss = event.metrics.get("loss_total", float("nan"))
    best = " (best)" if event.is_best else ""
    typer.echo(
        f"epoch {event.epoch}/{event.epochs}: loss {loss:.4f}, validation Dice {dice:.3f}{best}",
        err=True,
    )


def register(app: typer.Typer) -> None:
    app.command("adapt-bn")(adapt_bn)
