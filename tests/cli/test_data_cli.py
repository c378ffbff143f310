"""``pedseg synth`` and ``pedseg check`` end to end on phantom files, and their error paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pedseg.io import read_label, write_like
from tests.cli.conftest import Runner, one_line_error


@pytest.fixture
def phantoms(tmp_path: Path, pedseg: Runner) -> Path:
    out = tmp_path / "ph"
    # Small but complete: the CLI uses the default phantom shape, so generate via the library.
    from pedseg.data.synth import PhantomConfig, synth_dataset

    synth_dataset(
        out, domains=("ankle",), cases=2, seed=1, config=PhantomConfig(shape=(32, 32, 16))
    )
    return out


def test_synth_then_check(tmp_path: Path, pedseg: Runner) -> None:
    out = tmp_path / "demo"
    result = pedseg("synth", str(out), "--domains", "shoulder", "--cases", "1")
    assert result.code == 0, result.err
    assert (out / "shoulder" / "imagesTr" / "shoulder_000.nii.gz").is_file()
    checked = pedseg("check", "shoulder", "--data", f"shoulder={out / 'shoulder'}")
    assert checked.code == 0, checked.out
    assert "1 case(s) usable" in checked.out


def test_synth_refuses_to_overwrite(tmp_path: Path, pedseg: Runner, phantoms: Path) -> None:
    before = sorted(p.stat().st_mtime_ns for p in phantoms.rglob("*.nii.gz"))
    line = one_line_error(pedseg("synth", str(phantoms), "--domains", "ankle", "--cases", "1"))
    assert "already exists" in line or "not empty" in line
    assert sorted(p.stat().st_mtime_ns for p in phantoms.rglob("*.nii.gz")) == before


def test_check_reports_unusable_case(tmp_path: Path, pedseg: Runner, phantoms: Path) -> None:
    label_path = phantoms / "ankle" / "labelsTr" / "ankle_001.nii.gz"
    image_path = phantoms / "ankle" / "imagesTr" / "ankle_001.nii.gz"
    from pedseg.io import read_volume

    reference = read_volume(image_path)
    label = read_label(label_path).array.copy()
    label[0, 0, 0] = 9  # undeclared id
    write_like(label.astype(np.uint8), reference, label_path, overwrite=True)
    result = pedseg("check", "ankle", "--data", f"ankle={phantoms / 'ankle'}")
    assert result.code == 1
    assert "ankle_001" in result.out and "error" in result.out
    assert "ankle_000" in result.out


def test_check_without_data_is_one_line(pedseg: Runner) -> None:
    line = one_line_error(pedseg("check", "ankle"))
    assert "ankle" in line and "--data" in line


def test_check_missing_folder(pedseg: Runner, tmp_path: Path) -> None:
    line = one_line_error(pedseg("check", "ankle", "--data", f"ankle={tmp_path / 'nope'}"))
    assert "nope" in line


def test_check_bad_data_option(pedseg: Runner) -> None:
    assert "NAME=DIR" in one_line_error(pedseg("check", "ankle", "--data", "ankle"))


@pytest.mark.realdata
@pytest.mark.parametrize("domain", ["pelvis", "spine"])
def test_check_real_data(pedseg: Runner, shared_data: Path, domain: str) -> None:
    result = pedseg("check", domain, "--data", f"{domain}={shared_data / domain}")
    assert result.code == 0, result.out
    assert "usable" in result.out
