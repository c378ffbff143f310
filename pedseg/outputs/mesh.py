"""Surface meshes of a label map: one closed, outward-oriented surface per label, in scanner mm.

Pipeline per label (see docs/outputs.md):

1. Crop the label's mask to its bounding box and pad it by one background voxel (surfaces close at
   the image border).
2. The scalar field for marching cubes, negative inside. Isotropic-ish grids (largest / smallest
   spacing <= 1.5): ``0.5 - mask``. Anisotropic grids (the 5.2 mm pelvis slices): shape-based
   interpolation: each slice across the thickest axis gets its in-plane signed distance (mm,
   ``scipy.ndimage.distance_transform_edt`` with the in-plane spacing), clipped to +-half the slice
   spacing; marching cubes' linear interpolation between slices then places the wall between two
   slice contours on a slope instead of a 5.2 mm vertical step (a staircase).
3. ``skimage.measure.marching_cubes`` at level 0 on the voxel grid; vertices map to scanner
   coordinates (RAS+ mm) with the volume's affine (faces are flipped when it mirrors, so normals
   always point outwards).
4. Taubin smoothing (``trimesh.smoothing.filter_taubin``, lambda 0.5, mu 0.53, pass band ~0.1,
   ``smoothing`` passes in mm space): removes the voxel steps without shrinking the surface.
5. Optional quadric decimation (``fast_simplification`` through trimesh); a decimated mesh that is
   no longer watertight is discarded for the full one (logged).

Files are written in LPS (DICOM / ITK / 3D Slicer's file convention since Slicer 4.11) and say so:
``SPACE=LPS`` in the binary STL header, a PLY ``comment`` and the OBJ header comment, which is
exactly what Slicer looks for when it loads a model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import trimesh
from scipy import ndimage
from skimage import measure
from trimesh.exchange import obj as obj_io
from trimesh.exchange import ply as ply_io
from trimesh.exchange import stl as stl_io

from pedseg import __version__
from pedseg.errors import ConfigError

__all__ = ["ANISOTROPY", "LabelMesh", "encode_mesh", "label_meshes", "surface"]

logger = logging.getLogger(__name__)

ANISOTROPY = 1.5  # largest / smallest spacing above which shape-based interpolation is used
TAUBIN_LAMBDA = 0.5
TAUBIN_MU = 0.53  # 1/lambda - 1/mu = 0.11: Taubin's pass band
_LPS = np.array([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class LabelMesh:
    """One label's surface in scanner RAS+ mm (``mesh`` has no faces when the label is absent)."""

    label_id: int
    name: str
    mesh: trimesh.Trimesh

    @property
    def empty(self) -> bool:
        return len(self.mesh.faces) == 0

    @property
    def watertight(self) -> bool:
        return not self.empty and bool(self.mesh.is_watertight)


def _inplane_distance(crop: np.ndarray, spacing: Sequence[float], axis: int) -> np.ndarray:
    """Per slice across ``axis``: signed in-plane distance in mm (negative inside), clipped."""
    clip = float(spacing[axis]) / 2.0
    sampling = [float(s) for i, s in enumerate(spacing) if i != axis]
    stack = np.moveaxis(crop, axis, 0)
    field = np.full(stack.shape, clip, dtype=np.float32)
    for k in range(stack.shape[0]):
        plane = stack[k]
        if plane.any():
            outside = ndimage.distance_transform_edt(~plane, sampling=sampling)
            inside = ndimage.distance_transform_edt(plane, sampling=sampling)
            field[k] = np.clip(outside - inside, -clip, clip)
    return np.moveaxis(field, 0, axis)


