"""``pedseg evaluate`` and ``pedseg crossval`` at the command line: exit codes and outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from pedseg.io import write_volume
from tests.cli.conftest import Runner, one_line_error

AFFINE = np.diag([1.5, 1.0, 1.0, 1.0])


def _maps() -> tuple[np.ndarray, np.ndarray]:
    ref = np.zeros((8, 10, 6), dtype=np.uint8)
    ref[2:6, 2:6, 1:5] = 1
    ref[1:3, 7:9, 1:3] = 2
    pred = ref.copy()
    pred[2:6, 2:6, 1:5][0] = 0  # one slab of label 1 missed: Dice 2*48/(64+48)
    return ref, pred


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    ref, pred = _maps()
    write_volume(ref, AFFINE, tmp_path / "ref" / "p1.nii.gz")
    write_volume(ref, AFFINE, tmp_path / "ref" / "p2.nii.gz")
    write_volume(pred, AFFINE, tmp_path / "pred" / "p1.nii.gz")
    write_volume(ref, AFFINE, tmp_path / "pred" / "p3.nii.gz")  # no reference
    return tmp_path / "pred", tmp_path / "ref"


def test_evaluate_writes_results_and_table(pedseg: Runner, folders: tuple[Path, Path]) -> None:
    pred, ref = folders
    result = pedseg("evaluate", str(pred), str(ref), "--domain", "ankle")
    assert result.code == 0, result.err
    out = pred / "evaluation"
    assert {p.name for p in out.iterdir()} == {"metrics.csv", "slice_dice.csv", "summary.json"}
    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["case"], r["label"]) for r in rows] == [
        ("p1", "1"),
        ("p1", "2"),
        ("p1", "3"),
        ("p2", "1"),
        ("p2", "2"),
        ("p2", "3"),
    ]
    assert float(rows[0]["dice"]) == pytest.approx(96 / 112)
    assert float(rows[3]["dice"]) == 0.0 and rows[3]["empty_prediction"] == "1"  # p2 missed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["missing_predictions"] == ["p2"]
    assert summary["ignored_predictions"] == [str(pred / "p3.nii.gz")]
    # the table: per label and overall, Dice in %
    assert "calcaneus" in result.out and "overall" in result.out
    assert f"{100 * (96 / 112) / 2:.1f} ±" in result.out  # mean Dice of calcaneus over p1, p2
    assert "p2" in result.err and "missed" in result.err
    assert "p3.nii.gz" in result.err and "ignored" in result.err


def test_evaluate_refuses_to_overwrite(
    pedseg: Runner, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    pred, ref = folders
    out = tmp_path / "results"
    assert pedseg("evaluate", str(pred), str(ref), "-d", "ankle", "--out", str(out)).code == 0
    line = one_line_error(pedseg("evaluate", str(pred), str(ref), "-d", "ankle", "-o", str(out)))
    assert "already exists" in line and "--overwrite" in line
    again = pedseg("evaluate", str(pred), str(ref), "-d", "ankle", "-o", str(out), "--overwrite")
    assert again.code == 0


def test_evaluate_errors_are_one_line(
    pedseg: Runner, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    pred, ref = folders
    line = one_line_error(pedseg("evaluate", str(pred), str(ref), "--domain", "ankel"))
    assert "unknown domain 'ankel'" in line and "ankle" in line
    line = one_line_error(pedseg("evaluate", str(tmp_path / "none"), str(ref), "-d", "ankle"))
    assert "does not exist" in line
    write_volume(_maps()[0], np.diag([1.0, 1.0, 1.0, 1.0]), pred / "p2.nii.gz")  # other spacing
    line = one_line_error(pedseg("evaluate", str(pred), str(ref), "-d", "ankle"))
    assert str(pred / "p2.nii.gz") in line and "spacing" in line


def test_crossval_option_errors_are_one_line(pedseg: Runner, tmp_path: Path) -> None:
    out = str(tmp_path / "cv")
    line = one_line_error(pedseg("crossval", "--domains", "ankle", "--folds", "1", "--out", out))
    assert "--folds must be 'loo' or an integer >= 2" in line
    line = one_line_error(
        pedseg("crossval", "--domains", "ankle", "--schemes", "best", "--out", out)
    )
    assert "unknown 'best'" in line
    line = one_line_error(pedseg("crossval", "--domains", "ankle", "--out", out))
    assert "no data folder" in line and "--data ankle=DIR" in line


@pytest.mark.slow
def test_crossval_runs_and_continues(
    pedseg: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pedseg.data.synth import PhantomConfig, synth_dataset

    monkeypatch.setattr("pedseg.training.runner.plot_curves", lambda *a, **k: None)
    data = tmp_path / "data"
    synth_dataset(data, domains=("ankle",), cases=3, seed=0, config=PhantomConfig((32, 32, 16)))
    out = tmp_path / "cv"
    args = ["crossval", "--domains", "ankle", "--data", f"ankle={data / 'ankle'}"]
    args += ["--out", str(out), "--max-folds", "1", "--epochs", "1", "--batch-size", "2"]
    args += ["--image-size", "32", "--base-width", "4", "--depth", "3", "--device", "cpu"]
    args += ["--steps-per-epoch", "1"]
    result = pedseg(*args)
    assert result.code == 0, result.err
    assert "dsl-contrastive-unet fold-0 (1/1): starting" in result.out
    assert "1 fold(s) run, 0 already done" in result.out
    assert (out / "folds.json").is_file() and (out / "dsl-contrastive-unet/metrics.csv").is_file()
    again = pedseg(*args)
    assert again.code == 0 and "done earlier, skipped" in again.out
    assert "0 fold(s) run, 1 already done" in again.out
    line = one_line_error(pedseg(*args[:-2], "--steps-per-epoch", "2"))
    assert "other settings" in line and "steps_per_epoch was 1, now 2" in line


def test_crossval_space_separated_lists() -> None:
    from pedseg.cli.crossval_cmd import split_values

    extra = ["shoulder", "baseline", "attention-unet", "dsl,joint"]
    assert split_values(extra) == (["shoulder"], ["baseline", "dsl", "joint"], ["attention-unet"])


def test_crossval_parses_several_schemes(pedseg: Runner, tmp_path: Path) -> None:
    args = ["crossval", "--domains", "ankle", "shoulder", "--schemes", "dsl", "baseline"]
    args += ["--archs", "unet", "attention-unet", "--out", str(tmp_path / "cv")]
    line = one_line_error(pedseg(*args))
    assert "no data folder" in line  # parsing went through: the data is what is missing
