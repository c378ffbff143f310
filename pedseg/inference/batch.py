"""Predicting many cases into one place: the per-case workflow, ``--continue`` and concurrency.

A command plans its cases and outputs once (:func:`~pedseg.inference.cases.plan_batch`), refuses
existing outputs before any work (unless ``overwrite``, or ``resume`` for cases that are done or
that an interrupted run of pedseg left unfinished), then for each case, in input order:

1. takes the case's lock in the output folder (a case another process works on is ``busy``);
2. re-reads its manifest record (a case another process finished meanwhile is ``skipped``);
3. records it ``running`` with the outputs it will write, removes temporary files a killed run left;
4. reads the scan, routes it to a domain (:mod:`pedseg.inference.routing`), predicts it fully in
   memory and writes all its files to temporary names, moved into place together;
5. records it ``done`` (or ``failed`` with the reason), then releases its lock.

A failing case leaves none of its files behind and does not stop the others. See
:mod:`pedseg.inference.manifest` for the folder's state and locks.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pedseg.errors import OutputExistsError, PedsegError
from pedseg.inference.cases import (
    BatchPlan,
    Case,
    CaseOutputs,
    OutputRequest,
    collect_cases,
    plan_batch,
)
from pedseg.inference.manifest import (
    LOCK_NAME,
    MANIFEST_NAME,
    FolderLock,
    OutputManifest,
    remove_stale_temporaries,
)
from pedseg.inference.predictor import Predictor
from pedseg.inference.report import case_report, write_preview, write_report
from pedseg.inference.routing import Route, Router, fixed_domain
from pedseg.io import read_volume, write_like
from pedseg.io.atomic import atomic_path, make_folder
from pedseg.io.volume import Volume

__all__ = [
    "MANIFEST_NAME",
    "BatchEvent",
    "BatchOptions",
    "BatchResult",
    "Case",
    "CaseOutputs",
    "CaseResult",
    "PredictorPool",
    "collect_cases",
    "plan_batch",
    "predict_batch",
    "predict_cases",
]

logger = logging.getLogger(__name__)

Status = Literal["done", "failed", "skipped", "busy"]


@dataclass(frozen=True)
class BatchOptions:
    """What to write and how (``resume`` is the CLI's ``--continue``)."""

    out: Path
    save_probabilities: bool = False
    preview: bool = False
    overwrite: bool = False
    resume: bool = False

    @property
    def request(self) -> OutputRequest:
        return OutputRequest(probabilities=self.save_probabilities, preview=self.preview)


@dataclass(frozen=True)
class CaseResult:
    case: Case
    status: Status
    outputs: tuple[Path, ...] = ()
    reason: str = ""
    report: dict[str, Any] | None = None
    seconds: float = 0.0
    domain: str | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchEvent:
    """Progress: ``start`` (total known), ``case_start``, ``routed`` (the case's :class:`Route`:
    domain, warnings), ``case_end`` (with the result)."""

    kind: Literal["start", "case_start", "routed", "case_end"]
    index: int
    total: int
    case: Case | None = None
    result: CaseResult | None = None
    route: Route | None = None


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


@dataclass
class PredictorPool:
    """One predictor per domain, opened on first use by ``opener``."""

    opener: Callable[[str], Predictor]
    opened: dict[str, Predictor] = field(default_factory=dict)

    def get(self, domain: str) -> Predictor:
        if domain not in self.opened:
            self.opened[domain] = self.opener(domain)
        return self.opened[domain]

    def model_of(self, domain: str) -> str | None:
        """The model hash domain ``domain`` is predicted with (``None``: not in this model)."""
        try:
            return self.get(domain).info.model_sha256
        except PedsegError:
            return None


# -------------------------------------------------------------------------------------- running
def predict_cases(
    predictor: Predictor,
    inputs: Sequence[Path],
    options: BatchOptions,
    *,
    callback: Callable[[BatchEvent], None] | None = None,
    router: Router | None = None,
) -> BatchResult:
    """Predict every input case with one domain's ``predictor`` (see :func:`predict_batch`)."""
    domain = predictor.spec.name
    plan = plan_batch(inputs, options.out, options.request)
    pool = PredictorPool(lambda name: predictor, {domain: predictor})
    return predict_batch(
        plan, options, pool=pool, router=router or fixed_domain(domain), callback=callback
    )


def predict_batch(
    plan: BatchPlan,
    options: BatchOptions,
    *,
    pool: PredictorPool,
    router: Router,
    callback: Callable[[BatchEvent], None] | None = None,
) -> BatchResult:
    """Predict every case of ``plan`` (see the module docstring); failures of one case (bad
    input, ...) do not stop the others."""
    emit = callback if callback is not None else (lambda event: None)
    with _folder_state(plan) as (lock, manifest):
        run = _Run(plan, options, pool, router, emit, lock, manifest)
        skip = {c.name for c in plan.cases if options.resume and run.is_done(c)}
        owned = {c.name: run.owned(c) for c in plan.cases}
        if not options.overwrite:
            _refuse_existing(plan, [c for c in plan.cases if c.name not in skip], owned)
        emit(BatchEvent("start", 0, len(plan.cases)))
        results: list[CaseResult] = []
        for index, case in enumerate(plan.cases):
            emit(BatchEvent("case_start", index, len(plan.cases), case=case))
            if case.name in skip:
                result = CaseResult(case, "skipped", tuple(plan.files(case)), "done before")
            else:
                result = run.locked_case(index, case, owned[case.name])
            results.append(result)
            emit(BatchEvent("case_end", index, len(plan.cases), case=case, result=result))
    used = list(pool.opened.values())
    backend = used[-1].backend if used else None
    return BatchResult(
        tuple(results),
        manifest.path if manifest is not None else None,
        backend.name if backend is not None else "none",
        backend.device if backend is not None else "none",
    )


@contextlib.contextmanager
def _folder_state(plan: BatchPlan) -> Iterator[tuple[FolderLock | None, OutputManifest | None]]:
    if plan.folder is None:
        yield None, None
        return
    new = [f for f in (plan.folder, *plan.folder.parents) if not f.exists()]
    make_folder(plan.folder)
    try:
        with FolderLock(plan.folder) as lock:
            yield lock, OutputManifest(plan.folder, lock)
    finally:
        if new and {p.name for p in plan.folder.iterdir()} == {LOCK_NAME}:
            # nothing was written into the folders this run made: leave none of them behind
            with contextlib.suppress(OSError):
                (plan.folder / LOCK_NAME).unlink()
                for folder in new:
                    folder.rmdir()


def _refuse_existing(plan: BatchPlan, cases: Sequence[Case], owned: dict[str, set[Path]]) -> None:
    existing = [
        p for case in cases for p in plan.files(case) if p.exists() and p not in owned[case.name]
    ]
    if existing:
        more = f" (and {len(existing) - 1} more output files)" if len(existing) > 1 else ""
        raise OutputExistsError(
            existing[0], f"pass --overwrite to replace it{more}, or --continue to skip done cases"
        )


@dataclass
class _Run:
    """One :func:`predict_batch` call's state: what every case's workflow needs."""

    plan: BatchPlan
    options: BatchOptions
    pool: PredictorPool
    router: Router
    emit: Callable[[BatchEvent], None]
    lock: FolderLock | None
    manifest: OutputManifest | None

    def is_done(self, case: Case) -> bool:
        """Recorded done by the model its domain is predicted with, every output present."""
        entry = self.manifest.entry(case.name) if self.manifest is not None else None
        if self.manifest is None or entry is None or entry.get("status") != "done":
            return False
        domain = entry.get("domain")
        model = self.pool.model_of(domain) if isinstance(domain, str) else None
        return model is not None and self.manifest.is_done(
            case.name, self.plan.files(case), model_sha256=model, domain=domain
        )

    def owned(self, case: Case) -> set[Path]:
        """Outputs of ``case`` an unfinished earlier run left: replaced on ``--continue``."""
        if self.manifest is None or not self.options.resume:
            return set()
        names = self.manifest.owned_outputs(case.name)
        return {p for p in self.plan.files(case) if self.manifest.relative(p) in names}

    def locked_case(self, index: int, case: Case, owned: set[Path]) -> CaseResult:
        """Steps 1-5 of the module docstring for one case."""
        files = self.plan.files(case)
        if self.lock is not None and not self.lock.try_case(case.name):
            return CaseResult(case, "busy", reason="another pedseg process is predicting it")
        try:
            if self.manifest is not None:
                if not self.options.overwrite and self.is_done(case):
                    return CaseResult(case, "skipped", tuple(files), "done by another process")
                owned = owned | self.owned(case)
                remove_stale_temporaries(files)
                self.manifest.record(
                    case.name,
                    status="running",
                    source=case.source,
                    outputs=files,
                    domain=None,
                    model_sha256=None,
                )
            replace = self.options.overwrite or all(p in owned for p in files if p.exists())
            result = self.run_case(index, case, replace)
            if self.manifest is not None:
                _record(self.manifest, result)
            return result
        finally:
            if self.lock is not None:
                self.lock.release_case(case.name)

    def run_case(self, index: int, case: Case, replace: bool) -> CaseResult:
        start = time.perf_counter()
        route: Route | None = None
        try:
            volume = read_volume(case.source)
            read_s = time.perf_counter() - start
            t1 = time.perf_counter()
            route = self.router(case, volume)
            timings = {"read": read_s}
            if route.recognition is not None:
                timings["recognition"] = time.perf_counter() - t1
            self.emit(BatchEvent("routed", index, len(self.plan.cases), case=case, route=route))
            report = predict_case(
                self.pool.get(route.domain),
                case,
                self.plan.outputs[case.name],
                volume,
                route=route,
                timings=timings,
                overwrite=replace,
            )
        except (PedsegError, MemoryError) as error:
            reason = str(error) if isinstance(error, PedsegError) else "out of memory"
            logger.info("case %s failed: %s", case.name, reason)
            return CaseResult(
                case,
                "failed",
                reason=reason,
                seconds=time.perf_counter() - start,
                domain=route.domain if route is not None else None,
                warnings=route.warnings if route is not None else (),
            )
        except BaseException as error:  # a bug or an interrupt: record it, then let it propagate
            if self.manifest is not None:  # its files, if any got in place, are ours to replace
                reason = f"interrupted ({type(error).__name__})"
                files = tuple(self.plan.files(case))
                _record(self.manifest, CaseResult(case, "failed", files, reason=reason))
            raise
        return CaseResult(
            case,
            "done",
            tuple(self.plan.files(case)),
            report=report,
            seconds=time.perf_counter() - start,
            domain=route.domain,
            warnings=route.warnings,
        )


def predict_case(
    predictor: Predictor,
    case: Case,
    plan: CaseOutputs,
    volume: Volume,
    *,
    route: Route | None = None,
    timings: dict[str, float] | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Predict one read case and write its files; returns its report. All or nothing on disk."""
    t0 = time.perf_counter()
    prediction = predictor.predict(volume, keep_probabilities=plan.probabilities is not None)
    spec = predictor.spec
    timings = {**(timings or {}), **prediction.timings}
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
        timings["total"] = sum(v for k, v in timings.items() if k in ("read", "recognition")) + (
            time.perf_counter() - t0
        )
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
        if route is not None and route.recognition is not None:
            report["recognition"] = route.recognition
        tmp = stack.enter_context(atomic_path(plan.report, overwrite=overwrite))
        write_report(tmp, report, overwrite=True)
    return report


def _record(manifest: OutputManifest, result: CaseResult) -> None:
    report = result.report or {}
    manifest.record(
        result.case.name,
        status="done" if result.status == "done" else "failed",
        source=result.case.source,
        outputs=result.outputs,
        domain=result.domain,
        model_sha256=report.get("model_sha256"),
        reason=result.reason,
    )
