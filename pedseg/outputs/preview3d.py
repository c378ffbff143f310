"""A PNG rendering of the label meshes: anterior and left lateral views, label colours, headless.

matplotlib (Agg, no display) draws every label's surface in one ``Poly3DCollection`` (one depth sort
over all labels), each face shaded by the angle between its normal and the view direction. Meshes are
first decimated to at most :data:`PREVIEW_FACES` faces per label; this only affects the picture.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import trimesh

from pedseg.io.atomic import atomic_path
from pedseg.outputs.mesh import LabelMesh

__all__ = ["PREVIEW_FACES", "VIEWS", "write_preview_3d"]

PREVIEW_FACES = 6000
# (title, matplotlib azimuth, unit vector from the scene towards the camera, RAS)
VIEWS = (("anterior", 90.0, (0.0, 1.0, 0.0)), ("left", 180.0, (-1.0, 0.0, 0.0)))


def _coarse(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    if len(mesh.faces) <= PREVIEW_FACES:
        return mesh
    return mesh.simplify_quadric_decimation(face_count=PREVIEW_FACES)


def write_preview_3d(
    path: str | os.PathLike[str],
    meshes: Sequence[LabelMesh],
    colors: Sequence[tuple[float, float, float]],
    *,
    title: str,
    overwrite: bool = False,
) -> None:
    """Render ``meshes`` (RAS mm; ``colors`` in the same order) into a two-view PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    shown = [(m, c) for m, c in zip(meshes, colors, strict=True) if not m.empty]
    coarse = [(_coarse(m.mesh), c) for m, c in shown]
    figure = Figure(figsize=(8.0, 4.6), dpi=100)
    for index, (name, azimuth, toward) in enumerate(VIEWS):
        ax = figure.add_subplot(1, len(VIEWS), index + 1, projection="3d")
        if coarse:
            triangles = np.concatenate([np.asarray(m.triangles) for m, _ in coarse])
            normals = np.concatenate([np.asarray(m.face_normals) for m, _ in coarse])
            base = np.concatenate(
                [np.tile(np.asarray(c, dtype=np.float64), (len(m.faces), 1)) for m, c in coarse]
            )
            shade = 0.3 + 0.7 * np.clip(normals @ np.asarray(toward), 0.0, 1.0)
            faces = Poly3DCollection(triangles, facecolors=base * shade[:, None], edgecolors="none")
            ax.add_collection3d(faces)
            low, high = triangles.reshape(-1, 3).min(axis=0), triangles.reshape(-1, 3).max(axis=0)
            centre, half = (low + high) / 2.0, float((high - low).max()) / 2.0 or 1.0
            ax.set_xlim(centre[0] - half, centre[0] + half)
            ax.set_ylim(centre[1] - half, centre[1] + half)
            ax.set_zlim(centre[2] - half, centre[2] + half)
        ax.set_box_aspect((1.0, 1.0, 1.0))
        ax.view_init(elev=0.0, azim=azimuth)
        ax.set_proj_type("ortho")
        ax.set_axis_off()
        ax.set_title(name, fontsize=9)
    handles = [Patch(color=c, label=m.name) for m, c in shown]
    if handles:
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.subplots_adjust(left=0.0, right=1.0, bottom=0.1, top=0.9, wspace=0.0)
    with atomic_path(path, overwrite=overwrite) as tmp:
        figure.savefig(tmp, format="png")
