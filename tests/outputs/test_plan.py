"""Planned paths: every file known before work; dicom-seg refused for non-DICOM inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from pedseg.domains.spec import parse_descriptor
from pedseg.errors import ConfigError
from pedseg.outputs import parse_outputs, plan_case_outputs
from tests.outputs.conftest import phantom_spec


def test_every_format_has_its_files(tmp_path: Path) -> None:
    formats = parse_outputs("nifti,seg-nrrd,dicom-seg,mesh-obj,stats,preview-3d")
    plan = plan_case_outputs(tmp_path / "c1", formats, phantom_spec(), dicom_input=True)
    names = {kind: path.name for kind, path in plan.files.items()}
    assert names == {
        "nifti": "c1.nii.gz",
        "seg-nrrd": "c1.seg.nrrd",
        "dicom-seg": "c1_seg.dcm",
        "mesh:femur": "c1_femur.obj",
        "mesh:tibia": "c1_tibia.obj",
        "mesh:patella": "c1_patella.obj",
        "stats": "c1_statistics.csv",
        "preview-3d": "c1_preview3d.png",
    }
    assert plan.existing() == []
    (tmp_path / "c1_tibia.obj").write_text("x")
    assert plan.existing() == [tmp_path / "c1_tibia.obj"]


def test_dicom_seg_needs_a_dicom_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dicom-seg needs a DICOM series folder"):
        plan_case_outputs(
            tmp_path / "c1", parse_outputs("dicom-seg"), phantom_spec(), dicom_input=False
        )


def test_label_names_become_safe_distinct_file_names(tmp_path: Path) -> None:
    raw = {
        "schema_version": 1,
        "name": "odd",
        "labels": {1: "left femur", 2: "left_femur", 3: "tibia"},
        "normalization": "zscore",
    }
    spec = parse_descriptor(raw, source="<test>")
    plan = plan_case_outputs(tmp_path / "c", parse_outputs("mesh"), spec, dicom_input=False)
    assert sorted(p.name for p in plan.paths()) == [
        "c_1_left_femur.stl",
        "c_2_left_femur.stl",
        "c_3_tibia.stl",
    ]
    single = plan_case_outputs(
        tmp_path / "seg", parse_outputs("nifti"), spec, dicom_input=False, nifti_suffix=".mha"
    )
    assert single.paths() == [tmp_path / "seg.mha"]
