"""Dataset integrity findings: one fixture per problem, plus the real datasets when present."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pedseg.data.check import CheckReport, check_dataset, worst
from pedseg.domains.registry import DomainRegistry
from pedseg.domains.spec import DataSpec, DomainSpec

SHAPE = (8, 7, 4)
SPACING = (1.0, 1.0, 2.5)
REAL_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _spec(root: Path) -> DomainSpec:
    return DomainSpec(
        name="toy",
        labels=((1, "a"), (2, "b")),
        normalization="zscore",
        data=DataSpec(root=root),
    )


def _save(path: Path, array: np.ndarray, spacing: tuple[float, ...] = SPACING) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*spacing[:3], 1.0])), path)


def _good_label() -> np.ndarray:
    label = np.zeros(SHAPE, np.uint8)
    label[1:3, 1:3, 1:3] = 1
    label[4:6, 4:6, 1:3] = 2
    return label


def _case(
    root: Path,
    case_id: str,
    *,
    image: np.ndarray | None = None,
    label: np.ndarray | None = None,
    label_spacing: tuple[float, ...] = SPACING,
) -> None:
    rng = np.random.default_rng(0)
    img = image if image is not None else rng.normal(size=SHAPE).astype(np.float32)
    _save(root / "imagesTr" / f"{case_id}.nii.gz", img)
    lab = label if label is not None else _good_label()
    _save(root / "labelsTr" / f"{case_id}.nii.gz", lab, label_spacing)


def _only(report: CheckReport, case_id: str) -> tuple[str, str]:
    (finding,) = [c for c in report.cases if c.case_id == case_id]
    return finding.status, " | ".join(finding.messages)


def test_clean_dataset(tmp_path: Path) -> None:
    _case(tmp_path, "a")
    _case(tmp_path, "b")
    report = check_dataset(_spec(tmp_path))
    assert report.ok and report.num_cases == 2 and report.count("ok") == 2
    finding = report.cases[0]
    assert finding.shape == SHAPE and finding.spacing == pytest.approx(SPACING)
    assert finding.slice_axis == 2 and finding.num_slices == 4
    assert finding.messages == ()
    assert report.slice_axes == (2,)
    assert report.total_slices == 8
    assert report.spacing_range is not None
    assert report.spacing_range[0] == pytest.approx(SPACING)
    assert report.messages == ()


def test_mismatched_geometry(tmp_path: Path) -> None:
    _case(tmp_path, "a")
    _case(tmp_path, "bad", label_spacing=(1.0, 1.0, 3.0))
    report = check_dataset(_spec(tmp_path))
    assert not report.ok
    status, text = _only(report, "bad")
    assert status == "error" and "spacing" in text
    assert text.startswith("labelsTr/bad.nii.gz: ")  # path shortened below the data root
    assert _only(report, "a")[0] == "ok"


def test_mismatched_shape(tmp_path: Path) -> None:
    _case(tmp_path, "bad", label=np.zeros((8, 7, 5), np.uint8))
    status, text = _only(check_dataset(_spec(tmp_path)), "bad")
    assert status == "error" and "shape" in text


def test_undeclared_label_value(tmp_path: Path) -> None:
    label = _good_label()
    label[0, 0, 0] = 7
    _case(tmp_path, "bad", label=label)
    status, text = _only(check_dataset(_spec(tmp_path)), "bad")
    assert status == "error" and "label values {7} are not declared" in text


def test_nan_in_image(tmp_path: Path) -> None:
    image = np.ones(SHAPE, np.float32)
    image[2, 2, 2] = np.nan
    _case(tmp_path, "bad", image=image)
    report = check_dataset(_spec(tmp_path))
    status, text = _only(report, "bad")
    assert status == "error" and "nan" in text.lower()
    assert report.cases[0].shape is None  # unreadable image: no geometry to report


def test_4d_image(tmp_path: Path) -> None:
    _case(tmp_path, "bad", image=np.ones((*SHAPE, 2), np.float32))
    status, text = _only(check_dataset(_spec(tmp_path)), "bad")
    assert status == "error" and "4D" in text


def test_empty_label_is_a_warning(tmp_path: Path) -> None:
    _case(tmp_path, "empty", label=np.zeros(SHAPE, np.uint8))
    report = check_dataset(_spec(tmp_path))
    assert report.ok
    assert _only(report, "empty") == ("warning", "label map is empty (no foreground)")


def test_absent_label_is_a_warning(tmp_path: Path) -> None:
    label = _good_label()
    label[label == 2] = 0
    _case(tmp_path, "sparse", label=label)
    report = check_dataset(_spec(tmp_path))
    assert report.ok
    assert _only(report, "sparse") == ("warning", "label 2 (b) absent")


def test_unpaired_image_and_label(tmp_path: Path) -> None:
    _case(tmp_path, "a")
    _save(tmp_path / "imagesTr/lonely.nii.gz", np.ones(SHAPE, np.float32))
    _save(tmp_path / "labelsTr/orphan.nii.gz", _good_label())
    report = check_dataset(_spec(tmp_path))
    assert not report.ok
    status, text = _only(report, "lonely")
    assert status == "error" and "has no label" in text
    status, text = _only(report, "orphan")
    assert status == "error" and "has no image" in text
    assert [c.case_id for c in report.cases] == ["a", "lonely", "orphan"]


def test_unreadable_file(tmp_path: Path) -> None:
    _case(tmp_path, "a")
    (tmp_path / "imagesTr/junk.nii.gz").write_text("not an image")
    _save(tmp_path / "labelsTr/junk.nii.gz", _good_label())
    report = check_dataset(_spec(tmp_path))
    status, text = _only(report, "junk")
    assert status == "error" and text.startswith("imagesTr/junk.nii.gz: ")


def test_auto_axis_disagreement_is_remarked(tmp_path: Path) -> None:
    _case(tmp_path, "a")
    _save(tmp_path / "imagesTr/b.nii.gz", np.ones(SHAPE, np.float32), (2.5, 1.0, 1.0))
    _save(tmp_path / "labelsTr/b.nii.gz", _good_label(), (2.5, 1.0, 1.0))
    report = check_dataset(_spec(tmp_path))
    assert report.ok
    assert report.slice_axes == (0, 2)
    assert len(report.messages) == 1 and "different axes" in report.messages[0]


def test_worst() -> None:
    assert worst([]) == "ok"
    assert worst(["ok", "warning"]) == "warning"
    assert worst(["warning", "error", "ok"]) == "error"


@pytest.mark.realdata
@pytest.mark.parametrize(("name", "n_cases", "axis"), [("pelvis", 10, 1), ("spine", 24, 2)])
def test_real_datasets_pass(tmp_path: Path, name: str, n_cases: int, axis: int) -> None:
    folder = REAL_DATA / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    spec = DomainRegistry(home=tmp_path).get(name).with_data_root(folder)
    report = check_dataset(spec)
    problems = [(c.case_id, c.messages) for c in report.cases if c.status != "ok"]
    assert report.ok, problems
    assert report.num_cases == n_cases
    assert report.slice_axes == (axis,)


def test_phantom_dataset_passes(tmp_path: Path) -> None:
    from pedseg.data.synth import PhantomConfig, synth_dataset

    config = PhantomConfig(shape=(32, 32, 16))
    synth_dataset(tmp_path / "synth", domains=("ankle",), cases=2, config=config)
    folder = tmp_path / "synth" / "ankle"  # the documented layout: out/<domain>/imagesTr ...
    spec = DomainRegistry(home=tmp_path / "home").get("ankle").with_data_root(folder)
    report = check_dataset(spec)
    assert report.ok and report.num_cases == 2 and report.slice_axes == (2,)
