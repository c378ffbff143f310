"""``pedseg predict INPUT… [--domain NAME]``: segment volumes with a trained run or an ONNX export.

Without ``--domain`` each scan's domain is recognised from the scan (needs a run folder with domain
profiles); with it, a run's profiles (when present) check every scan. Either way all cases are
planned once and predicted in input order into the same place (:mod:`pedseg.inference.batch`).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import Progress, TaskID

from pedseg.cli.options import device_option, model_option, out_option, quiet_option
from pedseg.cli.render import console, make_progress

if TYPE_CHECKING:
    from pedseg.inference.batch import BatchEvent, BatchResult
    from pedseg.inference.ood import OodCheck
    from pedseg.inference.predictor import Predictor
    from pedseg.inference.routing import Router

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
    model: Path | None = model_option(
        "Run folder, or a folder of exported .onnx files (default: the most recent run)."
    ),
    out: Path = out_option(
        DEFAULT_OUT,
        "Output folder; for a single input file also a label map path such as seg.nii.gz.",
    ),
    backend: str | None = typer.Option(
        None,
        "--backend",
        help="onnx | onnx-int8 | torch (default: onnx where the run has an export, else torch; "
        "onnx-int8 where its export is verified and was measured faster on this CPU).",
    ),
    device: str = device_option(),
    batch_size: int = typer.Option(8, "--batch-size", help="Slices per network call."),
    save_probabilities: bool = typer.Option(
        False, "--save-probabilities", help="Also write <case>_probabilities.nii.gz (float32)."
    ),
    tta: bool = typer.Option(
        False,
        "--tta",
        help="Test-time augmentation: average with the mirrored slices (the domain's training "
        "flip: 2x network time) and, for a model with a label chain (vertebrae), with slices "
        "shifted along it (5x); none for a domain with neither.",
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
    outputs: str | None = typer.Option(
        None,
        "--outputs",
        help="Clinical outputs besides the label map, comma-separated: seg-nrrd (3D Slicer), "
        "dicom-seg (DICOM inputs), mesh-stl|mesh-ply|mesh-obj (one surface per label), stats "
        "(morphometry + statistics.csv), preview-3d (default: the domain's, see docs/outputs.md).",
    ),
    mesh_format: str | None = typer.Option(None, "--mesh-format", help="stl | ply | obj."),
    mesh_smoothing: int | None = typer.Option(
        None, "--mesh-smoothing", help="Taubin smoothing passes (0 = none; default 20)."
    ),
    mesh_decimate: float | None = typer.Option(
        None, "--mesh-decimate", help="Fraction of mesh faces kept, in (0, 1] (default 1)."
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
    refuse_ood: bool = typer.Option(
        False,
        "--refuse-ood",
        help="Do not segment a scan that looks out of distribution (blank, another anatomy or "
        "sequence, unlike the training scans); it is recorded as failed with the reasons.",
    ),
    quiet: bool = quiet_option("No progress bar."),
) -> None:
    """Segment volumes; writes label maps with the inputs' exact geometry."""
    from pedseg.inference.batch import BatchOptions, PredictorPool, plan_batch, predict_batch
    from pedseg.inference.predictor import open_predictor

    options = BatchOptions(
        out=out,
        save_probabilities=save_probabilities,
        preview=preview,
        overwrite=overwrite,
        resume=resume,
        outputs=outputs,
        mesh_format=mesh_format,
        mesh_smoothing=mesh_smoothing,
        mesh_decimate=mesh_decimate,
    )
    plan = plan_batch(inputs, out, options.request)  # refuses bad outputs before any work

    def opener(name: str) -> Predictor:
        predictor = open_predictor(
            model,
            name,
            backend=backend,
            device=device,
            allow_cpu_fallback=allow_cpu_fallback,
            batch_size=batch_size,
            postprocess=not no_postprocess,
            tta=tta,
        )
        info = predictor.info
        console.print(
            f"backend {predictor.backend.name} on {predictor.backend.device}"
            f"{f', TTA {predictor.tta_name}' if predictor.tta else ''}; domain {name}; "
            f"model {info.model_sha256[:12]} ({info.scheme}) from {info.source}",
            soft_wrap=True,
        )
        return predictor

    pool = PredictorPool(opener)
    if domain is not None:
        pool.get(domain)  # an unknown domain or a bad model fails before any case
    router, ood = _router(
        model,
        domain,
        device=device,
        threshold=ood_threshold,
        fallback=allow_cpu_fallback,
        refuse=refuse_ood,
        backend=backend,
    )
    with _Display(quiet=quiet) as display:
        result = predict_batch(
            plan, options, pool=pool, router=router, callback=display, domain=domain, ood=ood
        )
    _summary(result, out)
    if result.failed:
        raise typer.Exit(1)


