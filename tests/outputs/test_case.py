"""write_case_outputs: every format from one label map, all files or none, no silent overwrite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pedseg.outputs.case as case_module
from pedseg.errors import OutputExistsError, VolumeError
from pedseg.io import read_label, read_volume
from pedseg.outputs import parse_outputs, plan_case_outputs, write_case_outputs
from tests.outputs.conftest import affine_for, phantom_labels, phantom_spec, write_mr_series

ALL = "nifti,seg-nrrd,dicom-seg,mesh-ply,stats,preview-3d"


@pytest.fixture
def dicom_case(tmp_path: Path) -> tuple[np.ndarray, object]:
    on_disk = phantom_labels((24, 20, 10), (0.9, 0.9, 3.0))
    write_mr_series(
        tmp_path / "series",
        on_disk.astype(np.int16) * 100 + 7,
        affine_for("oblique", (0.9, 0.9, 3.0)),
    )
    volume = read_volume(tmp_path / "series")
    return ((volume.array - 7) // 100).astype(np.uint8), volume


def test_all_formats(tmp_path: Path, dicom_case: tuple[np.ndarray, object]) -> None:
    labels, volume = dicom_case
    spec = phantom_spec()
    formats = parse_outputs(ALL)
    stem = tmp_path / "out" / "c1"
    result = write_case_outputs(
        labels, volume, spec, formats=formats, stem=stem, model_sha256="ab" * 32
    )  # type: ignore[arg-type]
    plan = plan_case_outputs(stem, formats, spec, dicom_input=True)
    assert result.files == plan.files
    assert all(path.is_file() for path in plan.paths())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in plan.paths()
    )
    np.testing.assert_array_equal(read_label(plan.files["nifti"]).array, labels)
    assert {row["label"] for row in result.statistics} == {"femur", "tibia", "patella"}
    assert set(result.timings) >= {"meshes", "nifti", "stats", "preview-3d"}
    with Image.open(plan.files["preview-3d"]) as picture:
        assert picture.size == (800, 460)
        colours = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(colours, axis=0)) > 50  # shaded surfaces, not a blank canvas
    # existing outputs are refused before any work, replaced with overwrite
    with pytest.raises(OutputExistsError, match="and 7 more output files"):
        write_case_outputs(labels, volume, spec, formats=formats, stem=stem)  # type: ignore[arg-type]
    write_case_outputs(labels, volume, spec, formats=formats, stem=stem, overwrite=True)  # type: ignore[arg-type]


def test_a_failing_writer_leaves_nothing(
    tmp_path: Path, dicom_case: tuple[np.ndarray, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    labels, volume = dicom_case

    def broken(*args: object, **kwargs: object) -> None:
        raise VolumeError("preview", "disk full")

    monkeypatch.setattr(case_module, "write_preview_3d", broken)
    with pytest.raises(VolumeError, match="disk full"):
        write_case_outputs(
            labels, volume, phantom_spec(), formats=parse_outputs(ALL), stem=tmp_path / "o" / "c1"
        )  # type: ignore[arg-type]
    assert not (tmp_path / "o").exists()  # not even the folder made for the outputs


def test_bad_label_maps_are_refused(tmp_path: Path, dicom_case: tuple[np.ndarray, object]) -> None:
    labels, volume = dicom_case
    formats = parse_outputs("nifti")
    bad = labels.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(VolumeError, match=r"values \{7\} that domain 'knee' does not define"):
        write_case_outputs(bad, volume, phantom_spec(), formats=formats, stem=tmp_path / "c")  # type: ignore[arg-type]
    with pytest.raises(VolumeError, match="does not match the input's canonical shape"):
        write_case_outputs(
            labels[:-1], volume, phantom_spec(), formats=formats, stem=tmp_path / "c"
        )  # type: ignore[arg-type]
    with pytest.raises(VolumeError, match="must hold integers"):
        write_case_outputs(
            labels.astype(np.float32), volume, phantom_spec(), formats=formats, stem=tmp_path / "c"
        )  # type: ignore[arg-type]
    assert not list(tmp_path.glob("c*"))
