"""``pedseg export-seg``: a thin command over pedseg.outputs.export; one-line errors."""

from __future__ import annotations

from pathlib import Path

import nrrd
import numpy as np

from tests.cli.conftest import Runner, one_line_error
from tests.outputs.conftest import affine_for, nifti_pair, phantom_labels, write_mr_series


def test_exports_with_a_domain(pedseg: Runner, tmp_path: Path) -> None:
    image, labels = nifti_pair(tmp_path / "in", phantom_labels() % 3, affine_for("oblique"))
    out = tmp_path / "out"
    out.mkdir()
    result = pedseg(
        "export-seg",
        str(labels),
        "--like",
        str(image),
        "--format",
        "seg-nrrd,mesh-obj,stats",
        "--domain",
        "ankle",
        "--out",
        str(out),
    )
    assert result.code == 0, result.err
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["labels.seg.nrrd", "labels_statistics.csv"]
        + [f"labels_{name}.obj" for name in ("calcaneus", "talus", "tibia")]
    )
    _, header = nrrd.read(str(out / "labels.seg.nrrd"))
    assert header["Segment0_Name"] == "calcaneus"
    assert "wrote 5 file(s)" in result.out
    again = pedseg(
        "export-seg",
        str(labels),
        "--like",
        str(image),
        "-f",
        "stats",
        "-d",
        "ankle",
        "-o",
        str(out),
    )
    assert "labels_statistics.csv: already exists; pass --overwrite" in one_line_error(again)


def test_dicom_seg_without_domain(pedseg: Runner, tmp_path: Path) -> None:
    on_disk = phantom_labels((16, 12, 8))
    write_mr_series(tmp_path / "series", on_disk.astype(np.int16) * 10, np.eye(4))
    from pedseg.io import read_volume, write_like

    volume = read_volume(tmp_path / "series")
    write_like((volume.array // 10).astype(np.uint8), volume, tmp_path / "seg.nii.gz")
    result = pedseg(
        "export-seg",
        str(tmp_path / "seg.nii.gz"),
        "--like",
        str(tmp_path / "series"),
        "-f",
        "dicom-seg",
    )
    assert result.code == 0, result.err
    assert (tmp_path / "seg_seg.dcm").is_file()


def test_bad_values_are_one_line_errors(pedseg: Runner, tmp_path: Path) -> None:
    image, labels = nifti_pair(tmp_path, phantom_labels(), np.eye(4))
    base = ("export-seg", str(labels), "--like", str(image))
    line = one_line_error(pedseg(*base, "--format", "nifti,mesh-xyz"))
    assert "--format: unknown format 'mesh-xyz'; did you mean" in line
    line = one_line_error(pedseg(*base, "--format", "mesh", "--mesh-format", "vtk"))
    assert "--mesh-format: unknown format 'vtk'" in line
    line = one_line_error(pedseg(*base, "--format", "mesh", "--mesh-decimate", "2"))
    assert "--mesh-decimate" in line
    line = one_line_error(pedseg(*base, "--format", "dicom-seg"))
    assert "dicom-seg needs a DICOM series folder" in line
    line = one_line_error(pedseg(*base, "--format", "nifti"))
    assert "would replace or sit inside an input" in line
    line = one_line_error(pedseg(*base, "--format", "stats", "--domain", "shoulder"))
    assert "3" in line and str(labels) in line  # label 3 is not a shoulder label
    other, _ = nifti_pair(tmp_path / "other", phantom_labels((10, 10, 10)), np.eye(4))
    line = one_line_error(pedseg("export-seg", str(labels), "--like", str(other), "-f", "stats"))
    assert "does not match" in line
