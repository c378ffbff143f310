"""One case's clinical outputs from one label map: the entry point ``predict`` and ``export-seg`` use.

All formats are fed the same label map (canonical RAS+, on the input volume's grid, exactly what
:func:`pedseg.io.write_like` takes) and the input :class:`~pedseg.io.volume.Volume` (its geometry, its
image for the intensity statistics, its DICOM series). The meshes are computed once and shared by the
mesh files, the statistics and the 3D preview. Every file is written to a temporary name and all are
moved into place together at the end: a failing case leaves nothing behind, and existing files are
refused (before any work) unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.colors import to_rgb

from pedseg.domains.output_names import LABEL_COLORS
from pedseg.domains.outputs_spec import LabelCode
from pedseg.domains.spec import DomainSpec
from pedseg.errors import OutputExistsError, VolumeError
from pedseg.io.atomic import atomic_path, write_bytes_atomic
from pedseg.io.geometry import from_canonical
from pedseg.io.labels import format_values
from pedseg.io.volume import Volume
from pedseg.io.writers import write_like
from pedseg.outputs.dicomseg import write_dicom_seg
from pedseg.outputs.mesh import LabelMesh, encode_mesh, label_meshes
from pedseg.outputs.options import OutputFormats
from pedseg.outputs.plan import CasePlan, mesh_key, plan_case_outputs
from pedseg.outputs.preview3d import write_preview_3d
from pedseg.outputs.segnrrd import write_seg_nrrd
from pedseg.outputs.stats import Row, label_statistics, write_statistics_csv

__all__ = ["WrittenOutputs", "label_colors", "refuse_existing", "write_case_outputs"]

Segment = tuple[int, str, tuple[float, float, float], LabelCode | None]


@dataclass(frozen=True)
class WrittenOutputs:
    """What :func:`write_case_outputs` wrote: files by kind (``nifti``, ``seg-nrrd``,
    ``dicom-seg``, ``mesh:<label>``, ``stats``, ``preview-3d``), seconds per step, statistics rows."""

    files: dict[str, Path]
    timings: dict[str, float] = field(default_factory=dict)
    statistics: tuple[Row, ...] = ()


def label_colors(spec: DomainSpec) -> list[tuple[float, float, float]]:
    """RGB (0-1) per label, in label order: the colours of pedseg's slice preview."""
    return [to_rgb(LABEL_COLORS[k % len(LABEL_COLORS)]) for k in range(len(spec.labels))]


def _segments(spec: DomainSpec) -> list[Segment]:
    codes = spec.outputs
    return [
        (label_id, name, rgb, codes.code_for(name) if codes is not None else None)
        for (label_id, name), rgb in zip(spec.labels, label_colors(spec), strict=True)
    ]


def refuse_existing(plan: CasePlan) -> None:
    """Raise :class:`OutputExistsError` when any planned file exists already."""
    existing = plan.existing()
    if existing:
        more = f" (and {len(existing) - 1} more output files)" if len(existing) > 1 else ""
        raise OutputExistsError(existing[0], f"pass --overwrite to replace it{more}")


def _check_labels(labels: np.ndarray, volume: Volume, spec: DomainSpec, where: str) -> np.ndarray:
    array = np.asarray(labels)
    if array.shape != volume.shape:
        raise VolumeError(
            where,
            f"label map shape {array.shape} does not match the input's canonical shape "
            f"{volume.shape}; pass the labels on the input's grid",
        )
    if array.dtype.kind not in "biu":
        raise VolumeError(where, f"label map must hold integers, got {array.dtype}")
    extra = sorted(set(np.unique(array).tolist()) - {0, *spec.label_ids})
    if extra:
        raise VolumeError(
            where,
            f"label map holds values {format_values(extra)} that domain {spec.name!r} does not "
            f"define (labels {format_values(spec.label_ids)})",
        )
    return array


