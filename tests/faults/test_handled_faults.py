"""Faults the hostile-user trial found already handled, kept from regressing: each bad input
through ``pedseg predict`` is one line on stderr, exit 1, and nothing written; an existing output
is kept byte for byte; identifying header text never reaches the outputs."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.cli.conftest import Runner, one_line_error
from tests.fs_faults import snapshot
from tests.io.conftest import write_dicom_series

AFFINE = np.diag([0.4, 0.4, 1.2, 1.0])


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, AFFINE), path)
    return path


def _empty(folder: Path) -> Path:
    path = folder / "scan.nii.gz"
    path.write_bytes(b"")
    return path


def _truncated(folder: Path) -> Path:
    path = _nifti(folder / "scan.nii.gz", np.ones((32, 32, 16), np.int16))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _not_an_image(folder: Path) -> Path:
    path = folder / "scan.nii.gz"
    path.write_text("patient list, not a scan\n")
    return path


def _nan(folder: Path) -> Path:
    data = np.ones((32, 32, 16), np.float32)
    data[3, 4, 5] = np.nan
    return _nifti(folder / "scan.nii.gz", data)


def _four_d(folder: Path) -> Path:
    return _nifti(folder / "scan.nii.gz", np.ones((32, 32, 16, 3), np.int16))


def _size_bomb(folder: Path) -> Path:
    header = nib.Nifti1Header()
    header.set_data_dtype(np.int16)
    header.set_data_shape((20000, 20000, 20000))  # 16 TB declared, 64 bytes present
    path = folder / "scan.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\1" * 64))
    return path


def _two_series(folder: Path) -> Path:
    series = folder / "scan"
    volume = np.ones((4, 32, 32), np.int16)
    write_dicom_series(series, volume, uid="1.2.3.1", description="T1", prefix="a")
    write_dicom_series(series, volume, uid="1.2.3.2", description="T2", prefix="b")
    return series


BAD_INPUTS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "empty": (_empty, "is empty (0 bytes); re-copy or re-export the file"),
    "truncated": (_truncated, "is truncated"),
    "not-an-image": (_not_an_image, "is not a readable NIfTI file"),
    "nan": (_nan, "contains 1 NaN or infinite voxel(s)"),
    "4d": (_four_d, "is 4D with shape (32, 32, 16, 3); pass a 3D volume"),
    "size-bomb": (_size_bomb, "declares 14.6 TiB of voxels (shape (20000, 20000, 20000))"),
    "two-dicom-series": (_two_series, "holds 2 DICOM series"),
}


@pytest.mark.parametrize("fault", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_writes_nothing(
    pedseg: Runner, run: Path, tmp_path: Path, fault: str
) -> None:
    make, message = BAD_INPUTS[fault]
    (tmp_path / "in").mkdir()
    source = make(tmp_path / "in")
    out = tmp_path / "out"
    result = pedseg(
        "predict", str(source), "-d", "ankle", "-m", str(run), "-o", str(out / "s.nii.gz")
    )
    line = one_line_error(result)
    assert line.startswith(f"error: scan: {source}: ") and message in line
    assert snapshot(out) == {}


def test_existing_output_is_kept_byte_for_byte(
    pedseg: Runner, run: Path, ankle_scan: Path, tmp_path: Path
) -> None:
    out = tmp_path / "s.nii.gz"
    out.write_bytes(b"the user's own file")
    before = snapshot(tmp_path)
    line = one_line_error(
        pedseg("predict", str(ankle_scan), "-d", "ankle", "-m", str(run), "-o", str(out))
    )
    assert f"{out}: already exists; pass --overwrite to replace it" in line
    assert snapshot(tmp_path) == before


def test_identifying_header_text_never_reaches_the_outputs(
    pedseg: Runner, run: Path, ankle_scan: Path, tmp_path: Path
) -> None:
    image = nib.load(ankle_scan)
    marked = nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine, header=image.header)
    marked.header["descrip"] = b"Doe^John 1970-01-01"
    marked.header["aux_file"] = b"MRN123456"
    marked.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"Doe^John MRN123456"))
    source = tmp_path / "in" / "case.nii.gz"
    source.parent.mkdir()
    nib.save(marked, source)
    out = tmp_path / "out"
    result = pedseg("predict", str(source), "-d", "ankle", "-m", str(run), "-o", str(out), "-q")
    assert result.code == 0, result.err
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    for path in files:
        raw = path.read_bytes()
        text = gzip.decompress(raw) if path.name.endswith(".gz") else raw
        assert b"Doe^John" not in text and b"MRN123456" not in text, path
