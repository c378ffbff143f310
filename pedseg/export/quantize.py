"""int8 exports: a statically quantised graph per domain, calibrated on its training slices.

``export-onnx --int8`` writes ``RUN/onnx/<domain>.int8.onnx`` (:meth:`RunLayout.onnx_int8`); this
module builds and writes the graph (steps 1-4 and the file), :mod:`pedseg.inference.int8_export`
runs the steps and verifies the graph with pedseg's predictor (step 5):

1. the domain's fp32 graph, exported and verified against PyTorch exactly as ``export-onnx`` does
   (:func:`pedseg.export.onnx.export_domain`, into a temporary folder); it is the reference;
2. the graph to quantise: the same folded network with each 2x2 stride-2 transposed convolution
   rewritten as the equivalent 1x1 convolution to ``4C`` channels + pixel shuffle (onnxruntime has
   no int8 transposed convolution on the CPU; ``DepthToSpace`` runs on int8 data), identical
   bias tensors untied (a shared bias cannot be quantised per convolution), checked against the
   reference within :data:`~pedseg.export.onnx.FP32_TOLERANCE`;
3. calibration on at most ``calibration_slices`` slices drawn (seeded) from the domain's *training*
   cases (every case not recorded as validation in ``RUN/checkpoints/latest/state.json``), read from
   the slice cache training uses, at the run's image size;
4. ``onnxruntime.quantization.quantize_static``: QDQ format, int8 weights per output channel,
   activations ``uint8`` (default) or ``int8``, calibration ``minmax`` / ``entropy`` /
   ``percentile``; the head convolution and the softmax stay float, so probabilities are not
   rounded to 1/255 steps, and so does the first, full-resolution encoder level (it reads the
   image; measured on real data it costs most of the accuracy int8 loses, for a few per cent of
   the operations);
5. verification on the validation cases and a speed record (:mod:`pedseg.export.int8_check`);
   a graph that fails is not written; the file is written atomically (nothing partial) with the
   fp32 metadata plus ``precision: int8`` and :data:`INT8_METADATA_KEYS` (JSON), sealed with its
   content digest like every export (:func:`write_int8`).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, ModelError
from pedseg.export.int8_graph import float_nodes, int8_source
from pedseg.export.onnx import INPUT_NAME, export_metadata
from pedseg.io.atomic import atomic_path

if TYPE_CHECKING:
    import onnx

    from pedseg.data.dataset import Case
    from pedseg.runfolder.loading import DomainModel, LoadedRun

__all__ = [
    "CALIBRATION_METHODS",
    "INT8_METADATA_KEYS",
    "Int8Options",
    "build_int8",
    "calibration_data",
    "calibration_record",
    "data_specs",
    "quantize_graph",
    "reduce_range",
    "write_int8",
]

logger = logging.getLogger(__name__)

CalibrationMethod = Literal["minmax", "entropy", "percentile"]
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")
ACTIVATION_TYPES: tuple[str, ...] = ("uint8", "int8")
INT8_METADATA_KEYS: tuple[str, ...] = ("calibration", "verification", "speed")
MAX_CALIBRATION_SLICES = 1000
CALIBRATION_BATCH = 4


@dataclass(frozen=True)
class Int8Options:
    """How to calibrate (defaults chosen by ``benchmarks/bench_int8.py``)."""

    method: CalibrationMethod = "minmax"
    activations: Literal["uint8", "int8"] = "uint8"
    calibration_slices: int = 200
    seed: int = 0
    cache_root: Path | None = None
    batch_size: int = 8
    """Slices per network call while verifying."""
    float_first_level: bool = True
    """Keep the full-resolution encoder level (it reads the image) in float."""

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ConfigError(
                f"--calibration must be one of {', '.join(CALIBRATION_METHODS)}, got {self.method!r}"
            )
        if self.activations not in ACTIVATION_TYPES:
            raise ConfigError(f"activations must be uint8 or int8, got {self.activations!r}")
        n = self.calibration_slices
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_CALIBRATION_SLICES:
            raise ConfigError(
                f"--calibration-slices must be in [1, {MAX_CALIBRATION_SLICES}], got {n!r}"
            )
        if isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {self.batch_size!r}")


def data_specs(
    run: LoadedRun, names: Sequence[str], roots: Mapping[str, Path]
) -> dict[str, DomainSpec]:
    """Each domain's descriptor as trained, with its data folder: ``roots`` (``--data``), else the
    registry's descriptor of that name (like ``pedseg train``)."""
    from pedseg.domains.registry import DomainRegistry
    from pedseg.errors import RegistryError

    extra = sorted(set(roots) - set(names))
    if extra:
        raise ConfigError(f"--data names domain {extra[0]!r} which is not exported")
    registry = DomainRegistry()
    out: dict[str, DomainSpec] = {}
    for name in names:
        spec = run.domain(name).spec
        try:
            registered = registry.get(name)
        except RegistryError:
            registered = None
        if registered is not None and registered.data is not None:
            spec = replace(spec, data=registered.data)
        if name in roots:
            spec = spec.with_data_root(roots[name])
        if spec.data is None:
            raise ConfigError(
                f"domain {name!r} has no data folder to calibrate on; pass --data {name}=DIR"
            )
        out[name] = spec
    return out


