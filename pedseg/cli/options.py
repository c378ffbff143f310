"""Options shared by several commands (declared once here), their help texts and small parsers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import typer

from pedseg.errors import ConfigError

DATA_HELP = "Data folder of a domain for this run, as NAME=DIR (MSD layout); repeatable."
DOMAINS_HELP = "Domains, space- or comma-separated: --domains ankle shoulder."
DEVICE_HELP = "auto | cpu | cuda | cuda:N."


def device_option(default: str = "auto", *, help: str = DEVICE_HELP) -> Any:
    """``--device``: where the network runs."""
    return typer.Option(default, "--device", help=help)


def model_option(help: str = "Run folder (default: the most recent run).") -> Any:
    """``--model/-m``: a trained run folder (default: the last run)."""
    return typer.Option(None, "--model", "-m", help=help)


def out_option(default: Any, help: str) -> Any:
    """``--out/-o``: where a command writes (its meaning is the command's; ``...``: required)."""
    return typer.Option(default, "--out", "-o", help=help)


def quiet_option(help: str = "No live progress display.") -> Any:
    """``--quiet/-q``."""
    return typer.Option(False, "--quiet", "-q", help=help)


def data_option() -> Any:
    """``--data NAME=DIR`` (repeatable)."""
    return typer.Option([], "--data", metavar="NAME=DIR", help=DATA_HELP)


def domains_option() -> Any:
    """``--domains/-d A B`` (the extra names arrive as :func:`more_domains_argument`)."""
    return typer.Option([], "--domains", "-d", help=DOMAINS_HELP)


def more_domains_argument() -> Any:
    """The hidden positional that collects ``--domains a b``'s extra names."""
    return typer.Argument(None, hidden=True, metavar="DOMAIN")


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
    """``256`` or ``256x192`` to ``(H, W)``; ``None`` stays ``None``. The values are checked where
    they are used (the training config), once."""
    if value is None:
        return None
    parts = value.lower().split("x")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise ConfigError(f"--image-size must look like 256 or 256x192, got {value!r}") from None
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2:
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


# The training hyperparameters that ``train`` and ``crossval`` both take. ``None`` defaults mean
# "the recipe's (or plan's) value"; the help names the pedseg recipe's value.


def recipe_option() -> Any:
    """``--recipe``: the named set of training defaults."""
    return typer.Option(
        "pedseg",
        "--recipe",
        help="pedseg (measured to converge: Dice+CE, lr 1e-3, warm-up + cosine) | paper (CE, "
        "Adam 1e-4 constant, batch 32, 30 epochs, 256², width 32).",
    )


def epochs_option(help: str = "Epochs (recipe: 30).") -> Any:
    """``--epochs``."""
    return typer.Option(None, "--epochs", help=help)


def batch_size_option() -> Any:
    """``--batch-size``: slices per step over all domains."""
    return typer.Option(
        None, "--batch-size", help="Slices per step, over all domains (recipe: 32)."
    )


def image_size_option() -> Any:
    """``--image-size 256`` / ``256x192`` (parsed by :func:`parse_image_size`)."""
    return typer.Option(
        None,
        "--image-size",
        help="In-plane size, 256 or 256x192 (default: the recipe's/descriptors').",
    )


def base_width_option() -> Any:
    """``--base-width``: channels of the first UNet level."""
    return typer.Option(None, "--base-width", help="Channels of the first UNet level (recipe: 32).")


def depth_option() -> Any:
    """``--depth``: UNet resolution levels."""
    return typer.Option(None, "--depth", help="Resolution levels (recipe: 5).")


def lr_option() -> Any:
    """``--lr``: the Adam learning rate."""
    return typer.Option(None, "--lr", help="Adam learning rate (recipe's).")


def schedule_option() -> Any:
    """``--schedule``: the learning-rate schedule."""
    return typer.Option(
        None, "--schedule", help="constant | cosine | poly (recipe's; warm-up: --warmup-steps)."
    )


def tau_option() -> Any:
    """``--tau``: the contrastive temperature."""
    return typer.Option(0.1, "--tau", help="Contrastive temperature (Eq. 3).")


def lam_option() -> Any:
    """``--lambda``: the contrastive loss weight."""
    return typer.Option(0.1, "--lambda", help="Contrastive weight λ.")


def seg_loss_option() -> Any:
    """``--seg-loss``: the segmentation loss."""
    return typer.Option(
        None, "--seg-loss", help="ce (the paper's) | dice-ce (adds soft Dice; recipe pedseg)."
    )


def keep_option() -> Any:
    """``--keep``: which epoch's weights a run keeps as its model."""
    return typer.Option(
        None,
        "--keep",
        help="Weights the run keeps: final (end of the schedule; recipe pedseg) | best (highest "
        "validation Dice; recipe paper).",
    )


def steps_per_epoch_option() -> Any:
    """``--steps-per-epoch``."""
    return typer.Option(
        None, "--steps-per-epoch", help="Steps per epoch (default: training slices / batch size)."
    )
