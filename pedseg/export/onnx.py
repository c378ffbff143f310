"""Per-domain ONNX export with metadata and a verified parity check, and safe ONNX loading.

One graph per domain (``RUN/onnx/<domain>.onnx`` by default): the shared convolutions with that
domain's batch norm folded in (:mod:`pedseg.export.fold`), its head and the softmax. Input ``image``
``(N, 1, H, W)``, outputs ``probabilities`` ``(N, C, H, W)`` and ``embedding`` ``(N, D)`` (the
bottleneck's global max pooling ``z`` of the same pass, which the domain check compares with the
run's profiles: one network call per slice, not two), batch, height and width dynamic (height
and width must stay multiples of the model's ``size_multiple``). Modules other than a
:class:`~pedseg.models.segmenter.DomainSegmenter` are exported with ``probabilities`` only. ``metadata_props`` carry the domain
descriptor and everything a predictor needs (:data:`METADATA_KEYS`).

Every export is verified before it is put in place: ``onnx.checker`` (full check), then onnxruntime
(CPU) against the *unfolded* PyTorch model at three image sizes and batch sizes 1 and 3 (the
embedding relative to its largest magnitude, within the same tolerance; :mod:`pedseg.export.verify`). The file is
written to a temporary name and only moved into place when the check passes, so a failed export
leaves nothing behind.

``fp16``: the folded model is exported in half precision (``module.half()``, input and output
float16; no extra converter needed) and verified against the float32 PyTorch model within
:data:`FP16_TOLERANCE` (onnxruntime runs float16 graphs on CPU).

Integrity: the last metadata entry, ``content_sha256``, is the SHA-256 of the serialised model
without that entry. :func:`load_onnx_model` recomputes it and refuses a file whose bytes changed (a
flipped byte in a weight would otherwise predict silently with damaged weights). Exports written
before pedseg sealed them load with a warning.

Models that refer to external data files are refused on load (an external ``location`` could point
anywhere on disk); pedseg's exports are always single files.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pedseg import __version__
from pedseg.errors import ConfigError, IntegrityError, ModelError, OutputExistsError
from pedseg.io.atomic import atomic_path

if TYPE_CHECKING:
    import onnx
    import torch

    from pedseg.models.segmenter import DomainSegmenter
    from pedseg.runfolder.loading import DomainModel, LoadedRun

__all__ = [
    "EMBEDDING_NAME",
    "FP16_TOLERANCE",
    "FP32_TOLERANCE",
    "INPUT_NAME",
    "METADATA_KEYS",
    "OUTPUT_NAME",
    "ExportReport",
    "check_sizes",
    "export_domain",
    "export_metadata",
    "export_run",
    "load_onnx_model",
    "read_onnx_metadata",
]

logger = logging.getLogger(__name__)
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
EMBEDDING_NAME = "embedding"
DIGEST_KEY = "content_sha256"
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 2e-2
MAX_BYTES = 2**31 - 1
METADATA_KEYS: tuple[str, ...] = (
    "pedseg_version",
    "domain",
    "descriptor",
    "descriptor_hash",
    "labels",
    "normalization",
    "image_size",
    "slice_axis",
    "model_sha256",
    "scheme",
    "arch",
    "precision",
    "postprocess",
    "components",
    "label_chain",
)
BATCH_SIZES = (1, 3)
_DEFAULT_MULTIPLE = 16


@dataclass(frozen=True)
class ExportReport:
    """One verified export."""

    domain: str
    path: Path
    max_abs_diff: float
    """Largest ``|onnxruntime - PyTorch|`` over every checked size."""
    sizes_checked: tuple[tuple[int, int, int], ...]
    """``(batch, height, width)`` of every input checked."""
    seconds: float
    embedding_diff: float | None = None
    """Largest ``|onnxruntime - PyTorch|`` of the ``embedding`` output over its largest magnitude
    (``None``: exported without one)."""


def check_sizes(image_size: tuple[int, int], multiple: int) -> list[tuple[int, int]]:
    """``image_size`` and about 0.5x and 1.5x of it, rounded to multiples of ``multiple``."""

    def scaled(value: int, factor: float) -> int:
        return max(multiple, round(value * factor / multiple) * multiple)

    height, width = image_size
    sizes = [(height, width)]
    for factor in (0.5, 1.5, 2.0, 3.0):
        size = (scaled(height, factor), scaled(width, factor))
        if size not in sizes and len(sizes) < 3:
            sizes.append(size)
    return sizes


def export_metadata(domain_model: DomainModel, *, precision: str) -> dict[str, str]:
    """The ``metadata_props`` of a domain's export (keys: :data:`METADATA_KEYS`)."""
    spec = domain_model.spec
    return {
        "pedseg_version": __version__,
        "domain": spec.name,
        "descriptor": json.dumps(spec.to_dict(include_data=False), sort_keys=True),
        "descriptor_hash": spec.content_hash(),
        "labels": json.dumps({str(i): name for i, name in spec.labels}),
        "normalization": spec.normalization,
        "image_size": json.dumps(list(domain_model.image_size)),
        "slice_axis": str(spec.slice_axis),
        "model_sha256": domain_model.model_sha256,
        "scheme": domain_model.scheme,
        "arch": domain_model.arch,
        "precision": precision,
        "postprocess": json.dumps(spec.postprocess.to_dict(), sort_keys=True),
        "components": json.dumps(
            {label: list(rule) for label, rule in domain_model.components.items()},
            sort_keys=True,
        ),
        "label_chain": json.dumps(
            None if domain_model.label_chain is None else domain_model.label_chain.to_dict(),
            sort_keys=True,
        ),
    }


