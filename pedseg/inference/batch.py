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

With the domain known beforehand (a :class:`~pedseg.inference.routing.FixedDomain` router), step 4
predicts first and then checks the scan against the profiles with the embeddings of that same
network pass. While a case runs, the next one is read (and, with a known domain, normalised and
resized) in one background thread (:mod:`pedseg.inference.prefetch`, one case ahead): only the input is
read early, never before the previous case; locks, manifest records and outputs are taken in order
exactly as without it, and a prefetched case's read error is that case's failure. Cases the
manifest already marks done are not prefetched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path

from pedseg.domains.spec import DomainSpec
from pedseg.errors import OutputExistsError, PedsegError
from pedseg.inference.cases import (
    BatchOptions,
    BatchPlan,
    Case,
    CaseOutputs,
    PredictorPool,
    collect_cases,
    plan_batch,
    with_clinical,
)
from pedseg.inference.manifest import (
    MANIFEST_NAME,
    FolderLock,
    OutputManifest,
    folder_state,
    refuse_existing,
    remove_stale_temporaries,
)
from pedseg.inference.ood import OodCheck
from pedseg.inference.predictor import Prediction, Predictor
from pedseg.inference.prefetch import Prefetch, Staged
from pedseg.inference.results import BatchEvent, BatchResult, CaseResult
from pedseg.inference.routing import FixedDomain, KnownEmbeddings, Route, Router, fixed_domain
from pedseg.inference.writing import predict_case
from pedseg.io import read_volume

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
        plan,
        options,
        pool=pool,
        router=router or fixed_domain(domain),
        callback=callback,
        domain=domain,
    )


