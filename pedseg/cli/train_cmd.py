"""``pedseg train --domains A B …``: train the shared model (or a baseline) into a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from pedseg.cli.options import (
    data_option,
    device_option,
    domain_names,
    domains_option,
    given_options,
    more_domains_argument,
    out_option,
    parse_image_size,
    quiet_option,
)
from pedseg.cli.render import TrainDisplay, epoch_lines, ok, trained_line

if TYPE_CHECKING:
    from pedseg.training.config import TrainConfig

#: Parameter name -> flag, for the options whose presence matters (``--from`` refuses them).
_FLAGS = {
    "scheme": "--scheme",
    "arch": "--arch",
    "image_size": "--image-size",
    "base_width": "--base-width",
    "depth": "--depth",
    "tau": "--tau",
    "lam": "--lambda",
    "amp": "--amp",
    "resume": "--resume",
    "compile_model": "--compile",
}


def train(
    ctx: typer.Context,
    domains: list[str] = domains_option(),
    more_domains: list[str] = more_domains_argument(),
    data: list[str] = data_option(),
    out: Path | None = out_option(None, "Run folder (default: runs/<scheme>-<arch>-<domains>)."),
    scheme: str = typer.Option(
        "dsl-contrastive",
        "--scheme",
        help="baseline | joint | dsl | dsl-contrastive (the paper's).",
    ),
    arch: str = typer.Option("unet", "--arch", help="unet | attention-unet."),
    epochs: int = typer.Option(30, "--epochs", help="Epochs (the paper: 30)."),
    batch_size: int = typer.Option(32, "--batch-size", help="Slices per step, over all domains."),
    image_size: str | None = typer.Option(
        None, "--image-size", help="In-plane size, 256 or 256x192 (default: the descriptors')."
    ),
    base_width: int = typer.Option(32, "--base-width", help="Channels of the first UNet level."),
    depth: int = typer.Option(5, "--depth", help="Resolution levels (widths base*2**i)."),
    lr: float = typer.Option(1e-4, "--lr", help="Adam learning rate."),
    tau: float = typer.Option(0.1, "--tau", help="Contrastive temperature (Eq. 3)."),
    lam: float = typer.Option(0.1, "--lambda", help="Contrastive weight λ."),
    seg_loss: str = typer.Option(
        "ce",
        "--seg-loss",
        help="ce (the paper's) | dice-ce (adds soft Dice: small structures learn in fewer steps).",
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seed of initialisation, split, sampling, augmentation."
    ),
    steps_per_epoch: int | None = typer.Option(
        None, "--steps-per-epoch", help="Steps per epoch (default: training slices / batch size)."
    ),
    device: str = device_option(),
    amp: str = typer.Option("auto", "--amp", help="auto (bf16 on a capable GPU) | bf16 | off."),
    compile_model: bool = typer.Option(False, "--compile", help="Use torch.compile."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Disable flip/shift/rotation."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Slice cache folder (default: $PEDSEG_HOME/cache)."
    ),
    quiet: bool = quiet_option("Log one line per epoch, no live display."),
    from_run: Path | None = typer.Option(
        None,
        "--from",
        metavar="RUN",
        help="Add the (one, new) domain to this trained DSBN run; needs --freeze-shared.",
    ),
    freeze_shared: bool = typer.Option(
        False, "--freeze-shared", help="With --from: train only the new domain's BN and head."
    ),
) -> None:
    """Train the shared DSBN-UNet with contrastive regularisation, or one of the paper's baselines."""
    from pedseg.domains.registry import DomainRegistry, parse_data_overrides

    names = domain_names(domains, more_domains)
    specs_of = DomainRegistry().resolve
    overrides = parse_data_overrides(data)
    if from_run is not None or freeze_shared:
        _extend(
            from_run,
            names,
            freeze_shared=freeze_shared,
            given=[flag for name, flag in _FLAGS.items() if name in given_options(ctx)],
            options={
                "epochs": epochs,
                "batch_size": batch_size,
                "lr": lr,
                "seed": seed,
                "steps_per_epoch": steps_per_epoch,
                "device": device,
                "augment": not no_augment,
                "seg_loss": seg_loss,
            },
            specs_of=lambda: specs_of(names, data=overrides),
            out=out,
            cache_dir=cache_dir,
        )
        return
    specs = specs_of(names, data=overrides)
    config = _train_config(
        names,
        scheme=scheme,
        arch=arch,
        epochs=epochs,
        batch_size=batch_size,
        image_size=parse_image_size(image_size),
        base_width=base_width,
        depth=depth,
        lr=lr,
        tau=tau,
        lam=lam,
        seg_loss=seg_loss,
        seed=seed,
        steps_per_epoch=steps_per_epoch,
        device=device,
        amp=amp,
        compile=compile_model,
        augment=not no_augment,
    )
    run_dir = out if out is not None else Path("runs") / f"{scheme}-{arch}-{'-'.join(names)}"

    from pedseg.training.distributed import detect
    from pedseg.training.loop import train as run_training

    is_main = detect().is_main
    with TrainDisplay(quiet=quiet or not is_main) as display:
        result = run_training(
            config, specs, out=run_dir, resume=resume, cache_root=cache_dir, callback=display
        )
    if is_main:
        ok(trained_line(f"trained {scheme} ({arch}) on {', '.join(names)}", result))


def _train_config(names: list[str], **values: Any) -> TrainConfig:
    """The validated training config of the command-line values (one-line errors)."""
    from pedseg.training.config import TrainConfig

    return TrainConfig(domains=tuple(names), **values)


def _extend(
    base: Path | None,
    names: list[str],
    *,
    freeze_shared: bool,
    given: list[str],
    options: dict[str, Any],
    specs_of: Any,
    out: Path | None,
    cache_dir: Path | None,
) -> None:
    """``train --domains NEW --from RUN --freeze-shared``: add a domain to a trained model."""
    from pedseg.training.base_run import check_extension_request
    from pedseg.training.extend import ExtendConfig, extend_run

    config = ExtendConfig(**options)
    layout = check_extension_request(base, names, freeze_shared=freeze_shared, given=given)
    (spec,) = specs_of()
    result = extend_run(
        layout.root, spec, config=config, out=out, cache_root=cache_dir, callback=epoch_lines
    )
    ok(trained_line(f"added domain {spec.name!r} to {layout.root}", result))


def register(app: typer.Typer) -> None:
    app.command("train")(train)
