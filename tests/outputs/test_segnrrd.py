"""3D Slicer .seg.nrrd: read back with pynrrd, the voxels and the segment metadata match."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pytest

from pedseg.errors import OutputExistsError
from pedseg.io import read_label, read_volume
from pedseg.outputs.segnrrd import write_seg_nrrd
from tests.outputs.conftest import affine_for, nifti_pair, phantom_labels

SEGMENTS = [
    (1, "femur", (1.0, 0.0, 0.0), None),
    (2, "tibia", (0.0, 0.5, 1.0), None),
    (3, "patella", (0.2, 0.2, 0.2), None),
]


@pytest.mark.parametrize("geometry", ["identity", "oblique", "flipped"])
def test_seg_nrrd_round_trip(tmp_path: Path, geometry: str) -> None:
    on_disk = phantom_labels()
    on_disk[on_disk == 3] = 0  # patella absent: an empty segment
    affine = affine_for(geometry, (1.0, 1.2, 0.8))
    path = tmp_path / "case.seg.nrrd"
    write_seg_nrrd(path, on_disk, affine, SEGMENTS)
    data, header = nrrd.read(str(path))
    np.testing.assert_array_equal(data, on_disk)
    assert data.dtype == np.uint8 and header["space"] == "left-posterior-superior"
    lps = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(header["space directions"], (lps @ affine[:3, :3]).T, atol=1e-9)
    np.testing.assert_allclose(header["space origin"], lps @ affine[:3, 3], atol=1e-9)
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    for k, (label_id, name, rgb, _) in enumerate(SEGMENTS):
        assert header[f"Segment{k}_ID"] == f"Segment_{label_id}"
        assert header[f"Segment{k}_Name"] == name
        assert header[f"Segment{k}_LabelValue"] == str(label_id)
        assert header[f"Segment{k}_Layer"] == "0"
        np.testing.assert_allclose([float(c) for c in header[f"Segment{k}_Color"].split()], rgb)
        assert "SCT^85756007^Tissue" in header[f"Segment{k}_Tags"]
    found = np.argwhere(on_disk == 1)
    expected = " ".join(f"{a} {b}" for a, b in zip(found.min(0), found.max(0), strict=True))
    assert header["Segment0_Extent"] == expected
    assert header["Segment2_Extent"] == "0 -1 0 -1 0 -1"
    # the file is written with ':=' custom fields, as Slicer writes them
    raw = path.read_bytes().split(b"\n\n", 1)[0]
    assert b"Segment0_Name:=femur" in raw


def test_seg_nrrd_geometry_matches_the_input_in_another_reader(tmp_path: Path) -> None:
    """SimpleITK (through pedseg's reader) sees the same world grid as the NIfTI input."""
    on_disk = phantom_labels()
    affine = affine_for("permuted", (1.0, 1.2, 0.8))
    _, label_path = nifti_pair(tmp_path, on_disk, affine)
    path = tmp_path / "case.seg.nrrd"
    write_seg_nrrd(path, on_disk, nib.load(label_path).affine, SEGMENTS)
    back, reference = read_volume(path), read_label(label_path)
    np.testing.assert_allclose(back.affine, reference.affine, atol=1e-5)
    np.testing.assert_array_equal(back.array, reference.array)


def test_seg_nrrd_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "case.seg.nrrd"
    path.write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        write_seg_nrrd(path, phantom_labels(), np.eye(4), SEGMENTS)
    assert path.read_bytes() == b"keep"
