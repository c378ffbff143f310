"""Per-label morphometry of a case (``<case>_statistics.csv``) and the folder's ``statistics.csv``.

One row per label of the domain (absent labels: 0 voxels, empty geometry). Coordinates are scanner
RAS+ millimetres (what 3D Slicer shows, and NIfTI's world); the ``space`` column says so.

* ``volume_ml``: voxel count x voxel volume; ``mesh_volume_ml``: enclosed by the surface mesh.
* ``surface_mm2``: area of the (smoothed) surface mesh; ``watertight``: whether it is closed.
* ``centroid_*``: mean of the label's voxel centres; ``bbox_*``: axis-aligned box of the mesh.
* ``axis_{major,middle,minor}_mm``: full axis lengths of the ellipsoid with the label's second
  moments (voxels as boxes: the covariance of the voxel centres plus a voxel's own, A diag(1/12) A^T;
  for a solid ellipsoid of semi-axis a the variance along it is a^2/5, so the length is
  2 sqrt(5 lambda)).
* ``intensity_mean``/``intensity_std``: of the input image inside the label.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from pedseg.errors import VolumeError
from pedseg.io.atomic import write_text_atomic
from pedseg.outputs.mesh import LabelMesh
from pedseg.outputs.plan import STATISTICS_SUFFIX

__all__ = [
    "COLUMNS",
    "FOLDER_STATISTICS",
    "label_statistics",
    "merge_statistics_csv",
    "statistics_files",
    "write_statistics_csv",
]

FOLDER_STATISTICS = "statistics.csv"
_XYZ = ("x", "y", "z")
COLUMNS = (
    "case",
    "label_id",
    "label",
    "voxels",
    "volume_ml",
    "mesh_volume_ml",
    "surface_mm2",
    "watertight",
    *(f"centroid_{a}_ras_mm" for a in _XYZ),
    *(f"bbox_min_{a}_ras_mm" for a in _XYZ),
    *(f"bbox_max_{a}_ras_mm" for a in _XYZ),
    "axis_major_mm",
    "axis_middle_mm",
    "axis_minor_mm",
    "intensity_mean",
    "intensity_std",
    "space",
)
Row = dict[str, object]


def _moments(index: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid (world mm) and principal axis lengths (mm, descending) of voxels ``index``."""
    a3 = affine[:3, :3]
    mean = index.mean(axis=0)
    centred = index - mean
    cov_index = centred.T @ centred / len(index) + np.eye(3) / 12.0
    eigen = np.clip(np.linalg.eigvalsh(a3 @ cov_index @ a3.T), 0.0, None)
    return a3 @ mean + affine[:3, 3], np.sort(2.0 * np.sqrt(5.0 * eigen))[::-1]


def _row(
    case: str, item: LabelMesh, mask: np.ndarray, image: np.ndarray, affine: np.ndarray
) -> Row:
    voxel_mm3 = abs(float(np.linalg.det(affine[:3, :3])))
    index = np.argwhere(mask).astype(np.float64)
    row: Row = dict.fromkeys(COLUMNS, None)
    row.update(case=case, label_id=item.label_id, label=item.name, space="RAS")
    row.update(voxels=len(index), volume_ml=len(index) * voxel_mm3 / 1000.0)
    if len(index) == 0:
        return row
    centroid, axes = _moments(index, affine)
    values = image[mask].astype(np.float64)
    row.update(intensity_mean=float(values.mean()), intensity_std=float(values.std()))
    row.update({f"centroid_{a}_ras_mm": float(v) for a, v in zip(_XYZ, centroid, strict=True)})
    row.update(
        axis_major_mm=float(axes[0]), axis_middle_mm=float(axes[1]), axis_minor_mm=float(axes[2])
    )
    if not item.empty:
        mesh = item.mesh
        low, high = np.asarray(mesh.bounds)
        row.update({f"bbox_min_{a}_ras_mm": float(v) for a, v in zip(_XYZ, low, strict=True)})
        row.update({f"bbox_max_{a}_ras_mm": float(v) for a, v in zip(_XYZ, high, strict=True)})
        row.update(
            mesh_volume_ml=float(mesh.volume) / 1000.0,
            surface_mm2=float(mesh.area),
            watertight=item.watertight,
        )
    return row


def label_statistics(
    labels: np.ndarray,
    image: np.ndarray,
    affine: np.ndarray,
    meshes: Sequence[LabelMesh],
    *,
    case: str,
) -> list[Row]:
    """One row (:data:`COLUMNS`) per mesh's label; ``labels``/``image`` share ``affine``'s grid."""
    if image.shape[:3] != labels.shape[:3]:
        raise VolumeError(
            case, f"image shape {image.shape} does not match the label map's {labels.shape}"
        )
    aff = np.asarray(affine, dtype=np.float64)
    return [_row(case, item, labels == item.label_id, image, aff) for item in meshes]


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.7g}"
    return str(value)


def _csv_text(rows: Iterable[Row]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in COLUMNS])
    return buffer.getvalue()


def write_statistics_csv(
    path: str | os.PathLike[str], rows: Iterable[Row], *, overwrite: bool = False
) -> None:
    """Write ``rows`` as CSV with the :data:`COLUMNS` header, atomically."""
    write_text_atomic(path, _csv_text(rows), overwrite=overwrite)


def statistics_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The per-case ``*_statistics.csv`` files directly in ``folder``, sorted by name."""
    root = Path(folder)
    return sorted(
        p for p in root.glob(f"*{STATISTICS_SUFFIX}") if p.is_file() and not p.name.startswith(".")
    )


def merge_statistics_csv(
    folder: str | os.PathLike[str],
    *,
    sources: Sequence[Path] | None = None,
    out: Path | None = None,
    overwrite: bool = False,
) -> Path:
    """Concatenate per-case statistics (``sources``, default :func:`statistics_files`) into
    ``out`` (default ``folder/statistics.csv``): one row per case and label. Returns ``out``."""
    target = out if out is not None else Path(folder) / FOLDER_STATISTICS
    files = list(sources) if sources is not None else statistics_files(folder)
    lines = [",".join(COLUMNS) + "\n"]
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise VolumeError(path, f"cannot be read ({error})") from None
        header, _, body = text.partition("\n")
        if tuple(header.split(",")) != COLUMNS:
            raise VolumeError(
                path, "is not a pedseg statistics file (unexpected header); re-create it"
            )
        lines.append(body if not body or body.endswith("\n") else body + "\n")
    write_text_atomic(target, "".join(lines), overwrite=overwrite)
    return target
