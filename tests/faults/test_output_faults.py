"""Faults on the output side: a folder that cannot be written, a full disk, a name too long, a path
through a file. Each is one line on stderr, exit 1, and nothing written (byte for byte)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tests.cli.conftest import Runner, one_line_error
from tests.fs_faults import fail_writes, snapshot


@pytest.mark.parametrize("single_file", [False, True], ids=["folder", "file"])
def test_predict_into_read_only_folder(
    pedseg: Runner,
    run: Path,
    ankle_scan: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    single_file: bool,
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    out = ro / "seg.nii.gz" if single_file else ro
    fail_writes(monkeypatch, ro)
    result = pedseg("predict", str(ankle_scan), "-d", "ankle", "-m", str(run), "-o", str(out))
    monkeypatch.undo()
    line = one_line_error(result)
    assert "cannot be written: Read-only file system; choose a writable folder" in line
    assert str(ro) in line
    assert snapshot(ro) == {}


def test_predict_with_disk_full_leaves_nothing(
    pedseg: Runner, run: Path, ankle_scan: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "new" / "out"
    fail_writes(monkeypatch, tmp_path, code=errno.ENOSPC, ops=("replace", "rename"))
    result = pedseg("predict", str(ankle_scan), "-d", "ankle", "-m", str(run), "-o", str(out))
    monkeypatch.undo()
    assert "No space left on device; free some space" in one_line_error(result)
    assert snapshot(tmp_path) == {}  # not even the folders made for the outputs


def test_predict_out_through_a_file(
    pedseg: Runner, run: Path, ankle_scan: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    before = snapshot(tmp_path)
    result = pedseg(
        "predict", str(ankle_scan), "-d", "ankle", "-m", str(run), "-o", str(blocker / "out")
    )
    line = one_line_error(result)
    assert f"{blocker} is a file, not a folder; choose another path" in line
    assert snapshot(tmp_path) == before


def test_predict_out_name_too_long(
    pedseg: Runner, run: Path, ankle_scan: Path, tmp_path: Path
) -> None:
    out = tmp_path / ("x" * 300 + ".nii.gz")
    result = pedseg("predict", str(ankle_scan), "-d", "ankle", "-m", str(run), "-o", str(out))
    assert "File name too long; choose a shorter name or path" in one_line_error(result)
    assert snapshot(tmp_path) == {}
