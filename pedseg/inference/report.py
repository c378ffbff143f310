"""Per-case outputs besides the label map: the JSON report and the preview PNG.

The JSON report (``<case>.json``) holds the per-label volumes in mL (voxel count times the voxel
volume from the spacing, / 1000), the domain, the model hash, the backend and device actually used and
the time of each step (read, preprocess, inference, postprocess, write) in seconds.

The output folder's manifest is :mod:`pedseg.inference.manifest`'s.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pedseg import __version__
from pedseg.domains.output_names import LABEL_COLORS
from pedseg.domains.spec import DomainSpec
from pedseg.io.atomic import atomic_path, write_text_atomic

__all__ = [
    "case_report",
    "label_volumes",
    "preview_slices",
    "write_preview",
    "write_report",
]

logger = logging.getLogger(__name__)

REPORT_FORMAT = 1


def label_volumes(
    labels: np.ndarray, spec: DomainSpec, spacing: Sequence[float]
) -> dict[str, dict[str, Any]]:
    """``{label name: {"id", "voxels", "ml"}}`` for every label of ``spec`` (absent ones: 0)."""
    voxel_mm3 = math.prod(float(s) for s in spacing)
    out: dict[str, dict[str, Any]] = {}
    for label_id, name in spec.labels:  # one byte-wide comparison each, no int64 copy
        voxels = int(np.count_nonzero(labels == label_id))
        out[name] = {"id": label_id, "voxels": voxels, "ml": voxels * voxel_mm3 / 1000.0}
    return out


def case_report(
    *,
    case: str,
    source: Path,
    spec: DomainSpec,
    labels: np.ndarray,
    spacing: Sequence[float],
    shape: Sequence[int],
    slice_axis: int,
    model_sha256: str,
    scheme: str,
    backend: str,
    device: str,
    postprocessed: bool,
    timings: Mapping[str, float],
    outputs: Mapping[str, str],
) -> dict[str, Any]:
    """The JSON-ready report of one case (``outputs``: kind -> file name)."""
    voxel_mm3 = math.prod(float(s) for s in spacing)
    return {
        "format": REPORT_FORMAT,
        "pedseg_version": __version__,
        "case": case,
        "input": str(source),
        "domain": spec.name,
        "descriptor_hash": spec.content_hash(),
        "model_sha256": model_sha256,
        "scheme": scheme,
        "backend": backend,
        "device": device,
        "postprocess": spec.postprocess.to_dict() if postprocessed else None,
        "shape": [int(v) for v in shape],
        "spacing_mm": [float(v) for v in spacing],
        "voxel_volume_mm3": voxel_mm3,
        "slice_axis": int(slice_axis),
        "labels": label_volumes(labels, spec, spacing),
        "timings_s": {key: round(float(value), 4) for key, value in timings.items()},
        "outputs": dict(outputs),
    }


def write_report(path: Path, report: Mapping[str, Any], *, overwrite: bool = False) -> None:
    """Write ``report`` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(report, indent=2) + "\n", overwrite=overwrite)


def preview_slices(labels: np.ndarray, *, axis: int, count: int = 4) -> list[int]:
    """``count`` slice indices along ``axis``, evenly spread over the slices holding labels (over
    the whole volume when none does)."""
    other = tuple(a for a in range(3) if a != axis)
    present = np.flatnonzero(np.any(labels != 0, axis=other))
    candidates = present if present.size else np.arange(labels.shape[axis])
    if candidates.size <= count:
        return [int(i) for i in candidates]
    picks = np.linspace(0, candidates.size - 1, count + 2)[1:-1]
    return sorted({int(candidates[round(float(p))]) for p in picks})


def write_preview(
    path: Path,
    image: np.ndarray,
    labels: np.ndarray,
    *,
    axis: int,
    spec: DomainSpec,
    count: int = 4,
    title: str | None = None,
    overwrite: bool = False,
) -> None:
    """A PNG of a few slices (canonical ``image`` and ``labels``) with one coloured contour per label.

    Each panel shows the slice's first in-plane axis to the right and the second upwards (R/A for
    axial, R/S for coronal, A/S for sagittal slices).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    indices = preview_slices(labels, axis=axis, count=count)
    finite = np.asarray(image, dtype=np.float32)
    low, high = (float(v) for v in np.percentile(finite, [1.0, 99.0]))
    figure = Figure(figsize=(3.2 * max(1, len(indices)), 3.6), dpi=100)
    axes = figure.subplots(1, max(1, len(indices)), squeeze=False)[0]
    for ax, index in zip(axes, indices, strict=False):
        picture = np.take(finite, index, axis=axis).T
        mask_slice = np.take(labels, index, axis=axis).T
        ax.imshow(picture, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), origin="lower")
        for k, (label_id, _) in enumerate(spec.labels):
            mask = mask_slice == label_id
            if mask.any() and not mask.all():
                color = LABEL_COLORS[k % len(LABEL_COLORS)]
                ax.contour(mask.astype(np.float32), levels=[0.5], colors=[color], linewidths=1.0)
        ax.set_title(f"slice {index} (axis {axis})", fontsize=9)
        ax.set_axis_off()
    handles = [
        Line2D([0], [0], color=LABEL_COLORS[k % len(LABEL_COLORS)], label=name)
        for k, (_, name) in enumerate(spec.labels)
    ]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8)
    name = title if title is not None else path.name.removesuffix("_preview.png")
    figure.suptitle(f"{spec.name}: {name}", fontsize=10)
    figure.tight_layout(rect=(0, 0.08, 1, 0.95))
    with atomic_path(path, overwrite=overwrite) as tmp:
        figure.savefig(tmp, format="png")
