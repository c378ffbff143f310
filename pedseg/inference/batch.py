"""Predicting many cases: inputs -> cases, outputs, the run manifest, ``--continue``.

Layout. With a folder ``OUT`` (several inputs, a folder input, or ``--out`` without a volume
suffix) every case writes ``OUT/<case>.nii.gz``, ``OUT/<case>.json`` and, when asked,
``OUT/<case>_probabilities.nii.gz`` and ``OUT/<case>_preview.png``; ``OUT/pedseg-predict.json``
(the manifest) records each case as done or failed (with the reason), its files and the model hash.
A single input file may instead name its label map (``--out seg.nii.gz``): the other files sit beside
it (``seg.json``, ...) and no manifest is written.

Safety. Inputs are checked before anything runs: every output must lie outside the input folders,
no two inputs may map to one case name, and existing outputs are refused without ``overwrite``.
A case is read and predicted fully in memory before its first file is written; its files are written
to temporary names and moved into place together, so a failing case leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pedseg.errors import ConfigError, OutputExistsError, PedsegError, VolumeError
from pedseg.inference.predictor import Predictor
from pedseg.inference.report import (
    MANIFEST_NAME,
    RunManifest,
    case_report,
    write_preview,
    write_report,
)
from pedseg.io import is_volume_path, read_volume, write_like
from pedseg.io.atomic import atomic_path
from pedseg.io.readers import volume_suffix
from pedseg.io.volume import Volume
from pedseg.io.writers import OUTPUT_SUFFIXES

__all__ = [
    "MANIFEST_NAME",
    "BatchEvent",
    "BatchOptions",
    "BatchResult",
    "Case",
    "CaseOutputs",
    "CaseResult",
    "collect_cases",
    "plan_outputs",
    "predict_cases",
]

logger = logging.getLogger(__name__)

Status = Literal["done", "failed", "skipped"]
Recognize = Callable[["Case", Volume], "dict[str, Any] | None"]


@dataclass(frozen=True)
class Case:
    """One input volume (file or DICOM series folder) and its name in the outputs."""

    name: str
    source: Path


@dataclass(frozen=True)
class CaseOutputs:
    """Where a case's files go (``None``: not asked for)."""

    labels: Path
    report: Path
    probabilities: Path | None = None
    preview: Path | None = None

    def files(self) -> list[Path]:
        paths = [self.labels, self.probabilities, self.report, self.preview]
        return [p for p in paths if p is not None]


@dataclass(frozen=True)
class BatchOptions:
    """What to write and how (``resume`` is the CLI's ``--continue``)."""

    out: Path
    save_probabilities: bool = False
    preview: bool = False
    overwrite: bool = False
    resume: bool = False


@dataclass(frozen=True)
class CaseResult:
    case: Case
    status: Status
    outputs: tuple[Path, ...] = ()
    reason: str = ""
    report: dict[str, Any] | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class BatchEvent:
    """Progress: ``start`` (total known), ``case_start`` and ``case_end`` (with the result)."""

    kind: Literal["start", "case_start", "case_end"]
    index: int
    total: int
    case: Case | None = None
    result: CaseResult | None = None


@dataclass(frozen=True)
class BatchResult:
    results: tuple[CaseResult, ...]
    manifest: Path | None
    backend: str
    device: str

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if r.status == "failed"]

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)


# ------------------------------------------------------------------------------------- planning
def case_name(path: Path) -> str:
    """A case's name: the file name without its volume suffix, or the DICOM folder's name."""
    if path.is_dir():
        return path.name
    suffix = volume_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def collect_cases(inputs: Sequence[Path]) -> list[Case]:
    """Cases of the given files, DICOM series folders and folders of volumes, in input order."""
    if not inputs:
        raise ConfigError(
            "give at least one input: a volume file, a folder of them or a DICOM folder"
        )
    cases: list[Case] = []
    for item in inputs:
        if not item.exists():
            raise VolumeError(item, "does not exist")
        if item.is_dir() and not is_volume_path(item):
            found = sorted(p for p in item.iterdir() if is_volume_path(p))
            if not found:
                raise ConfigError(
                    f"{item}: holds no volumes (.nii.gz, .nii, .mha, .mhd, .nrrd, .nhdr) "
                    "or DICOM series folders"
                )
            cases.extend(Case(case_name(p), p) for p in found)
        else:
            cases.append(Case(case_name(item), item))
    seen: dict[str, Path] = {}
    for case in cases:
        if case.name in seen:
            raise ConfigError(
                f"inputs {seen[case.name]} and {case.source} both map to the output name "
                f"{case.name!r}; predict them into different --out folders"
            )
        seen[case.name] = case.source
    return cases