def build_int8(
    domain_model: DomainModel, images: np.ndarray, folder: Path, options: Int8Options
) -> tuple[bytes, onnx.ModelProto]:
    """Steps 1, 2 and 4 of the module docstring in ``folder``: the verified fp32 graph (its bytes,
    the reference) and the quantised model (metadata not set yet)."""
    from pedseg.export.onnx import export_domain

    export_domain(domain_model, folder / "fp32.onnx")
    fp32 = (folder / "fp32.onnx").read_bytes()
    source = int8_source(domain_model, folder / "source.onnx", reference=fp32)
    return fp32, quantize_graph(source, folder / "int8.onnx", images, options)


def calibration_record(
    images: np.ndarray, train_ids: Sequence[str], options: Int8Options
) -> dict[str, Any]:
    """The ``calibration`` metadata entry."""
    return {
        "slices": int(images.shape[0]),
        "cases": len(train_ids),
        "method": options.method,
        "activations": options.activations,
        "weights": "int8 per channel" + (", 7-bit range" if reduce_range() else ""),
        "format": "QDQ",
        "float": "first encoder level, head, softmax"
        if options.float_first_level
        else "head, softmax",
    }


def write_int8(
    model: onnx.ModelProto,
    path: Path,
    domain_model: DomainModel,
    *,
    records: Mapping[str, Mapping[str, Any]],
    overwrite: bool = False,
) -> None:
    """Write ``model`` atomically with the fp32 export's metadata, ``precision: int8`` and
    ``records`` (:data:`INT8_METADATA_KEYS`, as JSON), sealed like every pedseg export."""
    import onnx

    from pedseg.export.onnx import _seal

    missing = sorted(set(INT8_METADATA_KEYS) - set(records))
    if missing:
        raise ModelError(f"int8 metadata lacks {', '.join(missing)}; report this bug")
    meta = export_metadata(domain_model, precision="int8")
    meta.update({key: json.dumps(records[key], sort_keys=True) for key in INT8_METADATA_KEYS})
    onnx.helper.set_model_props(model, meta)
    payload = _seal(model)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(payload)


# ---------------------------------------------------------------------- calibration data
def calibration_data(
    domain_model: DomainModel, data_spec: DomainSpec, *, options: Int8Options
) -> tuple[np.ndarray, list[str], list[Case]]:
    """The calibration slices (N, H, W) drawn from the training cases, the training case ids and
    the validation cases (read from the run's checkpoint state)."""
    from pedseg.data.cache import build_cache
    from pedseg.data.dataset import list_cases

    name = domain_model.spec.name
    if data_spec.content_hash() != domain_model.spec.content_hash():
        raise ConfigError(f"the data descriptor of {name!r} is not the one the run was trained on")
    val_ids = _validation_cases(domain_model)
    size = domain_model.image_size
    cache = build_cache(data_spec, cache_root=options.cache_root, image_size=size)
    train_ids = [c.case_id for c in cache.cases if c.case_id not in set(val_ids)]
    images = _calibration_images(cache.images, cache.slices_of(train_ids), options, name)
    by_id = {case.case_id: case for case in list_cases(data_spec)}
    missing = [case_id for case_id in val_ids if case_id not in by_id]
    if missing:
        raise ConfigError(f"validation case {missing[0]!r} of {name!r} is not in {data_spec.data}")
    return images, train_ids, [by_id[case_id] for case_id in val_ids]


