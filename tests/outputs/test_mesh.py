"""Surface meshes: closed, outward, in scanner coordinates on every kind of grid, smooth without
shrinking, files in LPS with the header 3D Slicer reads."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import trimesh
from scipy import ndimage

from pedseg.io import read_label, read_volume
from pedseg.outputs.mesh import LabelMesh, encode_mesh, label_meshes, surface
from tests.outputs.conftest import GEOMETRIES, affine_for, nifti_pair, phantom_labels


def near_boundary(points_ras: np.ndarray, on_disk: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """For each world point: does its nearest voxel of the ON-DISK grid lie within one voxel of
    the label's boundary (a label voxel touching background, or the reverse, 26-connected)?"""
    index = (np.linalg.inv(affine) @ np.c_[points_ras, np.ones(len(points_ras))].T)[:3].T
    nearest = np.clip(np.rint(index).astype(int), 0, np.asarray(on_disk.shape) - 1)
    cube = np.ones((3, 3, 3), bool)
    band = ndimage.binary_dilation(on_disk, cube) & ~ndimage.binary_erosion(on_disk, cube)
    return band[tuple(nearest.T)]


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_meshes_lie_on_the_label_boundary_in_scanner_space(tmp_path: Path, geometry: str) -> None:
    spacing = (0.9, 0.9, 3.0) if geometry == "anisotropic" else (1.0, 1.2, 0.8)
    shape = (40, 36, 14) if geometry == "anisotropic" else (28, 24, 20)
    on_disk = phantom_labels(shape, spacing)
    affine = affine_for(geometry, spacing)
    _, label_path = nifti_pair(tmp_path, on_disk, affine)
    labels = read_label(label_path)  # canonical RAS+: permuted / flipped back by pedseg
    meshes = label_meshes(labels.array, labels.affine, [(1, "a"), (2, "b"), (3, "c")])
    voxel_mm3 = abs(np.linalg.det(affine[:3, :3]))
    for item in meshes:
        mesh = item.mesh
        assert item.watertight and mesh.is_winding_consistent, item.name
        assert mesh.volume > 0  # outward normals
        voxels = int((on_disk == item.label_id).sum())
        assert mesh.volume == pytest.approx(voxels * voxel_mm3, rel=0.08), item.name
        points = mesh.sample(2000, seed=1)
        inside = near_boundary(points, on_disk == item.label_id, affine)
        assert inside.mean() == 1.0, f"{item.name}: {np.mean(~inside):.1%} points off the boundary"


def test_points_map_back_fail_for_a_wrong_affine(tmp_path: Path) -> None:
    """The boundary check can fail: a mesh from a shifted affine is off the on-disk boundary."""
    on_disk = phantom_labels()
    affine = affine_for("oblique", (1.0, 1.2, 0.8))
    shifted = affine.copy()
    shifted[:3, 3] += 4.0
    mesh = surface(on_disk == 1, shifted)
    assert near_boundary(mesh.sample(500, seed=1), on_disk == 1, affine).mean() < 0.9


def _sphere(radius: float = 12.0, size: int = 36) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(size)] * 3, indexing="ij"), axis=-1)
    return np.linalg.norm(grid - (size - 1) / 2 + 0.3, axis=-1) < radius


def test_taubin_smoothing_keeps_a_spheres_volume() -> None:
    mask = _sphere()
    raw = surface(mask, np.eye(4), smoothing=0)
    for passes in (20, 100):
        smooth = surface(mask, np.eye(4), smoothing=passes)
        assert abs(smooth.volume / raw.volume - 1) <= 0.02
        # smoother: the spread of the vertex radii drops
        assert np.std(np.linalg.norm(smooth.vertices - smooth.centroid, axis=1)) < np.std(
            np.linalg.norm(raw.vertices - raw.centroid, axis=1)
        )
    assert surface(mask, np.eye(4)).volume == pytest.approx(4 / 3 * np.pi * 12.0**3, rel=0.02)


def test_anisotropic_slices_give_no_staircase_worse_than_the_data() -> None:
    """An ellipsoid sampled on 0.9 x 0.9 x 5.2 mm voxels: the surface stays well within the voxel
    model's own error (half a slice, 2.6 mm) and closer than plain marching cubes on the mask."""
    spacing = np.array([0.9, 0.9, 5.2])
    shape = (100, 90, 18)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1) * spacing
    centre, semi = np.array([45.3, 40.1, 46.0]), np.array([30.0, 25.0, 35.0])
    mask = np.sum(((grid - centre) / semi) ** 2, axis=-1) < 1
    affine = np.diag([*spacing, 1.0])

    def errors(mesh: trimesh.Trimesh) -> tuple[float, float]:
        points = mesh.sample(20000, seed=0)
        q = (points - centre) / semi
        radial = centre + q / np.linalg.norm(q, axis=1, keepdims=True) * semi
        distance = np.linalg.norm(points - radial, axis=1)
        return float(np.sqrt(np.mean(distance**2))), float(distance.max())

    rms, worst = errors(surface(mask, affine))
    naive = trimesh.Trimesh(*_binary_marching_cubes(mask, affine))
    naive_rms, _ = errors(naive)
    assert worst < 0.45 * spacing[2]
    assert rms < 0.8 * naive_rms
    assert rms < 0.15 * spacing[2]