def _field(crop: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    if max(spacing) / min(spacing) > ANISOTROPY:
        return _inplane_distance(crop, spacing, int(np.argmax(spacing)))
    return np.float32(0.5) - crop.astype(np.float32)


def _decimated(mesh: trimesh.Trimesh, keep: float) -> trimesh.Trimesh:
    if keep >= 1.0 or len(mesh.faces) < 64:
        return mesh
    simple = mesh.simplify_quadric_decimation(percent=1.0 - keep)
    if simple.is_watertight and simple.is_winding_consistent and simple.volume > 0:
        return simple
    logger.warning("decimation broke the surface (not watertight); kept the full mesh")
    return mesh


def surface(
    mask: np.ndarray, affine: np.ndarray, *, smoothing: int = 20, decimate: float = 1.0
) -> trimesh.Trimesh:
    """The closed surface of boolean ``mask`` (voxel grid of ``affine``) in the affine's world mm."""
    aff = np.asarray(affine, dtype=np.float64)
    if mask.ndim != 3 or aff.shape != (4, 4):
        raise ConfigError(
            f"surface needs a 3D mask and a 4x4 affine, got {mask.shape}, {aff.shape}"
        )
    found = np.argwhere(mask)
    if found.size == 0:
        return trimesh.Trimesh()
    low, high = found.min(axis=0), found.max(axis=0) + 1
    crop = np.pad(mask[tuple(slice(a, b) for a, b in zip(low, high, strict=True))], 1)
    spacing = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    verts, faces, _, _ = measure.marching_cubes(_field(crop, spacing), level=0.0)
    world = (verts + (low - 1)) @ aff[:3, :3].T + aff[:3, 3]
    if np.linalg.det(aff[:3, :3]) < 0:
        faces = faces[:, ::-1]
    mesh = trimesh.Trimesh(world, faces, process=True)
    if smoothing > 0:
        operator = trimesh.smoothing.laplacian_calculation(mesh, equal_weight=True)
        trimesh.smoothing.filter_taubin(
            mesh,
            lamb=TAUBIN_LAMBDA,
            nu=TAUBIN_MU,
            iterations=smoothing,
            laplacian_operator=operator,
        )
    mesh = _decimated(mesh, decimate)
    if mesh.volume < 0:  # never expected: the face order above follows the affine's handedness
        mesh.invert()
    return mesh


def label_meshes(
    labels: np.ndarray,
    affine: np.ndarray,
    spec_labels: Sequence[tuple[int, str]],
    *,
    smoothing: int = 20,
    decimate: float = 1.0,
) -> list[LabelMesh]:
    """One :class:`LabelMesh` per ``(id, name)`` of ``spec_labels`` (absent labels: empty)."""
    out = []
    for label_id, name in spec_labels:
        mesh = surface(labels == label_id, affine, smoothing=smoothing, decimate=decimate)
        if len(mesh.faces) and not mesh.is_watertight:
            logger.warning("mesh of label %s is not watertight", name)
        out.append(LabelMesh(label_id=label_id, name=name, mesh=mesh))
    return out


def _header(name: str, domain: str) -> str:
    return f"pedseg {__version__} {domain} {name} SPACE=LPS"


def encode_mesh(mesh: trimesh.Trimesh, fmt: str, *, name: str, domain: str) -> bytes:
    """``mesh`` (RAS+ mm) as the bytes of a binary STL, binary PLY or OBJ file in LPS mm, with the
    coordinate system stated where 3D Slicer reads it (``SPACE=LPS``)."""
    lps = trimesh.Trimesh(np.asarray(mesh.vertices) * _LPS, np.asarray(mesh.faces), process=False)
    header = _header(name, domain)
    if fmt == "stl":
        data = stl_io.export_stl(lps)
        text = header.encode("ascii", "replace")[:80]
        return text.ljust(80, b"\0") + data[80:]
    if fmt == "ply":
        data = ply_io.export_ply(lps, encoding="binary")
        cut = data.index(b"\n", data.index(b"format")) + 1
        return data[:cut] + f"comment {header}\n".encode("ascii", "replace") + data[cut:]
    if fmt == "obj":
        if len(lps.faces) == 0:
            return f"# {header}\n".encode("ascii", "replace")
        text = obj_io.export_obj(
            lps, include_normals=False, include_color=False, include_texture=False, header=header
        )
        return str(text).encode("ascii", "replace")
    raise ConfigError(f"--mesh-format: unknown format {fmt!r}; choose from stl, ply, obj")
