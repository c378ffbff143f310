"""Dataset layout discovery: MSD / nnU-Net names, hidden and unpaired files, escaping symlinks."""

from __future__ import annotations

from pathlib import Path

import pytest

from pedseg.data.dataset import Case, list_cases, scan_layout, split_suffix
from pedseg.domains.spec import DataSpec, DomainSpec
from pedseg.errors import DatasetError


def _spec(root: Path | None) -> DomainSpec:
    data = DataSpec(root=root) if root is not None else None
    return DomainSpec(name="toy", labels=((1, "a"),), normalization="zscore", data=data)


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_msd_layout_pairs_and_sorts(tmp_path: Path) -> None:
    _touch(tmp_path, "imagesTr/b.nii.gz", "imagesTr/a.nii", "labelsTr/a.nii", "labelsTr/b.nii.gz")
    cases = list_cases(_spec(tmp_path))
    assert cases == [
        Case("a", tmp_path / "imagesTr/a.nii", tmp_path / "labelsTr/a.nii"),
        Case("b", tmp_path / "imagesTr/b.nii.gz", tmp_path / "labelsTr/b.nii.gz"),
    ]


def test_all_supported_suffixes(tmp_path: Path) -> None:
    _touch(tmp_path, "imagesTr/a.mha", "imagesTr/b.nrrd", "imagesTr/c.NII.GZ", "labelsTr/a.mha")
    assert [c.case_id for c in list_cases(_spec(tmp_path))] == ["a", "b", "c"]
    assert split_suffix("x.nii.gz") == ("x", ".nii.gz")
    assert split_suffix("x.png") is None
    assert split_suffix(".nii") is None


def test_nnunet_channel_suffix_is_stripped(tmp_path: Path) -> None:
    _touch(tmp_path, "imagesTr/case_7_0000.nii.gz", "labelsTr/case_7.nii.gz")
    (case,) = list_cases(_spec(tmp_path))
    assert case.case_id == "case_7"
    assert case.image.name == "case_7_0000.nii.gz"
    assert case.label == tmp_path / "labelsTr/case_7.nii.gz"


def test_second_channel_is_refused(tmp_path: Path) -> None:
    _touch(tmp_path, "imagesTr/c_0000.nii.gz", "imagesTr/c_0001.nii.gz", "labelsTr/c.nii.gz")
    with pytest.raises(DatasetError, match="single-channel") as info:
        list_cases(_spec(tmp_path))
    assert "c_0001.nii.gz" in str(info.value) and "'toy'" in str(info.value)


def test_four_digit_msd_names_pair_with_identical_label(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "imagesTr/case_0000.nii.gz",
        "imagesTr/case_0001.nii.gz",
        "labelsTr/case_0000.nii.gz",
        "labelsTr/case_0001.nii.gz",
    )
    cases = list_cases(_spec(tmp_path))
    assert [c.case_id for c in cases] == ["case_0000", "case_0001"]
    assert all(c.label is not None and c.label.name == c.image.name for c in cases)


def test_hidden_and_foreign_files_are_ignored(tmp_path: Path) -> None:
    _touch(
        tmp_path,
        "imagesTr/a.nii.gz",
        "imagesTr/._a.nii.gz",
        "imagesTr/.a.nii.gz.tmp.nii.gz",
        "imagesTr/notes.txt",
        "labelsTr/a.nii.gz",
        "labelsTr/.hidden.nii.gz",
        "dataset.json",
    )
    layout = scan_layout(_spec(tmp_path))
    assert [c.case_id for c in layout.cases] == ["a"]
    assert layout.orphan_labels == ()


def test_unpaired_files_are_reported_not_raised(tmp_path: Path) -> None:
    _touch(tmp_path, "imagesTr/a.nii.gz", "imagesTr/b.nii.gz", "labelsTr/a.nii.gz")
    _touch(tmp_path, "labelsTr/z.nii.gz")
    layout = scan_layout(_spec(tmp_path))
    assert [(c.case_id, c.label is None) for c in layout.cases] == [("a", False), ("b", True)]
    assert layout.orphan_labels == (("z", tmp_path / "labelsTr/z.nii.gz"),)


def test_symlink_escaping_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _touch(root, "imagesTr/a.nii.gz", "labelsTr/a.nii.gz")
    outside = tmp_path / "secret.nii.gz"
    outside.write_bytes(b"x")
    (root / "imagesTr/b.nii.gz").symlink_to(outside)
    with pytest.raises(DatasetError, match="outside the data folder") as info:
        list_cases(_spec(root))
    assert "b.nii.gz" in str(info.value)


def test_symlink_escaping_through_folder_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _touch(tmp_path, "elsewhere/a.nii.gz")
    _touch(root, "labelsTr/a.nii.gz")
    (root / "imagesTr").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DatasetError, match="outside the data folder"):
        list_cases(_spec(root))


def test_symlink_inside_root_is_accepted(tmp_path: Path) -> None:
    _touch(tmp_path, "store/a.nii.gz", "labelsTr/a.nii.gz")
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "imagesTr/a.nii.gz").symlink_to(tmp_path / "store/a.nii.gz")
    assert [c.case_id for c in list_cases(_spec(tmp_path))] == ["a"]


def test_symlinked_root_itself_is_fine(tmp_path: Path) -> None:
    _touch(tmp_path, "real/imagesTr/a.nii.gz", "real/labelsTr/a.nii.gz")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert [c.case_id for c in list_cases(_spec(tmp_path / "link"))] == ["a"]


def test_no_data_spec(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"no data folder.*--data toy=DIR"):
        list_cases(_spec(None))


def test_missing_folders_and_empty(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        list_cases(_spec(tmp_path / "nope"))
    with pytest.raises(DatasetError, match="image folder"):
        list_cases(_spec(tmp_path))
    (tmp_path / "imagesTr").mkdir()
    with pytest.raises(DatasetError, match="label folder"):
        list_cases(_spec(tmp_path))
    with pytest.raises(DatasetError, match="no images"):
        list_cases(_spec(tmp_path), require_labels=False)
    _touch(tmp_path, "imagesTr/a.nii.gz")
    assert list_cases(_spec(tmp_path), require_labels=False) == [
        Case("a", tmp_path / "imagesTr/a.nii.gz", None)
    ]


def test_two_files_for_one_case(tmp_path: Path) -> None:
    _touch(tmp_path, "imagesTr/a.nii", "imagesTr/a.nii.gz", "labelsTr/a.nii.gz")
    with pytest.raises(DatasetError, match="same case"):
        list_cases(_spec(tmp_path))
    (tmp_path / "imagesTr/a.nii").unlink()
    _touch(tmp_path, "imagesTr/a_0000.nii.gz")
    with pytest.raises(DatasetError, match="both give case 'a'"):
        list_cases(_spec(tmp_path))


def test_custom_folder_names(tmp_path: Path) -> None:
    _touch(tmp_path, "img/a.nii.gz", "seg/a.nii.gz")
    spec = DomainSpec(
        name="toy",
        labels=((1, "a"),),
        normalization="zscore",
        data=DataSpec(root=tmp_path, images="img", labels="seg"),
    )
    assert [c.case_id for c in list_cases(spec)] == ["a"]