def _binary_marching_cubes(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from skimage import measure

    verts, faces, _, _ = measure.marching_cubes(np.pad(mask, 1).astype(np.float32), 0.5)
    return (verts - 1) @ affine[:3, :3].T + affine[:3, 3], faces


def test_decimation_keeps_a_closed_surface() -> None:
    full = surface(_sphere(), np.eye(4))
    half = surface(_sphere(), np.eye(4), decimate=0.3)
    assert len(half.faces) < 0.5 * len(full.faces)
    assert half.is_watertight and half.is_winding_consistent
    assert half.volume == pytest.approx(full.volume, rel=0.01)


def test_absent_label_gives_an_empty_mesh() -> None:
    [item] = label_meshes(np.zeros((5, 5, 5), np.uint8), np.eye(4), [(1, "a")])
    assert item.empty and not item.watertight


@pytest.mark.parametrize("fmt", ["stl", "ply", "obj"])
def test_mesh_files_are_lps_and_say_so(fmt: str) -> None:
    mesh = surface(_sphere(6.0, 16), np.diag([1.0, 1.0, 2.0, 1.0]) @ _shift(10.0, -20.0, 30.0))
    data = encode_mesh(mesh, fmt, name="femur", domain="knee")
    if fmt == "stl":
        assert data[:80].rstrip(b"\0").endswith(b"SPACE=LPS") and not data.startswith(b"solid")
    elif fmt == "ply":
        assert b"\ncomment pedseg" in data[:200] and b"SPACE=LPS" in data[:200]
    else:
        assert data.splitlines()[0].startswith(b"# pedseg") and b"SPACE=LPS" in data.splitlines()[0]
    back = trimesh.load(io.BytesIO(data), file_type=fmt, process=False, force="mesh")
    assert len(back.faces) == len(mesh.faces)
    np.testing.assert_allclose(back.bounds[:, 2], mesh.bounds[:, 2], atol=1e-3)
    np.testing.assert_allclose(back.bounds[:, :2], -mesh.bounds[::-1, :2], atol=1e-3)  # R,A -> L,P
    assert back.volume == pytest.approx(mesh.volume, rel=1e-4)  # still outward in LPS


def _shift(*offset: float) -> np.ndarray:
    out = np.eye(4)
    out[:3, 3] = offset
    return out


@pytest.mark.parametrize("fmt", ["stl", "ply", "obj"])
def test_empty_mesh_files_are_valid(fmt: str) -> None:
    data = encode_mesh(trimesh.Trimesh(), fmt, name="femur", domain="knee")
    assert b"SPACE=LPS" in data[:100]
    if fmt == "stl":
        assert len(data) == 84 and data[80:] == b"\0\0\0\0"


@pytest.mark.realdata
@pytest.mark.parametrize("case", ["pelvis_01", "pelvis_09"])
def test_real_pelvis_meshes(shared_data: Path, case: str) -> None:
    """Real 0.91 x 0.91 x 5.2 mm oblique scans: volume within 3 % of the voxel volume, closed,
    outward, and on the boundary of the on-disk labels."""
    import nibabel as nib

    path = shared_data / "pelvis" / "labelsTr" / f"{case}.nii.gz"
    labels = read_label(path)
    image = nib.load(path)
    on_disk = np.asarray(image.dataobj).astype(np.uint8)
    voxel_mm3 = abs(np.linalg.det(image.affine[:3, :3]))
    meshes: list[LabelMesh] = label_meshes(
        labels.array, labels.affine, [(1, "femur"), (2, "ilium"), (3, "spine"), (4, "sacrum")]
    )
    for item in meshes:
        voxels = int((on_disk == item.label_id).sum())
        assert item.watertight and item.mesh.is_winding_consistent and item.mesh.volume > 0
        assert abs(item.mesh.volume / (voxels * voxel_mm3) - 1) <= 0.03, item.name
        points = item.mesh.sample(3000, seed=2)
        assert near_boundary(points, on_disk == item.label_id, image.affine).mean() == 1.0
    assert read_volume(shared_data / "pelvis" / "imagesTr" / f"{case}.nii.gz").shape == labels.shape
