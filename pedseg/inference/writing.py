"""One case, read and routed: predict it fully in memory, then write all its files or none.

Files: the label map (the input's exact geometry), optionally the probabilities and the slice
preview, the clinical outputs of the domain's or the command's ``--outputs``
(:mod:`pedseg.outputs`: Slicer segmentation, DICOM-SEG, meshes, statistics, 3D preview) and last the
JSON report. Every file is written to a temporary name; they are moved into place together when all
are written, the report last, so a report never names a file that is not there.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Sequence
from typing import Any

from pedseg.inference.cases import Case, CaseOutputs
from pedseg.inference.ood import OodCheck, OutOfDistributionError
from pedseg.inference.predictor import Prediction, Predictor
from pedseg.inference.report import case_report, write_preview
from pedseg.inference.routing import Route
from pedseg.io import write_like
from pedseg.io.atomic import atomic_path
from pedseg.io.volume import Volume
from pedseg.outputs.options import OutputFormats

__all__ = ["predict_case"]


def predict_case(
    predictor: Predictor,
    case: Case,
    plan: CaseOutputs,
    volume: Volume,
    *,
    route: Route | None = None,
    timings: dict[str, float] | None = None,
    warnings: Sequence[str] = (),
    formats: OutputFormats | None = None,
    ood: OodCheck | None = None,
    overwrite: bool = False,
    prediction: Prediction | None = None,
) -> dict[str, Any]:
    """Predict one read case and write its files (see the module docstring); returns its report.
    ``ood``: the out-of-distribution checks (their verdict goes in the report; a flagged scan is
    refused before anything is written when the check says so). ``prediction``: the case's
    prediction when made beforehand (with the probabilities if ``plan`` writes them)."""
    t0 = time.perf_counter()
    before = 0.0  # seconds of a prediction made beforehand
    if prediction is None:
        prediction = predictor.predict(volume, keep_probabilities=plan.probabilities is not None)
    else:
        before = sum(prediction.timings.values())
    spec = predictor.spec
    verdict = None
    if ood is not None:
        recognition = route.recognition if route is not None else None
        verdict = ood.assess(volume, spec, prediction.labels, recognition)
        if verdict.flagged and ood.refuse:
            raise OutOfDistributionError(
                f"{case.name}: refused as out of distribution (--refuse-ood): "
                + "; ".join(verdict.reasons)
            )
    timings = {**(timings or {}), **prediction.timings}
    names = {"labels": plan.labels.name, "report": plan.report.name}
    with contextlib.ExitStack() as stack:
        report_tmp = stack.enter_context(atomic_path(plan.report, overwrite=overwrite))
        t2 = time.perf_counter()
        tmp = stack.enter_context(atomic_path(plan.labels, overwrite=overwrite))
        write_like(prediction.labels, volume, tmp, overwrite=True)
        if plan.probabilities is not None and prediction.probabilities is not None:
            tmp = stack.enter_context(atomic_path(plan.probabilities, overwrite=overwrite))
            write_like(prediction.probabilities, volume, tmp, overwrite=True)
            names["probabilities"] = plan.probabilities.name
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
            names["preview"] = plan.preview.name
        timings["write"] = time.perf_counter() - t2
        statistics = None
        if formats is not None and plan.clinical:
            from pedseg.outputs.case import write_case_outputs

            written = write_case_outputs(
                prediction.labels,
                volume,
                spec,
                formats=formats.without("nifti"),
                stem=plan.stem,
                overwrite=overwrite,
                model_sha256=predictor.info.model_sha256,
                case=case.name,
                stack=stack,
            )
            names.update({kind: path.name for kind, path in written.files.items()})
            timings.update({f"outputs/{k}": v for k, v in written.timings.items()})
            statistics = [_plain(row) for row in written.statistics] or None
        timings["total"] = sum(timings.get(k, 0.0) for k in ("read", "recognition")) + (
            before + time.perf_counter() - t0
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
        report["tta"] = prediction.tta or False
        chain = predictor.info.label_chain
        if predictor.postprocess and chain is not None:
            report["label_chain"] = list(chain.labels)  # renumbered by their order (vertebrae)
        if volume.source.affine_source is not None:
            report["affine_source"] = volume.source.affine_source
        if verdict is not None:
            report["ood"] = verdict.to_dict()
            if verdict.flagged:
                warnings = [*warnings, str(verdict.warning())]
        if warnings:
            report["warnings"] = list(warnings)
        if route is not None and route.recognition is not None:
            report["recognition"] = route.recognition
        if statistics is not None:
            report["statistics"] = statistics
        report_tmp.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _plain(row: dict[str, object]) -> dict[str, object]:
    """A statistics row with numpy scalars as Python numbers (for the JSON report)."""
    return {k: v.item() if hasattr(v, "item") else v for k, v in row.items()}
