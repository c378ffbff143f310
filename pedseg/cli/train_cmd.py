"""``pedseg train --domains A B …``: train the shared model (or a baseline) into a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from pedseg.cli.options import (
    base_width_option,
    batch_size_option,
    data_option,
    depth_option,
    device_option,
    domain_names,
    domains_option,
    epochs_option,
    given_options,
    image_size_option,
    keep_option,
    lam_option,
    lr_option,
    more_domains_argument,
    out_option,
    parse_image_size,
    quiet_option,
    recipe_option,
    schedule_option,
    seg_loss_option,
    steps_per_epoch_option,
    tau_option,
)
from pedseg.cli.render import TrainDisplay, epoch_lines, ok, trained_line

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
    "keep": "--keep",
}


def train(
    ctx: typer.Context,
    domains: list[str] = domains_option(),
    more_domains: list[str] = more_domains_argument(),
    data: list[str] = data_option(),
    out: Path | None = out_option(None, "Run folder (default: runs/<scheme>-<arch>-<domains>)."),
    recipe: str = recipe_option(),
    plan: Path | None = typer.Option(
        None, "--plan", help="Train as a plan.json of `pedseg plan` says (fitted to its budget)."
    ),
    budget: str | None = typer.Option(
        None, "--budget", help="Plan for this wall-clock budget and train in it: 1h, 45m, 1h30m."
    ),
    scheme: str = typer.Option(
        "dsl-contrastive",
        "--scheme",
        help="baseline | joint | dsl | dsl-contrastive (the paper's).",
    ),
    arch: str = typer.Option("unet", "--arch", help="unet | attention-unet."),
    epochs: int | None = epochs_option(),
    batch_size: int | None = batch_size_option(),
    image_size: str | None = image_size_option(),
    base_width: int | None = base_width_option(),
    depth: int | None = depth_option(),
    lr: float | None = lr_option(),
    schedule: str | None = schedule_option(),
    warmup_steps: int | None = typer.Option(None, "--warmup-steps", help="Linear warm-up steps."),
    min_lr_ratio: float | None = typer.Option(
        None, "--min-lr-ratio", help="Share of --lr a decaying schedule ends at."
    ),
    tau: float = tau_option(),
    lam: float = lam_option(),
    seg_loss: str | None = seg_loss_option(),
    keep: str | None = keep_option(),
    seed: int = typer.Option(
        0, "--seed", help="Seed of initialisation, split, sampling, augmentation."
    ),
    steps_per_epoch: int | None = steps_per_epoch_option(),
    device: str = device_option(),
    amp: str = typer.Option(
        "auto", "--amp", help="auto (bf16 where measured faster) | bf16 | off."
    ),
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
    import time

    from pedseg.domains.registry import DomainRegistry, parse_data_overrides

    started = time.monotonic()
    names = domain_names(domains, more_domains)
    overrides = parse_data_overrides(data)
    given = given_options(ctx)
    values = {
        "scheme": scheme,
        "arch": arch,
        "epochs": epochs,
        "batch_size": batch_size,
        "image_size": parse_image_size(image_size),
        "base_width": base_width,
        "depth": depth,
        "lr": lr,
        "schedule": schedule,
        "warmup_steps": warmup_steps,
        "min_lr_ratio": min_lr_ratio,
        "tau": tau,
        "lam": lam,
        "seg_loss": seg_loss,
        "keep": keep,
        "seed": seed,
        "steps_per_epoch": steps_per_epoch,
        "device": device,
        "amp": amp,
        "compile": compile_model,
        "augment": not no_augment,
    }
    explicit = {key: values[key] for key in values if _PARAMS.get(key, key) in given}
    if from_run is not None or freeze_shared:
        _extend(
            from_run,
            names,
            freeze_shared=freeze_shared,
            given=[flag for name, flag in _FLAGS.items() if name in given],
            options={key: explicit[key] for key in _EXTEND_KEYS if key in explicit}
            | {"seed": seed, "device": device, "augment": not no_augment},
            specs_of=lambda: DomainRegistry().resolve(names, data=overrides),
            out=out,
            cache_dir=cache_dir,
        )
        return
    specs = DomainRegistry().resolve(names, data=overrides)
    from pedseg.workflows.training import TrainRequest, resolve_train_config

    request = TrainRequest(recipe=recipe, plan=plan, budget=budget, fixed=values, explicit=explicit)
    config, fitted = resolve_train_config(names, specs, request, cache_root=cache_dir)
    run_dir = (
        out
        if out is not None
        else Path("runs") / f"{config.scheme}-{config.arch}-{'-'.join(names)}"
    )

    from pedseg.training.distributed import detect
    from pedseg.training.loop import train as run_training
    from pedseg.training.runner import Budget

    is_main = detect().is_main
    deadline = None if fitted is None else Budget(seconds=fitted, started=started)
    with TrainDisplay(quiet=quiet or not is_main) as display:
        result = run_training(
            config,
            specs,
            out=run_dir,
            resume=resume,
            cache_root=cache_dir,
            callback=display,
            budget=deadline,
        )
    if is_main:
        ok(trained_line(f"trained {config.scheme} ({config.arch}) on {', '.join(names)}", result))


#: Command-line parameter names of TrainConfig fields named otherwise.
_PARAMS = {"compile": "compile_model", "augment": "no_augment"}
#: What ``train --from`` passes on to the extension (the rest is the base run's).
_EXTEND_KEYS = ("epochs", "batch_size", "lr", "steps_per_epoch", "seg_loss")


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
