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
    from pedseg.domains.spec import DomainSpec
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
    recipe: str = typer.Option(
        "pedseg",
        "--recipe",
        help="pedseg (measured to converge: Dice+CE, lr 1e-3, warm-up + cosine) | paper (CE, "
        "Adam 1e-4 constant, batch 32, 30 epochs, 256², width 32).",
    ),
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
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs (recipe: 30)."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", help="Slices per step, over all domains (recipe: 32)."
    ),
    image_size: str | None = typer.Option(
        None,
        "--image-size",
        help="In-plane size, 256 or 256x192 (default: the recipe's/descriptors').",
    ),
    base_width: int | None = typer.Option(
        None, "--base-width", help="Channels of the first UNet level (recipe: 32)."
    ),
    depth: int | None = typer.Option(None, "--depth", help="Resolution levels (recipe: 5)."),
    lr: float | None = typer.Option(None, "--lr", help="Adam learning rate (recipe's)."),
    schedule: str | None = typer.Option(
        None, "--schedule", help="constant | cosine | poly (recipe's; warm-up: --warmup-steps)."
    ),
    warmup_steps: int | None = typer.Option(None, "--warmup-steps", help="Linear warm-up steps."),
    min_lr_ratio: float | None = typer.Option(
        None, "--min-lr-ratio", help="Share of --lr a decaying schedule ends at."
    ),
    tau: float = typer.Option(0.1, "--tau", help="Contrastive temperature (Eq. 3)."),
    lam: float = typer.Option(0.1, "--lambda", help="Contrastive weight λ."),
    seg_loss: str | None = typer.Option(
        None, "--seg-loss", help="ce (the paper's) | dice-ce (adds soft Dice; recipe pedseg)."
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seed of initialisation, split, sampling, augmentation."
    ),
    steps_per_epoch: int | None = typer.Option(
        None, "--steps-per-epoch", help="Steps per epoch (default: training slices / batch size)."
    ),
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
    config, fitted = _train_config(
        names,
        specs,
        recipe=recipe,
        plan=plan,
        budget=budget,
        explicit=explicit,
        fixed=values,
        cache_dir=cache_dir,
    )
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


def _train_config(
    names: list[str],
    specs: list[DomainSpec],
    *,
    recipe: str,
    plan: Path | None,
    budget: str | None,
    explicit: dict[str, Any],
    fixed: dict[str, Any],
    cache_dir: Path | None,
) -> tuple[TrainConfig, float | None]:
    """The run's config: the recipe, then a plan (read, or made for ``budget``), then the options
    given explicitly; and the budget (seconds) its epochs are fitted to after the first epoch,
    if any (none when ``--epochs`` or ``--steps-per-epoch`` is given)."""
    from pedseg.errors import ConfigError
    from pedseg.training.config import TrainConfig
    from pedseg.training.recipes import compose

    planned: dict[str, Any] = {}
    seconds: float | None = None
    if plan is not None and budget is not None:
        raise ConfigError("--plan and --budget both plan the run; give one of them")
    if plan is not None or budget is not None:
        from pedseg.planning.plan import read_plan, train_kwargs

        if plan is not None:
            chosen = read_plan(plan)
        else:
            from pedseg.planning.api import plan_run
            from pedseg.planning.budget import parse_budget
            from pedseg.planning.plan import OVERRIDABLE

            around = {k: v for k, v in explicit.items() if k in OVERRIDABLE}
            chosen = plan_run(
                specs,
                budget_s=parse_budget(budget or ""),
                device=str(fixed["device"]),
                cache_root=cache_dir,
                overrides=around,
            ).plan
        planned = train_kwargs(chosen, domains=names)
        if not {"epochs", "steps_per_epoch"} & set(explicit):  # the user's epochs are kept
            seconds = chosen.budget_s
    values = compose(recipe, defaults=fixed, explicit=explicit, plan=planned)
    values["domains"] = tuple(names)
    return TrainConfig(**values), seconds


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
