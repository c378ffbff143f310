"""``pedseg compare`` and ``pedseg embed`` end to end (exit codes, files, one-line errors)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pedseg.runfolder.metrics import plot_curves
from tests.cli.conftest import Runner, one_line_error
from tests.conftest_runs import phantom_dir, tiny_run_dir
from tests.evaluation.test_compare import COLUMNS, case_dice, write_method


@pytest.fixture
def crossval(tmp_path: Path) -> Path:
    root = tmp_path / "cv"
    write_method(
        root / "dsl-contrastive-unet",
        case_dice([0.9, 0.92, 0.95]),
        slices={"ankle": [0.9, 0.95, 0.97, 0.8]},
    )
    write_method(
        root / "baseline-unet", case_dice([0.8, 0.85, 0.83]), slices={"ankle": [0.7, 0.6, 0.5]}
    )
    return root


def test_compare_writes_report(pedseg: Runner, crossval: Path, tmp_path: Path) -> None:
    curves = crossval / "baseline-unet" / "fold-0" / "run" / "curves.png"
    plot_curves(curves, [{"epoch": 1, "loss_total": 1.0, "val_dice": 0.5}])
    out = tmp_path / "report"
    result = pedseg("compare", str(crossval), "--out", str(out))
    assert result.code == 0, result.err
    assert "compared 2 methods" in result.out
    for name in ("report.md", "report.html", "tables.csv", "tests.csv", "comparison.json"):
        assert (out / name).is_file(), name
    assert (out / "figures" / "dice_boxplot.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "figures" / "curves-baseline-unet.png").read_bytes() == curves.read_bytes()
    assert "Training curves: baseline-unet" in (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert 'src="data:image/png;base64,' in html and not re.search(r"https?://", html)
    # A second run refuses to replace the report, unless --overwrite.
    again = pedseg("compare", str(crossval), "--out", str(out))
    assert "already exists" in one_line_error(again)
    assert pedseg("compare", str(crossval), "--out", str(out), "--overwrite").code == 0


def test_compare_format_and_reference(pedseg: Runner, crossval: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    result = pedseg(
        "compare", str(crossval / "baseline-unet"), str(crossval / "dsl-contrastive-unet"),
        "--out", str(out), "--format", "csv", "--reference", "baseline-unet",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert sorted(p.name for p in out.iterdir()) == ["tables.csv", "tests.csv"]
    assert "baseline-unet" in (out / "tests.csv").read_text().splitlines()[1].split(",")[3]


def test_compare_errors(pedseg: Runner, crossval: Path, tmp_path: Path) -> None:
    error = one_line_error(pedseg("compare", str(crossval), "--reference", "nope"))
    assert "unknown reference method 'nope'" in error
    error = one_line_error(pedseg("compare", str(crossval), "--format", "pdf"))
    assert "--format" in error
    broken = write_method(tmp_path / "broken", case_dice([0.9]), columns=COLUMNS[:5])
    error = one_line_error(pedseg("compare", str(broken)))
    assert "metrics.csv: required column 'sensitivity' is missing" in error


def test_compare_overlays(
    pedseg: Runner, crossval: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data = phantom_dir(tmp_path_factory) / "ankle"
    for method in ("dsl-contrastive-unet", "baseline-unet"):
        folder = crossval / method / "predictions" / "ankle"
        folder.mkdir(parents=True)
        shutil.copyfile(data / "labelsTr" / "ankle_000.nii.gz", folder / "ankle_000.nii.gz")
    out = tmp_path / "r"
    result = pedseg(
        "compare", str(crossval), "--out", str(out), "--overlays", "--data", f"ankle={data}"
    )
    assert result.code == 0, result.err
    assert (out / "figures" / "overlay-ankle.png").is_file()
    assert "figures/overlay-ankle.png" in (out / "report.md").read_text()


def test_embed_cli(
    pedseg: Runner, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    run = tiny_run_dir(tmp_path_factory, scheme="dsl-contrastive")
    data = phantom_dir(tmp_path_factory)
    out = tmp_path / "tsne.png"
    args = [
        "embed", "--model", str(run), "--data", f"ankle={data / 'ankle'}",
        "--data", f"shoulder={data / 'shoulder'}", "--out", str(out), "--max-slices", "8",
    ]  # fmt: skip
    result = pedseg(*args, "--epochs-from", str(run))
    assert result.code == 0, result.err
    assert "embedded 16 slices" in result.out
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "tsne-epochs.png").is_file()
    assert len((tmp_path / "tsne.csv").read_text().splitlines()) == 17
    assert "already exists" in one_line_error(pedseg(*args))
    error = one_line_error(pedseg(*args, "--overwrite", "--domains", "pelvis"))
    assert "unknown domain of this model 'pelvis'" in error