def is_single_file_out(cases: Sequence[Case], out: Path) -> bool:
    """One case and ``out`` named like a volume file: ``out`` is the label map itself."""
    return len(cases) == 1 and volume_suffix(out) in OUTPUT_SUFFIXES and not out.is_dir()


def plan_outputs(
    cases: Sequence[Case], options: BatchOptions, *, inputs: Sequence[Path] = ()
) -> tuple[dict[str, CaseOutputs], Path | None]:
    """Every case's output files and the manifest path (None in single-file mode); refuses outputs
    equal to an input or inside an input folder (``inputs``: what the user named)."""
    out = options.out
    plans: dict[str, CaseOutputs] = {}
    manifest: Path | None = None
    if is_single_file_out(cases, out):
        suffix = volume_suffix(out)
        stem = out.with_name(out.name[: len(out.name) - len(suffix)])
        plans[cases[0].name] = _outputs(stem, suffix, options)
    else:
        if out.exists() and not out.is_dir():
            raise ConfigError(
                f"--out {out}: is a file; give a folder (or a .nii.gz file for one input)"
            )
        for case in cases:
            plans[case.name] = _outputs(out / case.name, ".nii.gz", options)
        manifest = out / MANIFEST_NAME
    _check_outside_inputs([*inputs, *(case.source for case in cases)], out, plans)
    return plans, manifest


def _outputs(stem: Path, suffix: str, options: BatchOptions) -> CaseOutputs:
    return CaseOutputs(
        labels=stem.with_name(stem.name + suffix),
        report=stem.with_name(stem.name + ".json"),
        probabilities=(
            stem.with_name(stem.name + "_probabilities" + suffix)
            if options.save_probabilities
            else None
        ),
        preview=stem.with_name(stem.name + "_preview.png") if options.preview else None,
    )


def _check_outside_inputs(
    sources: Sequence[Path], out: Path, plans: dict[str, CaseOutputs]
) -> None:
    target = out.resolve()
    inputs = {source.resolve() for source in sources}
    for folder in (p for p in inputs if p.is_dir()):
        if target == folder or target.is_relative_to(folder):
            raise ConfigError(
                f"--out {out} is inside the input folder {folder}; choose an output folder "
                "outside the inputs"
            )
    for plan in plans.values():
        for path in plan.files():
            if path.resolve() in inputs:
                raise ConfigError(
                    f"output {path} would replace an input file; choose another --out"
                )


# -------------------------------------------------------------------------------------- running
def predict_cases(
    predictor: Predictor,
    inputs: Sequence[Path],
    options: BatchOptions,
    *,
    callback: Callable[[BatchEvent], None] | None = None,
    recognize: Recognize | None = None,
) -> BatchResult:
    """Predict every input case; failures of one case (bad input, ...) do not stop the others.
    ``recognize(case, volume)`` gives the ``recognition`` entry of a case's report (or None)."""
    cases = collect_cases(inputs)
    plans, manifest_path = plan_outputs(cases, options, inputs=inputs)
    manifest = RunManifest.load(manifest_path)
    sha = predictor.info.model_sha256
    domain = predictor.spec.name
    skip = {
        c.name
        for c in cases
        if options.resume
        and manifest.is_done(c.name, plans[c.name].files(), model_sha256=sha, domain=domain)
    }
    if not options.overwrite:
        _refuse_existing([plans[c.name] for c in cases if c.name not in skip])
    manifest.start(domain=domain, model_sha256=sha)
    emit = callback if callback is not None else (lambda event: None)
    emit(BatchEvent("start", 0, len(cases)))
    results: list[CaseResult] = []
    for index, case in enumerate(cases):
        emit(BatchEvent("case_start", index, len(cases), case=case))
        if case.name in skip:
            result = CaseResult(case, "skipped", tuple(plans[case.name].files()), "done before")
        else:
            result = _run_case(predictor, case, plans[case.name], options, manifest, recognize)
            _record(manifest, result)
        results.append(result)
        emit(BatchEvent("case_end", index, len(cases), case=case, result=result))
    return BatchResult(
        tuple(results), manifest_path, predictor.backend.name, predictor.backend.device
    )


