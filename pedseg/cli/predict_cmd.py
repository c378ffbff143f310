"""``pedseg predict INPUT… [--domain NAME]``: segment volumes with a trained run or an ONNX export.

Without ``--domain`` each scan's domain is recognised from the scan (:mod:`pedseg.inference.recognition`,
needs a run folder with domain profiles) and the cases are predicted domain by domain into the same
output folder. With ``--domain`` a run's profiles (when present) check every scan: a scan that looks
like another domain or like none of them gets a yellow warning and a ``recognition`` entry in its JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
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
    from pedseg.inference.batch import BatchEvent, BatchOptions, BatchResult, Case, Recognize
    from pedseg.inference.predictor import Predictor
    from pedseg.inference.recognition import Recognition, Recognizer
    from pedseg.io.volume import Volume

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("predictions")


def predict(
    inputs: list[Path] = typer.Argument(
        ..., metavar="INPUT", help="Volume files, folders of them, or DICOM series folders."
    ),
    domain: str | None = typer.Option(
        None,
        "--domain",
        "-d",
        help="Domain (dataset) the inputs belong to (default: recognised from each scan).",
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
    ood_threshold: float | None = typer.Option(
        None,
        "--ood-threshold",
        help="Warn when a scan's median distance to its domain exceeds this many p95 units "
        "(default: pedseg's, see docs/recognition.md).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Segment volumes; writes label maps with the inputs' exact geometry."""
    from pedseg.inference.batch import BatchOptions
    from pedseg.inference.predictor import open_predictor

    def opener(name: str) -> Predictor:
        predictor = open_predictor(
            model,
            name,
            backend=backend,
            device=device,
            allow_cpu_fallback=allow_cpu_fallback,
            batch_size=batch_size,
            postprocess=not no_postprocess,
        )
        info = predictor.info
        console.print(
            f"backend {predictor.backend.name} on {predictor.backend.device}; domain {name}; "
            f"model {info.model_sha256[:12]} ({info.scheme}) from {info.source}",
            soft_wrap=True,
        )
        return predictor

    options = BatchOptions(
        out=out,
        save_probabilities=save_probabilities,
        preview=preview,
        overwrite=overwrite,
        resume=resume,
    )

    def recognizer() -> Recognizer:
        from pedseg.inference.recognition import recognizer_for

        return recognizer_for(model, device=device, threshold=ood_threshold)

    with _Display(quiet=quiet) as display:
        if domain is None:
            result = _predict_recognised(opener, inputs, options, display, recognizer)
        else:
            result = _predict_domain(opener(domain), inputs, options, display, recognizer)
    _summary(result, out)
    if result.failed:
        raise typer.Exit(1)


def _predict_domain(
    predictor: Predictor,
    inputs: list[Path],
    options: BatchOptions,
    display: _Display,
    make_recognizer: Callable[[], Recognizer],
) -> BatchResult:
    """One domain; each scan is checked against the run's domain profiles where it has them."""
    from pedseg.errors import ModelError
    from pedseg.inference.batch import predict_cases

    domain = predictor.spec.name
    recognize: Recognize | None = None
    try:
        recognizer = make_recognizer()
    except ModelError as exc:
        logger.info("no domain recognition warnings: %s", exc)
    else:

        def recognize(case: Case, volume: Volume) -> dict[str, object]:
            entry = recognizer.identify(volume).to_dict(expected=domain)
            if "warning" in entry:
                _warn(case.name, str(entry["warning"]))
            return entry

    return predict_cases(predictor, inputs, options, callback=display, recognize=recognize)


def _predict_recognised(
    opener: Callable[[str], Predictor],
    inputs: list[Path],
    options: BatchOptions,
    display: _Display,
    make_recognizer: Callable[[], Recognizer],
) -> BatchResult:
    """Recognise every scan's domain first, then predict the cases domain by domain."""
    from pedseg.errors import PedsegError
    from pedseg.inference.batch import BatchResult, collect_cases, plan_outputs, predict_cases
    from pedseg.io import read_volume

    recognizer = make_recognizer()
    cases = collect_cases(inputs)
    plan_outputs(cases, options, inputs=inputs)  # refuse bad outputs before any work
    found: dict[str, Recognition] = {}
    groups: dict[str, list[Case]] = {}
    for case in cases:
        try:
            found[case.name] = recognition = recognizer.identify(read_volume(case.source))
        except PedsegError:  # predicted with the first domain, where it fails and is recorded
            groups.setdefault(recognizer.domains[0], []).append(case)
            continue
        groups.setdefault(recognition.domain, []).append(case)
        console.print(
            f"{escape(case.name)}: domain {recognition.domain} "
            f"({recognition.confidence:.0%} of slices)",
            soft_wrap=True,
        )
        warning = recognition.warning()
        if warning is not None:
            _warn(case.name, warning)

    def recognize(case: Case, volume: Volume) -> dict[str, object] | None:
        recognition = found.get(case.name)
        return None if recognition is None else recognition.to_dict()

    results: list[BatchResult] = []
    for name in recognizer.domains:
        if name in groups:
            sources = [case.source for case in groups[name]]
            results.append(
                predict_cases(opener(name), sources, options, callback=display, recognize=recognize)
            )
    return BatchResult(
        tuple(r for result in results for r in result.results),
        results[-1].manifest,
        results[-1].backend,
        results[-1].device,
    )


def _warn(case: str, message: str) -> None:
    console.print(f"[yellow]warning: {escape(case)}: {escape(message)}[/]", soft_wrap=True)


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
