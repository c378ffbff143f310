"""Faults on the input side met through the CLI: an unreadable scan among good ones, a blank scan,
a DICOM series with a missing slice. Exit codes, one-line messages, files left behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.cli.conftest import Runner, one_line_error
from tests.fs_faults import snapshot
from tests.io.conftest import write_dicom_series


def test_identify_exits_1_when_a_scan_cannot_be_read(
    pedseg: Runner, run: Path, ankle_scan: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a volume")
    report = tmp_path / "ids.json"
    result = pedseg("identify", str(ankle_scan), str(broken), "-m", str(run), "--json", str(report))
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: broken: {broken}: is not a readable")
    assert "Traceback" not in result.err
    rows = {row["scan"]: row for row in json.loads(report.read_text())["scans"]}
    assert "domain" in rows[ankle_scan.name.removesuffix(".nii.gz")]  # the good scan is reported
    assert rows["broken"]["error"].startswith(f"{broken}: is not a readable NIfTI file")


def test_identify_names_a_blank_scan(
    pedseg: Runner, run: Path, ankle_scan: Path, tmp_path: Path
) -> None:
    source = nib.load(ankle_scan)
    blank = tmp_path / "blank.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(source.shape, np.int16), source.affine), blank)
    report = tmp_path / "ids.json"
    result = pedseg("identify", str(blank), "-m", str(run), "--json", str(report))
    assert result.code == 0, result.err
    reason = "blank: blank volume: every voxel is 0 (an empty or blanked scan?)"
    assert f"warning: blank: looks out of distribution: {reason}" in result.out
    [row] = json.loads(report.read_text())["scans"]
    assert row["ood"] and row["evidence"]["reasons"][0] == reason
    assert row["warnings"][0].startswith(f"looks out of distribution: {reason}")
    assert result.err == ""


def test_predict_refuses_dicom_series_with_a_missing_slice(
    pedseg: Runner, run: Path, tmp_path: Path
) -> None:
    volume = (np.arange(8 * 32 * 32).reshape(8, 32, 32) % 211).astype(np.int16)
    series = write_dicom_series(
        tmp_path / "in" / "series", volume, uid="1.2.3.4.5", description="T1", spacing=(1, 1, 0.4)
    )
    (series / "slice004.dcm").unlink()
    out = tmp_path / "out"
    result = pedseg(
        "predict", str(series), "-d", "ankle", "-m", str(run), "-o", str(out / "s.nii.gz")
    )
    line = one_line_error(result)
    assert line.startswith(f"error: series: {series}: slice positions are not evenly spaced: ")
    assert "slice003.dcm to slice005.dcm is 0.8 mm where the other slices are 0.4 mm" in line
    assert snapshot(out) == {}
    # with the slice back the same series predicts
    shutil.rmtree(series)
    write_dicom_series(series, volume, uid="1.2.3.4.5", description="T1", spacing=(1, 1, 0.4))
    result = pedseg(
        "predict", str(series), "-d", "ankle", "-m", str(run), "-o", str(out / "s.nii.gz")
    )
    assert result.code == 0, result.err
    assert (out / "s.nii.gz").is_file()


def test_predict_on_a_corrupt_mha_is_one_line(run: Path, tmp_path: Path) -> None:
    """In a real process: MetaIO prints on file descriptor 2, past Python's sys.stderr."""
    bad = tmp_path / "bad.mha"
    bad.write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 4 zz\nElementDataFile = LOCAL\n")
    out = tmp_path / "out"
    args = ["predict", str(bad), "-d", "ankle", "-m", str(run), "-o", str(out / "s.nii.gz"), "-q"]
    env = {**os.environ, "PEDSEG_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pedseg", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: bad: {bad}: is not a readable MHA file (File cannot be read: {bad} for reading)"
    ]
    assert snapshot(out) == {}
