"""``pedseg train --domains A B …``: train the shared model (or a baseline) into a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pedseg.cli.options import DATA_HELP, DOMAINS_HELP, domain_names, parse_image_size
from pedseg.cli.render import console, ok

if TYPE_CHECKING:
    from pedseg.training.events import TrainEvent


def train(
    domains: list[str] = typer.Option([], "--domains", "-d", help=DOMAINS_HELP),
    more_domains: list[str] = typer.Argument(None, hidden=True, metavar="DOMAIN"),
    data: list[str] = typer.Option([], "--data", metavar="NAME=DIR", help=DATA_HELP),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Run folder (default: runs/<scheme>-<arch>-<domains>)."
    ),
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
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    amp: str = typer.Option("auto", "--amp", help="auto (bf16 on a capable GPU) | bf16 | off."),
    compile_model: bool = typer.Option(False, "--compile", help="Use torch.compile."),
    no_augment: bool = typer.Option(False, "--no-augment", help="Disable flip/shift/rotation."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly."),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Slice cache folder (default: $PEDSEG_HOME/cache)."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Log one line per epoch, no live display."
    ),
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
    from pedseg.training.config import TrainConfig

    names = domain_names(domains, more_domains)
    if from_run is not None or freeze_shared:
        from pedseg.cli.adapt_cmd import train_from_run

        train_from_run(
            from_run,
            names,
            freeze_shared=freeze_shared,
            data=data,
            out=out,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            steps_per_epoch=steps_per_epoch,
            device=device,
            augment=not no_augment,
            cache_dir=cache_dir,
            seg_loss=seg_loss,
            fixed_by_base={
                "--scheme": scheme != "dsl-contrastive",
                "--arch": arch != "unet",
                "--image-size": image_size is not None,
                "--base-width": base_width != 32,
                "--depth": depth != 5,
                "--tau": tau != 0.1,
                "--lambda": lam != 0.1,
                "--amp": amp != "auto",
                "--resume": resume,
                "--compile": compile_model,
            },
        )
        return
    specs = DomainRegistry().resolve(names, data=parse_data_overrides(data))
    config = TrainConfig(
        domains=tuple(names),
        scheme=scheme,  # type: ignore[arg-type]  # validated by TrainConfig
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
        ok(
            f"trained {scheme} ({arch}) on {', '.join(names)}: best epoch {result.best_epoch}, "
            f"validation Dice {result.best_metric:.3f}; run folder {result.run_dir}"
        )


class TrainDisplay:
    """Rich live progress (epoch, step, losses, throughput, ETA) or one log line per epoch."""

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = None if quiet else _make_progress()
        self.task: TaskID | None = None

    def __enter__(self) -> TrainDisplay:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: TrainEvent) -> None:
        prefix = f"[{event.model}] " if event.model else ""
        if event.kind == "epoch_start" and self.progress is not None:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(
                f"{prefix}epoch {event.epoch}/{event.epochs}", total=event.steps or None, losses=""
            )
        elif event.kind == "step" and self.progress is not None and self.task is not None:
            losses = "  ".join(f"{k} {v:.4f}" for k, v in event.losses.items())
            self.progress.update(
                self.task,
                completed=event.step,
                losses=f"{losses}  {event.slices_per_s:.1f} slices/s",
            )
        elif event.kind == "epoch_end":
            dice = event.metrics.get("val_dice", float("nan"))
            loss = event.metrics.get("loss_total", float("nan"))
            best = " (best)" if event.is_best else ""
            line = (
                f"{prefix}epoch {event.epoch}/{event.epochs}: loss {loss:.4f}, "
                f"validation Dice {dice:.3f}{best}"
            )
            if self.progress is not None:
                self.progress.console.print(line)
            else:
                typer.echo(line, err=True)


def _make_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[losses]}"),
        console=console,
        transient=True,
    )


def register(app: typer.Typer) -> None:
    app.command("train")(train)