def _router(
    model: Path | None,
    domain: str | None,
    *,
    device: str,
    threshold: float | None,
    fallback: bool,
    refuse: bool,
    backend: str | None,
) -> tuple[Router, OodCheck]:
    """Recognition for every scan without ``--domain``; with it, the profile check when the run
    has profiles (when it has none, or they are damaged, a warning says the checks are off). The
    out-of-distribution checks use the same profiles (without them: only blank scans)."""
    from pedseg.errors import ModelError, ProfileUnavailableError
    from pedseg.inference.ood import OodCheck
    from pedseg.inference.recognition import recognizer_for
    from pedseg.inference.routing import fixed_domain, recognised_domain

    recognizer_of = partial(
        recognizer_for,
        model,
        device=device,
        threshold=threshold,
        allow_cpu_fallback=fallback,
        backend=backend,
    )
    if domain is None:
        recognizer = recognizer_of()
        return recognised_domain(recognizer), OodCheck(recognizer.profiles(), refuse=refuse)
    try:
        recognizer = recognizer_of()
    except ProfileUnavailableError as exc:
        logger.info("no domain checks: %s", exc)
        return fixed_domain(domain), OodCheck(refuse=refuse)
    except ModelError as exc:
        _warn("domain checks are off", str(exc))
        return fixed_domain(domain), OodCheck(refuse=refuse)
    return fixed_domain(domain, recognizer), OodCheck(recognizer.profiles(), refuse=refuse)


def _warn(case: str, message: str) -> None:
    console.print(f"[yellow]warning: {escape(case)}: {escape(message)}[/]", soft_wrap=True)


def _summary(result: BatchResult, out: Path) -> None:
    done, skipped, busy = result.count("done"), result.count("skipped"), result.count("busy")
    parts = [f"{done} case{'s' if done != 1 else ''} predicted"]
    if skipped:
        parts.append(f"{skipped} already done")
    if busy:
        parts.append(f"{busy} left to another running pedseg")
    if result.failed:
        parts.append(f"{len(result.failed)} failed")
    where = result.manifest if result.manifest is not None else out
    if result.manifest is None and (result.failed or not done):
        where = out.parent if out.suffix else out  # the label map was not written
    line = f"{', '.join(parts)} ({result.backend} on {result.device}); see {where}"
    mark = "[red]✗[/]" if result.failed else "[green]✓[/]"
    console.print(f"{mark} {line}", soft_wrap=True)
    for failure in result.failed:
        typer.secho(f"error: {failure.case.name}: {failure.reason}", fg="red", err=True)


class _Display:
    """A rich progress bar over cases (nothing when quiet), and the per-case lines."""

    def __init__(self, *, quiet: bool) -> None:
        self.progress: Progress | None = None if quiet else make_progress()
        self.task: TaskID | None = None

    def __enter__(self) -> _Display:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def __call__(self, event: BatchEvent) -> None:
        if event.kind == "routed" and event.case is not None and event.route is not None:
            if event.route.summary is not None:
                console.print(f"{escape(event.case.name)}: {event.route.summary}", soft_wrap=True)
            for warning in event.route.warnings:
                _warn(event.case.name, warning)
        if event.kind == "case_end" and event.result is not None and event.result.ood_warning:
            _warn(event.result.case.name, event.result.ood_warning)
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
            elif result.status == "busy":
                progress.console.print(f"  {result.case.name}: {result.reason}")
            progress.advance(self.task)


def register(app: typer.Typer) -> None:
    app.command("predict")(predict)
