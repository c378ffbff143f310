"""The int8 export of a run (``pedseg export-onnx --int8``): build, verify by prediction, write.

For each domain: calibration slices and validation cases (:func:`pedseg.export.quantize.calibration_data`),
the fp32 and the int8 graph (:func:`pedseg.export.quantize.build_int8`), both wrapped in pedseg's
own :class:`~pedseg.inference.predictor.Predictor` (:func:`predictor_pair`: identical
preprocessing and post-processing, onnxruntime on the CPU), the accuracy check and the speed record
(:mod:`pedseg.export.int8_check`), then the file (:func:`pedseg.export.quantize.write_int8`). A graph
that fails the check raises :class:`~pedseg.errors.ModelError` with its figures and writes nothing.
It lives here, above :mod:`pedseg.export`, because the verification predicts with the inference
layer's predictor.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pedseg.domains.spec import DomainSpec
from pedseg.errors import OutputExistsError
from pedseg.export.int8_check import (
    SpeedRecord,
    Verification,
    check_verification,
    measure_speed,
    verify_int8,
)
from pedseg.export.onnx import planned_exports
from pedseg.export.quantize import (
    Int8Options,
    build_int8,
    calibration_data,
    calibration_record,
    write_int8,
)
from pedseg.inference.backends import OnnxBackend, num_threads
from pedseg.inference.int8_choice import INT8_BACKEND
from pedseg.inference.predictor import ModelInfo, Predictor
from pedseg.runfolder.loading import DomainModel, LoadedRun

__all__ = ["Int8Report", "export_int8_domain", "export_int8_run", "predictor_pair"]

SPEED_BATCH = 8
"""Slices of the batch the speed record is measured on."""


@dataclass(frozen=True)
class Int8Report:
    """One verified int8 export."""

    domain: str
    path: Path
    calibration: Mapping[str, Any]
    verification: Verification
    speed: SpeedRecord
    seconds: float


def export_int8_run(
    run: LoadedRun,
    specs: Mapping[str, DomainSpec],
    *,
    domains: Sequence[str] | None = None,
    out_dir: Path | None = None,
    options: Int8Options | None = None,
    overwrite: bool = False,
) -> list[Int8Report]:
    """The int8 export of every domain of ``run`` (or ``domains``) into ``out_dir`` (default
    ``RUN/onnx``); ``specs`` give each domain's data (:func:`data_specs`). Nothing is written when
    any destination exists and ``overwrite`` is false."""
    planned = planned_exports(
        run, domains, lambda name: run.layout.onnx_int8(name, folder=out_dir), overwrite=overwrite
    )
    opts = options if options is not None else Int8Options()
    return [
        export_int8_domain(model, specs[model.spec.name], target, options=opts, overwrite=overwrite)
        for model, target in planned
    ]


def export_int8_domain(
    domain_model: DomainModel,
    data_spec: DomainSpec,
    path: Path,
    *,
    options: Int8Options | None = None,
    overwrite: bool = False,
) -> Int8Report:
    """Calibrate, quantise, verify and write one domain's int8 graph (see the module docstring)."""
    started = time.perf_counter()
    opts = options if options is not None else Int8Options()
    path = Path(path)
    name = domain_model.spec.name
    if not overwrite and path.exists():
        raise OutputExistsError(path)
    images, train_ids, cases = calibration_data(domain_model, data_spec, options=opts)
    with tempfile.TemporaryDirectory(prefix="pedseg-int8-") as tmp:
        fp32_bytes, model = build_int8(domain_model, images, Path(tmp), opts)
    fp32, int8 = predictor_pair(
        domain_model, fp32_bytes, model.SerializeToString(), batch_size=opts.batch_size
    )
    verification = verify_int8(fp32, int8, cases, spec=domain_model.spec)
    check_verification(verification, domain=name)
    speed = measure_speed(fp32.backend, int8.backend, images[:SPEED_BATCH], threads=num_threads())
    calibration = calibration_record(images, train_ids, opts)
    records = {
        "calibration": calibration,
        "verification": verification.to_dict(),
        "speed": speed.to_dict(),
    }
    write_int8(model, path, domain_model, records=records, overwrite=overwrite)
    return Int8Report(
        domain=name,
        path=path,
        calibration=calibration,
        verification=verification,
        speed=speed,
        seconds=time.perf_counter() - started,
    )


def predictor_pair(
    domain_model: DomainModel, fp32: bytes, int8: bytes, *, batch_size: int = 8
) -> tuple[Predictor, Predictor]:
    """Predictors over the fp32 and the int8 graph (onnxruntime, CPU), otherwise identical."""
    info = ModelInfo(
        spec=domain_model.spec,
        image_size=domain_model.image_size,
        model_sha256=domain_model.model_sha256,
        scheme=domain_model.scheme,
        source=domain_model.layout.root if domain_model.layout else Path(),
        components=domain_model.components,
        label_chain=domain_model.label_chain,
    )
    threads = num_threads()
    predictors = tuple(
        Predictor(
            info,
            OnnxBackend(data, device="cpu", threads=threads, name=name),
            batch_size=batch_size,
        )
        for data, name in ((fp32, "onnx"), (int8, INT8_BACKEND))
    )
    return predictors[0], predictors[1]