def export_domain(
    domain_model: DomainModel,
    path: Path,
    *,
    fp16: bool = False,
    opset: int = 17,
    overwrite: bool = False,
) -> ExportReport:
    """Export, verify and write one domain's graph to ``path`` (see the module docstring)."""
    import onnx
    import torch

    from pedseg.export.fold import fold_segmenter
    from pedseg.export.verify import verify_export
    from pedseg.models.segmenter import DomainSegmenter

    started = time.perf_counter()
    path = Path(path)
    if not overwrite and path.exists():
        raise OutputExistsError(path)
    reference = domain_model.module.eval()
    multiple = int(getattr(reference, "size_multiple", _DEFAULT_MULTIPLE))
    if isinstance(reference, DomainSegmenter):
        exported: torch.nn.Module = fold_segmenter(reference)
    else:
        exported = copy.deepcopy(reference).eval()
    dtype = torch.float16 if fp16 else torch.float32
    exported = exported.to(dtype)
    outputs: tuple[str, ...] = (OUTPUT_NAME,)
    if isinstance(exported, DomainSegmenter):
        exported, outputs = segment_and_embed(exported), (OUTPUT_NAME, EMBEDDING_NAME)
    # Height and width are dynamic: trace at the smallest valid size (half precision is slow on
    # CPU); the verification below runs the graph at the model's own size and two others.
    example = torch.zeros(1, 1, multiple, multiple, dtype=dtype)
    model = _to_onnx(exported, example, opset=opset, outputs=outputs)
    onnx.helper.set_model_props(
        model, export_metadata(domain_model, precision="fp16" if fp16 else "fp32")
    )
    model.producer_name = "pedseg"
    model.producer_version = __version__
    if model.ByteSize() > MAX_BYTES:
        raise ModelError(
            f"the {domain_model.spec.name} graph is larger than 2 GB and cannot be one ONNX file; "
            "export a smaller model (--base-width) or use --fp16"
        )
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelError(f"the exported {domain_model.spec.name} graph is invalid: {exc}") from exc
    payload = _seal(model)
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(payload)
        diff, embedding_diff, checked = verify_export(
            tmp,
            reference,
            sizes=check_sizes(domain_model.image_size, multiple),
            fp16=fp16,
            domain=domain_model.spec.name,
        )
    return ExportReport(
        domain=domain_model.spec.name,
        path=path,
        max_abs_diff=diff,
        sizes_checked=checked,
        seconds=time.perf_counter() - started,
        embedding_diff=embedding_diff,
    )


def export_run(
    run: LoadedRun,
    *,
    domains: Sequence[str] | None = None,
    out_dir: Path | None = None,
    fp16: bool = False,
    overwrite: bool = False,
) -> list[ExportReport]:
    """Export every domain of ``run`` (or ``domains``) to ``out_dir`` (default ``RUN/onnx``).

    Nothing is written when any destination exists and ``overwrite`` is false.
    """
    planned = planned_exports(
        run, domains, lambda name: run.layout.onnx(name, folder=out_dir), overwrite=overwrite
    )
    return [
        export_domain(model, target, fp16=fp16, overwrite=overwrite) for model, target in planned
    ]