def write_case_outputs(
    labels: np.ndarray,
    volume: Volume,
    spec: DomainSpec,
    *,
    formats: OutputFormats,
    stem: Path,
    overwrite: bool = False,
    model_sha256: str | None = None,
    case: str | None = None,
    nifti_suffix: str = ".nii.gz",
    stack: contextlib.ExitStack | None = None,
) -> WrittenOutputs:
    """Write every format of ``formats`` for one case; see :func:`plan_case_outputs` for the files.

    ``labels``: the label map in canonical orientation on ``volume``'s grid (``volume.array``'s
    shape; what ``write_like`` takes). ``volume``: the input image (geometry, intensities for the
    statistics, and for ``dicom-seg`` its DICOM series folder ``volume.path``). ``model_sha256``:
    the model's hash for the DICOM-SEG's algorithm identification (None: MANUAL). ``case``: the
    name in the statistics rows (default ``stem.name``). ``stack``: the caller's exit stack, when
    these files are part of a larger all-or-nothing write (they are then moved into place when
    that stack closes, with the caller's own files).
    """
    plan = plan_case_outputs(
        stem,
        formats,
        spec,
        dicom_input=volume.source.format == "dicom",
        nifti_suffix=nifti_suffix,
    )
    if not overwrite:
        refuse_existing(plan)
    name = case if case is not None else stem.name
    array = _check_labels(labels, volume, spec, name)
    timings: dict[str, float] = {}
    meshes: list[LabelMesh] = []
    if formats.needs_meshes:
        start = time.perf_counter()
        meshes = label_meshes(
            array,
            volume.affine,
            spec.labels,
            smoothing=formats.mesh.smoothing,
            decimate=formats.mesh.decimate,
        )
        timings["meshes"] = time.perf_counter() - start
    rows: tuple[Row, ...] = ()
    stats_s = 0.0
    if "stats" in formats:
        start = time.perf_counter()
        rows = tuple(label_statistics(array, volume.array, volume.affine, meshes, case=name))
        stats_s = time.perf_counter() - start
    writers = _writers(array, volume, spec, formats, plan, meshes, rows, model_sha256, name)
    with contextlib.ExitStack() as own:
        target = stack if stack is not None else own
        for kind, write in writers.items():
            start = time.perf_counter()
            tmp = target.enter_context(atomic_path(plan.files[kind], overwrite=overwrite))
            write(tmp)
            timings[kind] = time.perf_counter() - start
    if "stats" in timings:
        timings["stats"] += stats_s  # computing the rows (after the meshes) and writing them
    return WrittenOutputs(files=dict(plan.files), timings=timings, statistics=rows)


def _writers(
    labels: np.ndarray,
    volume: Volume,
    spec: DomainSpec,
    formats: OutputFormats,
    plan: CasePlan,
    meshes: list[LabelMesh],
    rows: tuple[Row, ...],
    model_sha256: str | None,
    case: str,
) -> dict[str, Callable[[Path], None]]:
    """One function per planned file, writing it to the temporary path it is given."""
    segments = _segments(spec)
    out: dict[str, Callable[[Path], None]] = {}
    if "nifti" in plan.files:
        out["nifti"] = lambda tmp: write_like(labels, volume, tmp, overwrite=True)
    if "seg-nrrd" in plan.files:
        on_disk = from_canonical(labels, volume.source.ornt)
        out["seg-nrrd"] = lambda tmp: write_seg_nrrd(
            tmp, on_disk, volume.source.affine, segments, overwrite=True
        )
    if "dicom-seg" in plan.files:
        folder = volume.path if volume.path is not None else Path(case)
        out["dicom-seg"] = lambda tmp: write_dicom_seg(
            tmp,
            labels,
            volume,
            folder=folder,
            domain=spec.name,
            segments=segments,
            model_sha256=model_sha256,
            overwrite=True,
        )
    for item in meshes if "mesh" in formats else []:
        out[mesh_key(item.name)] = _mesh_writer(item, formats.mesh.format, spec.name)
    if "stats" in plan.files:
        out["stats"] = lambda tmp: write_statistics_csv(tmp, rows, overwrite=True)
    if "preview-3d" in plan.files:
        colors = label_colors(spec)
        out["preview-3d"] = lambda tmp: write_preview_3d(
            tmp, meshes, colors, title=f"{spec.name}: {case}", overwrite=True
        )
    return out


def _mesh_writer(item: LabelMesh, fmt: str, domain: str) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        data = encode_mesh(item.mesh, fmt, name=item.name, domain=domain)
        write_bytes_atomic(tmp, data, overwrite=True)

    return write
