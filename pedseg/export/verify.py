"""The parity check of an ONNX export against the PyTorch model it came from.

:func:`verify_export` runs the exported graph with onnxruntime (CPU) and the *unfolded* PyTorch
model on random inputs at the given image sizes and :data:`~pedseg.export.onnx.BATCH_SIZES`: the
``probabilities`` within the tolerance, and the ``embedding`` output (when the graph has one)
relative to its largest magnitude within the same tolerance. A larger difference is a
:class:`~pedseg.errors.ModelError` (the export is not written).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pedseg.errors import ModelError
from pedseg.export import onnx as export_onnx
from pedseg.export.onnx import BATCH_SIZES, EMBEDDING_NAME, INPUT_NAME, OUTPUT_NAME

if TYPE_CHECKING:
    import torch

__all__ = ["verify_export"]


def verify_export(
    path: Path,
    reference: torch.nn.Module,
    *,
    sizes: Sequence[tuple[int, int]],
    fp16: bool,
    domain: str,
) -> tuple[float, float | None, tuple[tuple[int, int, int], ...]]:
    """Largest ``|onnxruntime - PyTorch|`` over ``sizes`` x :data:`BATCH_SIZES` (probabilities, and
    the embedding relative to its largest magnitude when the graph has one); raise if too big."""
    import onnxruntime as ort
    import torch

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        path.read_bytes(), sess_options=options, providers=["CPUExecutionProvider"]
    )
    # read at call time: the tolerances are pedseg.export.onnx's (tests lower them there)
    tolerance = export_onnx.FP16_TOLERANCE if fp16 else export_onnx.FP32_TOLERANCE
    embeds = EMBEDDING_NAME in [o.name for o in session.get_outputs()]
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    worst_embedding: float | None = 0.0 if embeds else None
    checked: list[tuple[int, int, int]] = []
    for height, width in sizes:
        # One PyTorch pass per size: the smaller batches are the first samples of the largest.
        x = torch.randn(max(BATCH_SIZES), 1, height, width, generator=generator)
        with torch.inference_mode():
            if embeds:
                segmenter: Any = reference  # a DomainSegmenter (its graph has the embedding)
                probabilities, embedding = segmenter.segment_and_embed(x)
                reference_out, reference_z = probabilities.numpy(), embedding.numpy()
            else:
                reference_out = reference(x).numpy()
        for batch in BATCH_SIZES:
            expected = reference_out[:batch]
            feed = x[:batch].numpy().astype(np.float16 if fp16 else np.float32)
            names = [OUTPUT_NAME, EMBEDDING_NAME] if embeds else [OUTPUT_NAME]
            actual, *z = session.run(names, {INPUT_NAME: feed})
            if actual.shape != expected.shape:
                raise ModelError(
                    f"exported {domain} graph gives shape {actual.shape} for input "
                    f"{feed.shape}, PyTorch {expected.shape}; the export is broken"
                )
            diff = float(np.max(np.abs(actual.astype(np.float64) - expected)))
            if not diff <= tolerance:  # also catches NaN
                raise ModelError(
                    f"exported {domain} graph differs from PyTorch by {diff:.3g} (> {tolerance:g}) "
                    f"at input {batch}x1x{height}x{width}; nothing was written; report this bug"
                )
            worst = max(worst, diff)
            if z:
                worst_embedding = max(
                    worst_embedding or 0.0,
                    _embedding_diff(z[0], reference_z[:batch], tolerance, domain, feed.shape),
                )
            checked.append((batch, height, width))
    return worst, worst_embedding, tuple(checked)


def _embedding_diff(
    actual: np.ndarray,
    expected: np.ndarray,
    tolerance: float,
    domain: str,
    shape: tuple[int, ...],
) -> float:
    """``max |actual - expected| / max(1, max |expected|)``; raise when beyond ``tolerance``."""
    if actual.shape != expected.shape:
        raise ModelError(
            f"exported {domain} graph gives an embedding of shape {actual.shape} for input "
            f"{shape}, PyTorch {expected.shape}; the export is broken"
        )
    scale = max(1.0, float(np.max(np.abs(expected))))
    diff = float(np.max(np.abs(actual.astype(np.float64) - expected))) / scale
    if not diff <= tolerance:  # also catches NaN
        raise ModelError(
            f"exported {domain} graph's embedding differs from PyTorch by {diff:.3g} (relative, "
            f"> {tolerance:g}) at input {'x'.join(map(str, shape))}; nothing was written; "
            "report this bug"
        )
    return diff
