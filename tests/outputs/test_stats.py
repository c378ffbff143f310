"""Per-label statistics against analytic values, and the folder-level statistics.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from pedseg.errors import OutputExistsError, VolumeError
from pedseg.outputs.mesh import label_meshes
from pedseg.outputs.stats import (
    COLUMNS,
    label_statistics,
    merge_statistics_csv,
    statistics_files,
    write_statistics_csv,
)
from tests.outputs.conftest import affine_for


def _ellipsoid(shape: tuple[int, int, int], semi: tuple[float, float, float]) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    centre = (np.asarray(shape) - 1) / 2
    return np.sum(((grid - centre) / semi) ** 2, axis=-1) < 1


def test_statistics_of_known_shapes() -> None:
    labels = np.zeros((40, 30, 30), np.uint8)
    labels[_ellipsoid((40, 30, 30), (15.0, 9.0, 6.0))] = 1
    labels[2:6, 3:5, 4:9] = 2  # a 4 x 2 x 5 box far from the ellipsoid
    image = np.where(labels == 1, 100.0, 5.0) + (labels == 2) * np.arange(30)[None, None, :]
    affine = affine_for("oblique", (1.0, 1.0, 2.0))
    meshes = label_meshes(labels, affine, [(1, "ell"), (2, "box"), (3, "gone")])
    rows = label_statistics(labels, image, affine, meshes, case="c1")
    ell, box, gone = rows
    voxel = abs(np.linalg.det(affine[:3, :3]))
    assert ell["voxels"] == int((labels == 1).sum())
    assert ell["volume_ml"] == pytest.approx(ell["voxels"] * voxel / 1000)
    assert ell["mesh_volume_ml"] == pytest.approx(ell["volume_ml"], rel=0.03)
    # full axes of the ellipsoid in mm: 2 x semi-axis x spacing along each voxel axis
    lengths = sorted([30.0 * 1.0, 18.0 * 1.0, 12.0 * 2.0], reverse=True)
    got = [ell["axis_major_mm"], ell["axis_middle_mm"], ell["axis_minor_mm"]]
    np.testing.assert_allclose(got, lengths, rtol=0.05)
    centre = affine @ np.r_[(np.asarray(labels.shape) - 1) / 2, 1.0]
    np.testing.assert_allclose(
        [ell["centroid_x_ras_mm"], ell["centroid_y_ras_mm"], ell["centroid_z_ras_mm"]],
        centre[:3],
        atol=1e-6,
    )
    assert ell["intensity_mean"] == pytest.approx(100.0) and ell["intensity_std"] == pytest.approx(
        0
    )
    assert box["intensity_mean"] == pytest.approx(np.mean(5 + np.arange(4, 9)))
    assert box["intensity_std"] == pytest.approx(np.std(np.arange(4, 9)))
    # surface of the 4 x 2 x 5 mm box (spacing 1, 1, 2 -> 4 x 2 x 10 mm), smoothed corners
    assert box["surface_mm2"] == pytest.approx(2 * (4 * 2 + 4 * 10 + 2 * 10), rel=0.25)
    corners = np.array([[i, j, k, 1.0] for i in (1.5, 5.5) for j in (2.5, 4.5) for k in (3.5, 8.5)])
    world = (affine @ corners.T)[:3].T
    low = [box[f"bbox_min_{a}_ras_mm"] for a in "xyz"]
    high = [box[f"bbox_max_{a}_ras_mm"] for a in "xyz"]
    assert np.all(np.asarray(low) >= world.min(0) - 1e-6)
    assert np.all(np.asarray(high) <= world.max(0) + 1e-6)
    assert gone["voxels"] == 0 and gone["surface_mm2"] is None and gone["space"] == "RAS"


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(VolumeError, match="does not match"):
        label_statistics(
            np.zeros((3, 3, 3), np.uint8), np.zeros((3, 3, 4)), np.eye(4), [], case="c"
        )


def test_merge_makes_one_row_per_case_and_label(tmp_path: Path) -> None:
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:5, 2:5, 2:5] = 1
    meshes = label_meshes(labels, np.eye(4), [(1, "a"), (2, "b")])
    for case in ("c2", "c1"):
        rows = label_statistics(labels, labels.astype(float), np.eye(4), meshes, case=case)
        write_statistics_csv(tmp_path / f"{case}_statistics.csv", rows)
    with pytest.raises(OutputExistsError):
        write_statistics_csv(tmp_path / "c1_statistics.csv", rows)
    assert [p.name for p in statistics_files(tmp_path)] == [
        "c1_statistics.csv",
        "c2_statistics.csv",
    ]
    out = merge_statistics_csv(tmp_path)
    assert out == tmp_path / "statistics.csv"
    with out.open() as fh:
        table = list(csv.DictReader(fh))
    assert tuple(table[0]) == COLUMNS
    assert [(r["case"], r["label"]) for r in table] == [
        ("c1", "a"),
        ("c1", "b"),
        ("c2", "a"),
        ("c2", "b"),
    ]
    assert (
        table[0]["voxels"] == "27"
        and table[1]["surface_mm2"] == ""
        and table[0]["watertight"] == "true"
    )
    with pytest.raises(OutputExistsError):
        merge_statistics_csv(tmp_path)
    merge_statistics_csv(tmp_path, overwrite=True)
    (tmp_path / "bad_statistics.csv").write_text("a,b\n1,2\n")
    with pytest.raises(VolumeError, match="not a pedseg statistics file"):
        merge_statistics_csv(tmp_path, overwrite=True)