def _validation_cases(domain_model: DomainModel) -> tuple[str, ...]:
    """The domain's held-out cases recorded by training (``checkpoints/latest/state.json``)."""
    from pedseg.runfolder.checkpoint import find_checkpoint, read_state

    layout = domain_model.layout
    name = domain_model.spec.name
    folder = None if layout is None else find_checkpoint(layout.checkpoint("latest"))
    recorded = read_state(folder).get("val_cases") if folder is not None else None
    cases = recorded.get(name) if isinstance(recorded, dict) else None
    if not isinstance(cases, list) or not cases:
        where = "the run" if layout is None else str(layout.checkpoint("latest"))
        raise ModelError(
            f"{where} records no validation cases of {name!r}; int8 exports are verified on them, "
            "so export int8 from a run trained with pedseg (checkpoints kept)"
        )
    return tuple(str(c) for c in cases)


def _calibration_images(
    images: np.ndarray, indices: np.ndarray, options: Int8Options, domain: str
) -> np.ndarray:
    if indices.size == 0:
        raise ModelError(f"domain {domain!r} has no training slices to calibrate on")
    if indices.size > options.calibration_slices:
        rng = np.random.default_rng([options.seed, zlib.crc32(domain.encode("utf-8"))])
        indices = np.sort(rng.choice(indices, size=options.calibration_slices, replace=False))
    return np.ascontiguousarray(images[indices], dtype=np.float32)


# ---------------------------------------------------------------------- quantisation
def quantize_graph(
    source: Path, target: Path, images: np.ndarray, options: Int8Options
) -> onnx.ModelProto:
    """``quantize_static`` of the graph file ``source`` into ``target`` (module docstring, step 4),
    calibrated on ``images`` (N, H, W); the quantised model."""
    import onnx
    from onnxruntime import quantization as q

    methods = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }
    activations = q.QuantType.QUInt8 if options.activations == "uint8" else q.QuantType.QInt8
    reader = _SliceReader(images, CALIBRATION_BATCH)
    # The histogram calibrators print progress to stdout: library code never prints.
    with _quiet_root_logger(), contextlib.redirect_stdout(io.StringIO()):
        q.quantize_static(
            str(source),
            str(target),
            reader,
            quant_format=q.QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range(),
            activation_type=activations,
            weight_type=q.QuantType.QInt8,
            calibrate_method=methods[options.method],
            nodes_to_exclude=float_nodes(
                onnx.load_model(str(source)), first_level=options.float_first_level
            ),
            calibration_providers=["CPUExecutionProvider"],
            # One batch per calibration pass: histograms and ranges are merged across passes, so
            # memory holds one batch's activations whatever the number of slices.
            extra_options={"CalibStridedMinMax": 1},
        )
    return onnx.load_model(str(target))


def reduce_range() -> bool:
    """7-bit weights on an x86 CPU without VNNI, whose uint8 x int8 products can saturate 16-bit
    sums (onnxruntime's advice); full 8-bit weights elsewhere."""
    import platform

    from pedseg.export.cpu import cpu_flags

    flags = cpu_flags()
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")
    return x86 and not (flags["avx512_vnni"] or flags["avx_vnni"])


class _SliceReader:
    """``CalibrationDataReader`` over ``images`` (N, H, W) in batches, with the range interface
    ``quantize_static`` uses for strided calibration."""

    def __init__(self, images: np.ndarray, batch: int) -> None:
        self._batches = [
            np.ascontiguousarray(images[i : i + batch, None], dtype=np.float32)
            for i in range(0, images.shape[0], batch)
        ]
        self._next, self._stop = 0, len(self._batches)

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._stop = start_index, min(end_index, len(self._batches))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._stop:
            return None
        self._next += 1
        return {INPUT_NAME: self._batches[self._next - 1]}


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime's quantiser logs advice (pre-processing) on the root logger: keep it out."""

    def only_errors(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    root = logging.getLogger()
    root.addFilter(only_errors)
    try:
        yield
    finally:
        root.removeFilter(only_errors)
