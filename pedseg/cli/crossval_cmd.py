"""``pedseg crossval --domains A B … --out DIR``: the paper's cross-validation of one or more methods."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pedseg.cli.options import (
    DATA_HELP,
    DOMAINS_HELP,
    base_width_option,
    batch_size_option,
    depth_option,
    device_option,
    domain_names,
    epochs_option,
    given_options,
    image_size_option,
    keep_option,
    lam_option,
    lr_option,
    out_option,
    parse_image_size,
    quiet_option,
    recipe_option,
    schedule_option,
    seg_loss_option,
    steps_per_epoch_option,
    tau_option,
)
from pedseg.cli.render import console, ok
from pedseg.errors import ConfigError

if TYPE_CHECKING:
    from pedseg.evaluation.crossval import CrossvalEvent


def crossval(
    ctx: typer.Context,
    domains: list[str] = typer.Option([], "--domains", "-d", help=DOMAINS_HELP),
    extra: list[str] = typer.Argument(None, hidden=True, metavar="DOMAIN"),
    out: Path = out_option(..., "Output folder (continued when it exists)."),
    schemes: list[str] = typer.Option(
        [],
        "--schemes",
        help="Schemes to compare: baseline joint dsl dsl-contrastive (default: dsl-contrastive).",
    ),
    archs: list[str] = typer.Option(
        [], "--archs", help="Architectures: unet attention-unet (default: unet)."
    ),
    folds: str = typer.Option("loo", "--folds", help="loo (leave one out) or K (K-fold)."),
    max_folds: int | None = typer.Option(
        None, "--max-folds", help="Run only the first N folds (a quick look)."
    ),
    shard: str | None = typer.Option(
        None,
        "--shard",
        metavar="I/N",
        help="Run only the I-th of N interleaved parts of the (method, fold) jobs, each part "
        "into its own --out (cluster array jobs, several GPUs); `pedseg compare` merges them.",
    ),
    budget: str | None = typer.Option(
        None,
        "--budget",
        help="Every (method, fold) run's wall-clock budget (30m, 1h): each fold planned for it "
        "from its own training data, every method fitted to it (baselines share it).",
    ),
    recipe: str = recipe_option(),
    data: list[str] = typer.Option([], "--data", metavar="NAME=DIR", help=DATA_HELP),
    epochs: int | None = epochs_option("Epochs per fold (recipe: 30)."),
    batch_size: int | None = batch_size_option(),
    image_size: str | None = image_size_option(),
    base_width: int | None = base_width_option(),
    depth: int | None = depth_option(),
    lr: float | None = lr_option(),
    schedule: str | None = schedule_option(),
    tau: float = tau_option(),
    lam: float = lam_option(),
    seg_loss: str | None = seg_loss_option(),
    keep: str | None = keep_option(),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold plan and of training."),
    steps_per_epoch: int | None = steps_per_epoch_option(),
    tta: bool = typer.Option(
        False,
        "--tta",
        help="Predict the test cases with test-time augmentation (see predict --tta).",
    ),
    device: str = device_option(),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Slice cache folder (default: DIR/cache)."
    ),
    quiet: bool = quiet_option("Log fold lines only."),
) -> None:
    """Train, predict and evaluate every method on every fold; interrupted runs continue."""
    from pedseg.domains.registry import DomainRegistry, parse_data_overrides
    from pedseg.evaluation.crossval import CrossvalConfig, run_crossval
    from pedseg.evaluation.protocol import parse_folds
    from pedseg.planning.budget import parse_budget
    from pedseg.workflows.training import TrainRequest, resolve_train_config

    more_domains, more_schemes, more_archs = split_values(extra or [])
    names = domain_names(domains, more_domains)
    specs = DomainRegistry().resolve(names, data=parse_data_overrides(data))
    values = {
        "epochs": epochs,
        "batch_size": batch_size,
        "image_size": parse_image_size(image_size),
        "base_width": base_width,
        "depth": depth,
        "lr": lr,
        "schedule": schedule,
        "tau": tau,
        "lam": lam,
        "seg_loss": seg_loss,
        "keep": keep,
        "seed": seed,
        "steps_per_epoch": steps_per_epoch,
        "device": device,
    }
    given = given_options(ctx)
    explicit = {key: value for key, value in values.items() if key in given}
    request = TrainRequest(recipe=recipe, fixed=values, explicit=explicit)
    train, _ = resolve_train_config(names, specs, request)
    config = CrossvalConfig(
        train=train,
        schemes=tuple(domain_names(schemes, more_schemes)) or ("dsl-contrastive",),
        archs=tuple(domain_names(archs, more_archs)) or ("unet",),
        folds=parse_folds(folds),
        max_folds=max_folds,
        shard=parse_shard(shard),
        budget_s=None if budget is None else parse_budget(budget),
        explicit=tuple(sorted(explicit)),
        tta=tta,
    )
    display = _Display(quiet=quiet)
    result = run_crossval(config, specs, out=out, cache_root=cache_dir, callback=display)
    for method in result.methods:
        ran, skipped = len(method.folds_run), len(method.folds_skipped)
        ok(
            f"{method.method}: {ran} fold(s) run, {skipped} already done; "
            f"per-case metrics in {method.folder / 'metrics.csv'}"
        )


def parse_shard(value: str | None) -> tuple[int, int] | None:
    """``"2/3"`` to ``(2, 3)`` (checked by the crossval config)."""
    if value is None:
        return None
    index, _, count = value.partition("/")
    if not (index.strip().isdigit() and count.strip().isdigit()):
        raise ConfigError(f"--shard must be I/N with 1 <= I <= N, got {value!r}")
    return int(index), int(count)


def split_values(extra: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Sort the values click leaves over (``--schemes a b`` gives ``b`` as a positional value)
    into domains, schemes and architectures: scheme and architecture names are recognised."""
    from pedseg.training.config import ARCHS, SCHEMES

    values = domain_names(extra)
    schemes = [v for v in values if v in SCHEMES]
    archs = [v for v in values if v in ARCHS]
    domains = [v for v in values if v not in SCHEMES and v not in ARCHS]
    return domains, schemes, archs


class _Display:
    """One line per fold event, and per epoch of training unless quiet."""

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, event: CrossvalEvent) -> None:
        where = f"{event.method} fold-{event.fold} ({event.fold + 1}/{event.folds})"
        if event.kind == "plan":
            console.print(f"fold plan ({event.folds} folds): {event.message}")
        elif event.kind == "fold_skip":
            console.print(f"{where}: done earlier, skipped")
        elif event.kind == "fold_start":
            console.print(f"[bold]{where}[/]: starting")
        elif event.kind == "fold_end":
            console.print(f"{where}: predicted and evaluated")
        elif event.kind == "method_end":
            console.print(f"[bold]{event.method}[/]: all folds done ({event.message})")
        elif event.kind == "predict" and not self.quiet:
            console.print(f"{where}: predicting {event.domain}/{event.case}")
        elif event.kind == "train" and not self.quiet and event.train_event is not None:
            train = event.train_event
            if train.kind == "epoch_end":
                model = f" [{train.model}]" if train.model else ""
                dice = train.metrics.get("val_dice", float("nan"))
                console.print(
                    f"{where}{model}: epoch {train.epoch}/{train.epochs}, "
                    f"validation Dice {dice:.3f}"
                )


def register(app: typer.Typer) -> None:
    app.command("crossval")(crossval)
