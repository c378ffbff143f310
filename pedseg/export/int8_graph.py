"""The fp32 graph an int8 export is quantised from (:mod:`pedseg.export.quantize`, step 2).

The domain's folded network with its transposed-convolution up-sampling rewritten
(:mod:`pedseg.export.upsample`), exported like the fp32 graph, with shared constants untied so that
each convolution's bias can be quantised for it, and checked against the fp32 export; plus the
nodes that stay float (:func:`float_nodes`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pedseg.errors import ModelError
from pedseg.export.onnx import FP32_TOLERANCE, INPUT_NAME, OUTPUT_NAME

if TYPE_CHECKING:
    import onnx
    from torch import nn

    from pedseg.runfolder.loading import DomainModel

__all__ = ["first_level_convs", "float_nodes", "float_tail", "int8_source", "untie_initializers"]


def int8_source(domain_model: DomainModel, path: Path, *, reference: bytes) -> Path:
    """The fp32 graph to quantise (module docstring, step 2), checked against ``reference``."""
    import copy

    import onnx
    import torch

    from pedseg.export.fold import fold_segmenter
    from pedseg.export.onnx import _to_onnx
    from pedseg.export.upsample import shuffle_upsampling
    from pedseg.models.segmenter import DomainSegmenter

    module: nn.Module = domain_model.module.eval()
    folded = (
        fold_segmenter(module) if isinstance(module, DomainSegmenter) else copy.deepcopy(module)
    )
    rewritten = shuffle_upsampling(folded).eval()
    multiple = int(getattr(module, "size_multiple", 16))
    model = _to_onnx(rewritten, torch.zeros(1, 1, multiple, multiple), opset=17)
    untie_initializers(model)
    onnx.save_model(model, str(path))
    _check_same(path.read_bytes(), reference, domain_model.image_size, domain_model.spec.name)
    return path


def untie_initializers(model: onnx.ModelProto) -> None:
    """Give every node its own copy of a constant it shares (``Identity`` of an initializer, or one
    initializer feeding several nodes), so each convolution's bias can be quantised for it."""
    import onnx

    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    kept: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers:
            copy_ = onnx.TensorProto()
            copy_.CopyFrom(initializers[node.input[0]])
            copy_.name = node.output[0]
            graph.initializer.append(copy_)
            initializers[copy_.name] = copy_
        else:
            kept.append(node)
    seen: set[str] = set()
    for node in kept:
        for position, name in enumerate(node.input):
            if name not in initializers:
                continue
            if name in seen:
                copy_ = onnx.TensorProto()
                copy_.CopyFrom(initializers[name])
                copy_.name = f"{name}__{node.name or len(graph.initializer)}"
                graph.initializer.append(copy_)
                node.input[position] = copy_.name
            seen.add(name)
    del graph.node[:]
    graph.node.extend(kept)


def _check_same(candidate: bytes, reference: bytes, size: tuple[int, int], domain: str) -> None:
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((2, 1, *size)).astype(np.float32)
    outputs = []
    for blob in (candidate, reference):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
        outputs.append(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])
    diff = float(np.max(np.abs(outputs[0] - outputs[1])))
    if not diff <= FP32_TOLERANCE:
        raise ModelError(
            f"the {domain} graph prepared for int8 differs from the fp32 export by {diff:.3g}; "
            "report this bug"
        )


def float_nodes(model: onnx.ModelProto, *, first_level: bool) -> list[str]:
    """The nodes an int8 export keeps float: :func:`float_tail`, and with ``first_level`` the
    convolutions of the first (full-resolution) encoder level too (:func:`first_level_convs`)."""
    return [*float_tail(model), *(first_level_convs(model) if first_level else [])]


def first_level_convs(model: onnx.ModelProto) -> list[str]:
    """The convolutions before the first ``MaxPool`` (nodes are in execution order): the encoder's
    full-resolution block, which reads the image. Measured on real data, they cost most of the
    accuracy lost in int8 for a few per cent of the network's operations
    (``benchmarks/results/int8.md``)."""
    names: list[str] = []
    for node in model.graph.node:
        if node.op_type == "MaxPool":
            return names
        if node.op_type == "Conv" and node.name:
            names.append(node.name)
    return []  # no pooling: not a UNet encoder, nothing is singled out


def float_tail(model: onnx.ModelProto) -> list[str]:
    """The softmax, everything after it, and the head convolution that feeds it: kept float."""
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    tail: list[onnx.NodeProto] = [n for n in model.graph.node if n.op_type == "Softmax"]
    for softmax in list(tail):
        head = producers.get(softmax.input[0])
        if head is not None and head.op_type == "Conv":
            tail.append(head)
    pending = [out for n in tail for out in n.output if n.op_type != "Conv"]
    while pending:
        for node in consumers.get(pending.pop(), []):
            if node not in tail:
                tail.append(node)
                pending.extend(node.output)
    return [node.name for node in tail if node.name]
