"""Rendering shared by several commands: one rich console for stdout, the training display."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from pedseg.training.events import TrainEvent, TrainResult

console = Console(highlight=False)


def ok(message: str) -> None:
    console.print(f"[green]✓[/] {message}")


def epoch_line(event: TrainEvent) -> str:
    """``epoch 3/10: loss 0.1234, validation Dice 0.812 (best)`` of an ``epoch_end`` event."""
    prefix = f"[{event.model}] " if event.model else ""
    dice = event.metrics.get("val_dice", float("nan"))
    loss = event.metrics.get("loss_total", float("nan"))
    best = " (best)" if event.is_best else ""
    return (
        f"{prefix}epoch {event.epoch}/{event.epochs}: loss {loss:.4f}, "
        f"validation Dice {dice:.3f}{best}"
    )


def epoch_lines(event: TrainEvent) -> None:
    """A training callback printing one line per epoch on stderr (no live display)."""
    if event.kind == "epoch_end":
        typer.echo(epoch_line(event), err=True)


def trained_line(what: str, result: TrainResult) -> str:
    """The closing line of a training command."""
    kept = ""
    if result.weights_epoch and result.weights_epoch != result.best_epoch:
        dice = (
            ""
            if result.weights_metric is None
            else f", validation Dice {result.weights_metric:.3f}"
        )
        kept = f"; kept the final weights (epoch {result.weights_epoch}{dice})"
    return (
        f"{what}: best epoch {result.best_epoch}, validation Dice {result.best_metric:.3f}{kept}; "
        f"run folder {result.run_dir}"
    )


class TrainDisplay:
    """Rich live progress of a training run, or one log line per epoch when ``quiet``.

    Two bars: the current epoch (steps, losses, throughput) and the whole run (all steps of all
    epochs still to run), whose remaining time is the run's ETA.
    """

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = None if quiet else make_progress(TextColumn("{task.fields[losses]}"))
        self.task: TaskID | None = None
        self.total: TaskID | None = None
        self._done_before = 0

    def __enter__(self) -> TrainDisplay:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: TrainEvent) -> None:
        progress = self.progress
        prefix = f"[{event.model}] " if event.model else ""
        if event.kind == "run_start" and progress is not None:
            epochs_left = max(event.epochs - event.epoch + 1, 0)
            if self.total is not None:
                progress.remove_task(self.total)
            self.total = progress.add_task(
                f"{prefix}run", total=epochs_left * event.steps or None, losses=""
            )
            self._done_before = 0
        elif event.kind == "epoch_start" and progress is not None:
            if self.total is not None:  # a budget may have fitted the run's epochs since
                left = max(event.epochs - event.epoch + 1, 0) * event.steps
                progress.update(self.total, total=self._done_before + left or None)
            if self.task is not None:
                progress.remove_task(self.task)
            self.task = progress.add_task(
                f"{prefix}epoch {event.epoch}/{event.epochs}", total=event.steps or None, losses=""
            )
        elif event.kind == "step" and progress is not None and self.task is not None:
            losses = "  ".join(f"{k} {v:.4f}" for k, v in event.losses.items())
            progress.update(
                self.task,
                completed=event.step,
                losses=f"{losses}  {event.slices_per_s:.1f} slices/s",
            )
            if self.total is not None:
                progress.update(self.total, completed=self._done_before + event.step)
        elif event.kind == "epoch_end":
            self._done_before += event.steps
            line = epoch_line(event)
            if progress is not None:
                progress.console.print(line)
            else:
                typer.echo(line, err=True)


def make_progress(*extra: TextColumn) -> Progress:
    """The one progress bar style (description, bar, done/total, elapsed, remaining, extras)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        *extra,
        console=console,
        transient=True,
    )