def predict_batch(
    plan: BatchPlan,
    options: BatchOptions,
    *,
    pool: PredictorPool,
    router: Router,
    callback: Callable[[BatchEvent], None] | None = None,
    domain: str | None = None,
    ood: OodCheck | None = None,
) -> BatchResult:
    """Predict every case of ``plan`` (see the module docstring); failures of one case (bad
    input, ...) do not stop the others. ``domain``: every case's domain when it is known
    beforehand (``--domain``), so that their clinical outputs are planned and checked up front.
    ``ood``: the out-of-distribution checks (default: only blank scans are flagged)."""
    emit = callback if callback is not None else (lambda event: None)
    if domain is not None:  # every case's clinical files are known before any work
        plan = replace(
            plan,
            outputs={
                c.name: with_clinical(plan, options, c, pool.get(domain).spec) for c in plan.cases
            },
        )
    if not options.overwrite and not options.resume:
        refuse_existing(plan)
    with (
        folder_state(plan) as (lock, manifest),
        Prefetch(enabled=options.prefetch and len(plan.cases) > 1) as prefetch,
    ):
        run = _Run(plan, options, pool, router, emit, lock, manifest, ood or OodCheck())
        emit(BatchEvent("start", 0, len(plan.cases)))
        results: list[CaseResult] = []
        cases = plan.cases
        for index, case in enumerate(cases):
            staged = prefetch.take(case)
            if staged is None and not run.skippable(case):
                staged = prefetch.start(case, run.stage)
            if index + 1 < len(cases) and not run.skippable(cases[index + 1]):
                prefetch.submit(cases[index + 1], run.stage)
            emit(BatchEvent("case_start", index, len(plan.cases), case=case))
            result = run.locked_case(index, case, staged)
            results.append(result)
            emit(BatchEvent("case_end", index, len(plan.cases), case=case, result=result))
        if manifest is not None and any(
            "stats" in options.formats_for(p.spec) for p in pool.opened.values()
        ):
            from pedseg.outputs.stats import merge_statistics_csv, statistics_files

            with manifest.lock.manifest():
                if statistics_files(manifest.folder):
                    merge_statistics_csv(manifest.folder, overwrite=True)
    used = list(pool.opened.values())
    backend = used[-1].backend if used else None
    return BatchResult(
        tuple(results),
        manifest.path if manifest is not None else None,
        backend.name if backend is not None else "none",
        backend.device if backend is not None else "none",
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
    ood: OodCheck

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

    def skippable(self, case: Case) -> bool:
        """Whether ``case`` will most likely be skipped (done before): not worth reading early."""
        return self.options.resume and not self.options.overwrite and self.is_done(case)

    def stage(self, case: Case) -> Staged:
        """Read ``case`` and, when its domain is known and its predictor open, prepare its slices
        (thread-safe: it only reads)."""
        start = time.perf_counter()
        volume = read_volume(case.source)
        read_s = time.perf_counter() - start
        fixed = self.router if isinstance(self.router, FixedDomain) else None
        predictor = self.pool.opened.get(fixed.domain) if fixed is not None else None
        if predictor is None:
            return Staged(volume, read_s)
        start = time.perf_counter()
        stack = predictor.prepare(volume)
        return Staged(volume, read_s, stack, time.perf_counter() - start)

    def owned(self, case: Case) -> set[Path]:
        """Outputs of ``case`` its record lists (pedseg wrote them): replaced on ``--continue``."""
        if self.manifest is None or not self.options.resume:
            return set()
        names = self.manifest.owned_outputs(case.name)
        return {p for p in self.plan.files(case) if self.manifest.relative(p) in names}

    def locked_case(self, index: int, case: Case, staged: Future[Staged] | None) -> CaseResult:
        """Steps 1-5 of the module docstring for one case."""
        files = self.plan.files(case)
        if self.lock is not None and not self.lock.try_case(case.name):
            return CaseResult(case, "busy", reason="another pedseg process is predicting it")
        try:
            owned: set[Path] = set()
            if self.manifest is not None:
                if not self.options.overwrite and self.is_done(case):  # maybe by another process
                    return CaseResult(case, "skipped", tuple(files), "done before")
                owned = self.owned(case)
                taken = [p for p in files if p.exists() and p not in owned]
                if taken and not self.options.overwrite:  # not pedseg's: never replaced
                    hint = "pass --overwrite to replace it, or --continue if pedseg wrote it"
                    return CaseResult(case, "failed", reason=str(OutputExistsError(taken[0], hint)))
                remove_stale_temporaries(files)
                self.manifest.record(
                    case.name,
                    status="running",
                    source=case.source,
                    outputs=files,
                    domain=None,
                    model_sha256=None,
                )
            may_replace = self.options.overwrite or all(p in owned for p in files if p.exists())
            result = self.run_case(index, case, may_replace, staged)
            if self.manifest is not None:
                _record(self.manifest, result)
            return result
        finally:
            if self.lock is not None:
                self.lock.release_case(case.name)

    def routed_outputs(self, case: Case, spec: DomainSpec, may_replace: bool) -> CaseOutputs:
        """The case's outputs once its domain is known: with the clinical files of that domain
        (planned before any work when the domain was given); new ones must not exist yet."""
        outputs = self.plan.outputs[case.name]
        if outputs.clinical or not self.options.formats_for(spec).without("nifti").formats:
            return outputs
        outputs = with_clinical(self.plan, self.options, case, spec)
        if not may_replace:
            taken = [p for p in outputs.clinical.values() if p.exists()]
            if taken:
                raise OutputExistsError(taken[0], "pass --overwrite to replace it")
        if self.manifest is not None:  # they are this case's from now on (a kill, --continue)
            self.manifest.record(
                case.name,
                status="running",
                source=case.source,
                outputs=outputs.files(),
                domain=spec.name,
                model_sha256=None,
            )
        return outputs

    def route_and_predict(
        self, case: Case, staged: Staged, may_replace: bool
    ) -> tuple[Route, Predictor, CaseOutputs, Prediction | None, float]:
        """The case's route, predictor and outputs; for a known domain also its prediction (made
        first: the domain check uses its embeddings). Last: the seconds the route took."""
        volume = staged.volume
        if not isinstance(self.router, FixedDomain):
            t0 = time.perf_counter()
            route = self.router(case, volume)
            seconds = time.perf_counter() - t0
            predictor = self.pool.get(route.domain)
            return (
                route,
                predictor,
                self.routed_outputs(case, predictor.spec, may_replace),
                None,
                seconds,
            )
        fixed = self.router
        predictor = self.pool.get(fixed.domain)
        outputs = self.routed_outputs(case, predictor.spec, may_replace)
        prediction = predictor.predict(
            volume,
            keep_probabilities=outputs.probabilities is not None,
            embed=fixed.check is not None,
            stack=staged.stack,
            stack_seconds=staged.prepare_s,
        )
        known = None
        if prediction.embeddings is not None:
            z = KnownEmbeddings(predictor.spec, predictor.info.image_size, prediction.embeddings)
            known = {fixed.domain: z}
        t0 = time.perf_counter()
        route = fixed(case, volume, known=known)
        return route, predictor, outputs, prediction, time.perf_counter() - t0

    def run_case(
        self, index: int, case: Case, may_replace: bool, staged: Future[Staged] | None = None
    ) -> CaseResult:
        start = time.perf_counter()
        route: Route | None = None
        try:
            ready = staged.result() if staged is not None else self.stage(case)
            volume = ready.volume
            route, predictor, outputs, prediction, route_s = self.route_and_predict(
                case, ready, may_replace
            )
            if volume.warnings:  # e.g. a qform/sform disagreement: segmented, and said
                route = replace(route, warnings=(*volume.warnings, *route.warnings))
            timings = {"read": ready.read_s}
            if route.recognition is not None:
                timings["recognition"] = route_s
            self.emit(BatchEvent("routed", index, len(self.plan.cases), case=case, route=route))
            report = predict_case(
                predictor,
                case,
                outputs,
                volume,
                route=route,
                timings=timings,
                warnings=route.warnings,
                formats=self.options.formats_for(predictor.spec),
                ood=self.ood,
                overwrite=may_replace,
                prediction=prediction,
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
        ood = report.get("ood", {})
        return CaseResult(
            case,
            "done",
            tuple(outputs.files()),
            report=report,
            seconds=time.perf_counter() - start,
            domain=route.domain,
            warnings=route.warnings,
            ood_warning=f"looks out of distribution: {'; '.join(ood['reasons'])}"
            if ood.get("flagged")
            else None,
        )


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
