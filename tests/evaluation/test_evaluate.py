"""``evaluate_folders`` on hand-made label maps with known Dice, distances and slice Dice."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pedseg.domains.registry import DomainRegistry
from pedseg.domains.spec import DomainSpec
from pedseg.errors import DatasetError, OutputExistsError, VolumeError
from pedseg.evaluation.evaluate import (
    case_key,
    evaluate_folders,
    match_files,
    write_evaluation,
)
from pedseg.evaluation.metrics import slice_dice, worst_distance
from pedseg.io import write_volume

SHAPE = (10, 12, 8)
SPACING = (2.0, 1.0, 1.0)
# Axis 0 flipped on disk: reading must reorient (canonical = the arrays built below).
AFFINE = np.array(
    [[-2.0, 0, 0, 30.0], [0, 1.0, 0, -5.0], [0, 0, 1.0, 7.0], [0, 0, 0, 1]], dtype=np.float64
)


@pytest.fixture
def ankle() -> DomainSpec:
    return DomainRegistry().get("ankle")  # labels 1 calcaneus, 2 talus, 3 tibia; slice_axis auto


def reference_map() -> np.ndarray:
    ref = np.zeros(SHAPE, dtype=np.uint8)
    ref[2:6, 2:6, 2:6] = 1  # 64 voxels
    ref[1:4, 8:11, 1:3] = 2
    return ref


def shifted_map() -> np.ndarray:
    """Label 1 moved by one voxel (2 mm) along axis 0; label 2 unchanged; label 3 absent."""
    pred = np.zeros(SHAPE, dtype=np.uint8)
    pred[3:7, 2:6, 2:6] = 1
    pred[1:4, 8:11, 1:3] = 2
    return pred


def write_canonical(array: np.ndarray, path: Path, affine: np.ndarray = AFFINE) -> Path:
    write_volume(np.flip(array, axis=0).copy(), affine, path)
    return path


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    pred, ref = tmp_path / "pred", tmp_path / "ref"
    write_canonical(reference_map(), ref / "case_a.nii.gz")
    write_canonical(reference_map(), ref / "case_b.nii.gz")
    write_canonical(shifted_map(), pred / "case_a.nii.gz")  # nnU-Net style names also match:
    write_canonical(reference_map(), pred / "case_b_0000.nii.gz")
    return pred, ref


def test_case_key() -> None:
    assert case_key("abc_0000.nii.gz") == "abc"
    assert case_key("abc.nrrd") == "abc"
    assert case_key("abc_0001.mha") == "abc_0001"
    assert case_key(".hidden.nii.gz") is None
    assert case_key("notes.txt") is None


def test_known_metrics(folders: tuple[Path, Path], ankle: DomainSpec) -> None:
    pred, ref = folders
    result = evaluate_folders(pred, ref, spec=ankle)
    assert [c.case for c in result.cases] == ["case_a", "case_b"]
    a = result.cases[0]
    one, two, three = a.metrics
    assert one.dice == pytest.approx(2 * 48 / 128)
    assert one.sensitivity == pytest.approx(48 / 64)
    assert one.ravd == 0.0
    assert one.mssd == pytest.approx(2.0)  # one voxel along the 2 mm axis
    assert one.volume_ref_ml == pytest.approx(64 * 2.0 / 1000)
    assert (two.dice, two.assd, two.hd95) == (1.0, 0.0, 0.0)
    assert three.dice == 1.0 and three.empty_reference and three.empty_prediction
    assert a.axis == 0  # auto: the axis of largest spacing
    assert [(lab, i, d) for lab, i, d in a.slice_dice if lab == 1] == [
        (1, 2, 0.0),
        (1, 3, 1.0),
        (1, 4, 1.0),
        (1, 5, 1.0),
        (1, 6, 0.0),
    ]
    values = slice_dice(shifted_map(), reference_map(), axis=0, label_ids=(1, 2, 3))
    assert np.array_equal([d for _, _, d in a.slice_dice], values)
    assert all(m.dice == 1.0 for m in result.cases[1].metrics)


def test_missing_prediction_counts_as_worst_case(
    folders: tuple[Path, Path], ankle: DomainSpec, tmp_path: Path
) -> None:
    pred, ref = folders
    write_canonical(reference_map(), ref / "case_c.nii.gz")
    write_canonical(reference_map(), pred / "extra.nii.gz")  # no reference: ignored
    result = evaluate_folders(pred, ref, spec=ankle)
    assert result.missing == ("case_c",)
    assert result.ignored == (pred / "extra.nii.gz",)
    missed = result.cases[2]
    diagonal = worst_distance(SHAPE, SPACING)
    assert missed.metrics[0].dice == 0.0 and missed.metrics[0].hd95 == pytest.approx(diagonal)
    assert missed.metrics[0].empty_prediction and not missed.metrics[0].empty_reference
    summary = result.summary()
    dice = summary["labels"]["1"]["metrics"]["dice"]
    assert dice["n"] == 3 and dice["n_empty_prediction"] == 1
    assert dice["mean"] == pytest.approx((0.75 + 1.0 + 0.0) / 3)
    assert summary["overall"]["metrics"]["dice"]["n"] == 9
    assert summary["missing_predictions"] == ["case_c"]
    assert summary["n_missing_predictions"] == 1


def test_outputs(folders: tuple[Path, Path], ankle: DomainSpec, tmp_path: Path) -> None:
    pred, ref = folders
    result = evaluate_folders(pred, ref, spec=ankle)
    out = tmp_path / "out"
    write_evaluation(result, out)
    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    first = rows[0]
    assert (first["case"], first["label"], first["label_name"]) == ("case_a", "1", "calcaneus")
    assert float(first["dice"]) == pytest.approx(0.75)
    assert first["empty_reference"] == "0"
    with (out / "slice_dice.csv").open() as fh:
        slices = list(csv.DictReader(fh))
    assert slices[0] == {"case": "case_a", "label": "1", "slice": "2", "dice": "0.0"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["domain"] == "ankle"
    assert summary["descriptor_hash"] == ankle.content_hash()
    assert summary["labels"]["1"]["metrics"]["dice"]["median"] == pytest.approx(0.875)
    with pytest.raises(OutputExistsError):
        write_evaluation(result, out)
    write_evaluation(result, out, overwrite=True)


def test_hallucinated_structure_gives_inf_ravd_in_json(ankle: DomainSpec, tmp_path: Path) -> None:
    ref = reference_map()
    pred = ref.copy()
    pred[7:9, 1:3, 5:7] = 3  # tibia, absent from the reference
    write_canonical(ref, tmp_path / "ref" / "c.nii.gz")
    write_canonical(pred, tmp_path / "pred" / "c.nii.gz")
    result = evaluate_folders(tmp_path / "pred", tmp_path / "ref", spec=ankle)
    assert math.isinf(result.cases[0].metrics[2].ravd)
    write_evaluation(result, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["labels"]["3"]["metrics"]["ravd"]["mean"] == "inf"


def test_single_files_pair_whatever_their_names(tmp_path: Path, ankle: DomainSpec) -> None:
    ref = write_canonical(reference_map(), tmp_path / "truth.nii.gz")
    pred = write_canonical(shifted_map(), tmp_path / "seg.nii.gz")
    matching = match_files(pred, ref)
    assert matching.pairs == (("truth", pred, ref),)
    result = evaluate_folders(pred, ref, spec=ankle)
    assert result.cases[0].metrics[0].dice == pytest.approx(0.75)


def test_geometry_mismatch_names_the_prediction(tmp_path: Path, ankle: DomainSpec) -> None:
    write_canonical(reference_map(), tmp_path / "ref" / "c.nii.gz")
    moved = AFFINE.copy()
    moved[0, 3] += 4.0
    bad = write_canonical(reference_map(), tmp_path / "pred" / "c.nii.gz", moved)
    with pytest.raises(VolumeError, match="prediction does not lie on the grid") as info:
        evaluate_folders(tmp_path / "pred", tmp_path / "ref", spec=ankle)
    assert str(bad) in str(info.value) and "origin" in str(info.value)


def test_duplicate_case_and_empty_reference_folder(tmp_path: Path, ankle: DomainSpec) -> None:
    write_canonical(reference_map(), tmp_path / "ref" / "c.nii.gz")
    write_canonical(reference_map(), tmp_path / "ref" / "c_0000.nii.gz")
    with pytest.raises(DatasetError, match="both give case 'c'"):
        match_files(tmp_path / "ref", tmp_path / "ref")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no reference label maps"):
        match_files(tmp_path / "empty", tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        match_files(tmp_path / "nowhere", tmp_path / "ref")


def test_undeclared_prediction_label_is_refused(tmp_path: Path, ankle: DomainSpec) -> None:
    write_canonical(reference_map(), tmp_path / "ref" / "c.nii.gz")
    pred = reference_map()
    pred[0, 0, 0] = 7
    write_canonical(pred, tmp_path / "pred" / "c.nii.gz")
    with pytest.raises(VolumeError, match="not declared"):
        evaluate_folders(tmp_path / "pred", tmp_path / "ref", spec=ankle)