def _run_case(
    predictor: Predictor,
    case: Case,
    plan: CaseOutputs,
    options: BatchOptions,
    manifest: RunManifest,
    recognize: Recognize | None = None,
) -> CaseResult:
    start = time.perf_counter()
    try:
        report = predict_case(
            predictor, case, plan, overwrite=options.overwrite, recognize=recognize
        )
    except (PedsegError, MemoryError) as error:
        reason = str(error) if isinstance(error, PedsegError) else "out of memory"
        logger.info("case %s failed: %s", case.name, reason)
        return CaseResult(case, "failed", reason=reason, seconds=time.perf_counter() - start)
    except BaseException as error:  # a bug or an interrupt: record it, then let it propagate
        reason = f"interrupted ({type(error).__name__})"
        _record(manifest, CaseResult(case, "failed", reason=reason))
        raise
    seconds = time.perf_counter() - start
    return CaseResult(case, "done", tuple(plan.files()), report=report, seconds=seconds)


def predict_case(
    predictor: Predictor,
    case: Case,
    plan: CaseOutputs,
    *,
    overwrite: bool = False,
    recognize: Recognize | None = None,
) -> dict[str, Any]:
    """Read, predict and write one case; returns its report. All or nothing on disk."""
    t0 = time.perf_counter()
    volume = read_volume(case.source)
    t1 = time.perf_counter()
    recognition = recognize(case, volume) if recognize is not None else None
    recognition_s = time.perf_counter() - t1
    prediction = predictor.predict(volume, keep_probabilities=plan.probabilities is not None)
    spec = predictor.spec
    timings = {"read": t1 - t0, **prediction.timings}
    if recognition is not None:
        timings["recognition"] = recognition_s
    names = {"labels": plan.labels.name, "report": plan.report.name}
    if plan.probabilities is not None:
        names["probabilities"] = plan.probabilities.name
    if plan.preview is not None:
        names["preview"] = plan.preview.name
    with contextlib.ExitStack() as stack:
        t2 = time.perf_counter()
        tmp = stack.enter_context(atomic_path(plan.labels, overwrite=overwrite))
        write_like(prediction.labels, volume, tmp, overwrite=True)
        if plan.probabilities is not None and prediction.probabilities is not None:
            tmp = stack.enter_context(atomic_path(plan.probabilities, overwrite=overwrite))
            write_like(prediction.probabilities, volume, tmp, overwrite=True)
        if plan.preview is not None:
            tmp = stack.enter_context(atomic_path(plan.preview, overwrite=overwrite))
            write_preview(
                tmp,
                volume.array,
                prediction.labels,
                axis=prediction.axis,
                spec=spec,
                title=case.name,
                overwrite=True,
            )
        timings["write"] = time.perf_counter() - t2
        timings["total"] = time.perf_counter() - t0
        report = case_report(
            case=case.name,
            source=case.source,
            spec=spec,
            labels=prediction.labels,
            spacing=volume.spacing,
            shape=volume.source.shape,
            slice_axis=prediction.axis,
            model_sha256=predictor.info.model_sha256,
            scheme=predictor.info.scheme,
            backend=predictor.backend.name,
            device=predictor.backend.device,
            postprocessed=predictor.postprocess,
            timings=timings,
            outputs=names,
        )
        if recognition is not None:
            report["recognition"] = recognition
        tmp = stack.enter_context(atomic_path(plan.report, overwrite=overwrite))
        write_report(tmp, report, overwrite=True)
    return report


def _record(manifest: RunManifest, result: CaseResult) -> None:
    manifest.record(
        result.case.name,
        status=result.status,
        source=result.case.source,
        outputs=result.outputs,
        reason=result.reason,
    )


def _refuse_existing(plans: Sequence[CaseOutputs]) -> None:
    existing = [p for plan in plans for p in plan.files() if p.exists()]
    if existing:
        more = f" (and {len(existing) - 1} more output files)" if len(existing) > 1 else ""
        raise OutputExistsError(
            existing[0], f"pass --overwrite to replace it{more}, or --continue to skip done cases"
        )
