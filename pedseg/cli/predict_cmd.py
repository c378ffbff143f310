"""``pedseg predict INPUT… --domain NAME``: segment volumes with a trained run or an ONNX export."""

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

from pedseg.cli.render import console

if TYPE_CHECKING:
    from pedseg.inference.batch import BatchEvent, BatchResult

DEFAULT_OUT = Path("predictions")


def predict(
    inputs: list[Path] = typer.Argument(
        ..., metavar="INPUT", help="Volume files, folders of them, or DICOM series folders."
    ),
    domain: str = typer.Option(
        ..., "--domain", "-d", help="Domain (dataset) the inputs belong to."
    ),
    model: Path | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Run folder, or a folder of exported .onnx files (default: the most recent run).",
    ),
    out: Path = typer.Option(
        DEFAULT_OUT,
        "--out",
        "-o",
        help="Output folder; for a single input file also a label map path such as seg.nii.gz.",
    ),
    backend: str | None = typer.Option(
        None,
        "--backend",
        help="onnx | torch (default: onnx where the run has an export, else torch).",
    ),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    batch_size: int = typer.Option(8, "--batch-size", help="Slices per network call."),
    save_probabilities: bool = typer.Option(
        False, "--save-probabilities", help="Also write <case>_probabilities.nii.gz (float32)."
    ),
    no_postprocess: bool = typer.Option(
        False, "--no-postprocess", help="Skip the largest-component + closing clean-up."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    resume: bool = typer.Option(
        False, "--continue", help="Skip cases the manifest marks done (outputs present)."
    ),
    preview: bool = typer.Option(
        False, "--preview", help="Also write <case>_preview.png with coloured contours."
    ),
    allow_cpu_fallback: bool = typer.Option(
        False, "--allow-cpu-fallback", help="Run on the CPU when --device cuda is not usable."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Segment volumes of one domain; writes label maps with the inputs' exact geometry."""
    from pedseg.inference.batch import BatchOptions, predict_cases
    from pedseg.inference.predictor import open_predictor

    predictor = open_predictor(
        model,
        domain,
        backend=backend,
        device=device,
        allow_cpu_fallback=allow_cpu_fallback,
        batch_size=batch_size,
        postprocess=not no_postprocess,
    )
    info = predictor.info
    console.print(
        f"backend {predictor.backend.name} on {predictor.backend.device}; domain {domain}; "
        f"model {info.model_sha256[:12]} ({info.scheme}) from {info.source}",
        soft_wrap=True,
    )
    options = BatchOptions(
        out=out,
        save_probabilities=save_probabilities,
        preview=preview,
        overwrite=overwrite,
        resume=resume,
    )
    with _Display(quiet=quiet) as display:
        result = predict_cases(predictor, inputs, options, callback=display)
    _summary(result, out)
    if result.failed:
        raise typer.Exit(1)


def _summary(result: BatchResult, out: Path) -> None:
    done, skipped = result.count("done"), result.count("skipped")
    parts = [f"{done} case{'s' if done != 1 else ''} predicted"]
    if skipped:
        parts.append(f"{skipped} already done")
    if result.failed:
        parts.append(f"{len(result.failed)} failed")
    where = result.manifest if result.manifest is not None else out
    line = f"{', '.join(parts)} ({result.backend} on {result.device}); see {where}"
    mark = "[red]✗[/]" if result.failed else "[green]✓[/]"
    console.print(f"{mark} {line}", soft_wrap=True)
    for failure in result.failed:
        typer.secho(f"error: {failure.case.name}: {failure.reason}", fg="red", err=True)


class _Display:
    """A rich progress bar over cases (nothing when quiet or not a terminal)."""

    def __init__(self, *, quiet: bool) -> None:
        self.progress: Progress | None = None if quiet else _make_progress()
        self.task: TaskID | None = None

    def __enter__(self) -> _Display:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: BatchEvent) -> None:
        progress = self.progress
        if progress is None:
            return
        if event.kind == "start":
            self.task = progress.add_task("predicting", total=event.total)
        elif self.task is None:
            return
        elif event.kind == "case_start" and event.case is not None:
            progress.update(self.task, description=event.case.name)
        elif event.kind == "case_end" and event.result is not None:
            result = event.result
            if result.status == "done":
                progress.console.print(f"  {result.case.name}: done in {result.seconds:.1f} s")
            progress.advance(self.task)


def _make_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