def planned_exports(
    run: LoadedRun,
    domains: Sequence[str] | None,
    target_of: Callable[[str], Path],
    *,
    overwrite: bool,
) -> list[tuple[DomainModel, Path]]:
    """Each exported domain's model and destination (every domain of ``run`` when ``domains`` is
    empty), checked before anything is written: no domain twice, no existing destination unless
    ``overwrite``."""
    names = list(domains if domains else run.domains)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"domain {repeated[0]!r} is given twice; name each domain once")
    planned = [(run.domain(name), target_of(name)) for name in names]
    if not overwrite:
        for _, target in planned:
            if target.exists():
                raise OutputExistsError(target)
    return planned


def load_onnx_model(path: Path) -> tuple[onnx.ModelProto, dict[str, str]]:
    """Read a single-file ONNX model and its ``metadata_props``; refuse external data."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such ONNX file; export one with `pedseg export-onnx`")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable ONNX model ({exc}); export it again") from exc
    external = [t.name for t in _all_tensors(model) if _is_external(t)]
    if external:
        raise ModelError(
            f"{path}: tensor {external[0]!r} (and {len(external) - 1} more) lives in an external "
            "data file, which pedseg refuses (it could read any file on disk); use a single-file "
            "model, e.g. re-export it with `pedseg export-onnx`"
        )
    meta = {prop.key: prop.value for prop in model.metadata_props}
    _check_seal(model, path)
    return model, meta


def _seal(model: onnx.ModelProto) -> bytes:
    """The serialised model with its content digest appended as the last metadata entry."""
    import hashlib

    digest = hashlib.sha256(model.SerializeToString()).hexdigest()
    entry = model.metadata_props.add()
    entry.key, entry.value = DIGEST_KEY, digest
    return model.SerializeToString()


def _check_seal(model: onnx.ModelProto, path: Path) -> None:
    """Verify (and strip) the content digest :func:`_seal` appended; refuse a mismatch."""
    import hashlib

    props = model.metadata_props
    if not props or props[-1].key != DIGEST_KEY:
        if any(prop.key == "pedseg_version" for prop in props):
            logger.warning("%s: exported before pedseg sealed its exports; not checked", path)
        return
    expected = props[-1].value
    del props[-1]
    actual = hashlib.sha256(model.SerializeToString()).hexdigest()
    if actual != expected:
        raise IntegrityError(
            f"{path}: content SHA-256 {actual[:12]}… does not match the one sealed in it at "
            f"export ({expected[:12]}…); the file was modified or damaged: export it again"
        )


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX file ``path`` (refused like :func:`load_onnx_model`)."""
    return load_onnx_model(path)[1]


# ---------------------------------------------------------------------- helpers
def segment_and_embed(segmenter: DomainSegmenter) -> torch.nn.Module:
    """``x -> (probabilities, embedding)`` of a :class:`DomainSegmenter`, as a module to trace."""
    from torch import nn

    class SegmentAndEmbed(nn.Module):
        def __init__(self, inner: DomainSegmenter) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.inner.segment_and_embed(x)

    return SegmentAndEmbed(segmenter).eval()


def _to_onnx(
    module: torch.nn.Module,
    example: torch.Tensor,
    *,
    opset: int,
    outputs: Sequence[str] = (OUTPUT_NAME,),
) -> onnx.ModelProto:
    import onnx
    import torch

    axes = {0: "batch", 2: "height", 3: "width"}
    dynamic: dict[str, dict[int, str]] = {INPUT_NAME: axes, OUTPUT_NAME: axes}
    if EMBEDDING_NAME in outputs:
        dynamic[EMBEDDING_NAME] = {0: "batch"}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporter is deprecated in favour of dynamo; it is exact here.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            module,
            (example,),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter takes file objects
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=list(outputs),
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )
    return onnx.load_model_from_string(buffer.getvalue())


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor of the model: initializers and attribute tensors, subgraphs and functions too."""
    graphs = [model.graph]
    nodes = [node for function in model.functions for node in function.node]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield sparse.values
                yield sparse.indices
            nodes.extend(graph.node)
            continue
        for attribute in nodes.pop().attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                graphs.append(attribute.g)
            graphs.extend(attribute.graphs)


def _is_external(tensor: onnx.TensorProto) -> bool:
    import onnx

    return tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data) > 0
