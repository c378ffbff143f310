"""Property-based fuzzing of the volume readers: random bytes, truncations and mutated headers of
valid NIfTI/MHA/NRRD files give a ``PedsegError`` (or a usable volume), never another exception or
a hang. A reader never writes, so nothing can be left behind; the write side is fuzzed below with
file-system faults at random points: the output is complete or absent."""

from __future__ import annotations

import errno
import gzip
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pedseg.errors import OutputError, PedsegError
from pedseg.io import Volume, read_volume, write_like

LIMIT = 16 * 1024**2  # a mutated header may declare gigabytes: refuse them, never allocate them
FUZZ = settings(
    max_examples=60, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SUFFIXES = (".nii", ".nii.gz", ".mha", ".nrrd")


def _data() -> np.ndarray:
    return (np.arange(4 * 5 * 6).reshape(4, 5, 6) * 3 - 20).astype(np.int16)


def _nifti_bytes() -> bytes:
    image = nib.Nifti1Image(_data(), np.diag([0.8, 0.9, 2.0, 1.0]))
    image.header.set_qform(image.affine, code=1)
    return bytes(image.to_bytes())


def _itk_bytes(suffix: str) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"seed{suffix}"
        image = sitk.GetImageFromArray(_data())
        image.SetSpacing((0.8, 0.9, 2.0))
        sitk.WriteImage(image, str(path), useCompression=False)
        return path.read_bytes()


NII = _nifti_bytes()
SEEDS = {
    ".nii": NII,
    ".nii.gz": gzip.compress(NII, mtime=0),
    ".mha": _itk_bytes(".mha"),
    ".nrrd": _itk_bytes(".nrrd"),
}


@contextmanager
def _file(suffix: str, content: bytes) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"scan{suffix}"
        path.write_bytes(content)
        before = sorted(Path(folder).iterdir())
        yield path
        assert sorted(Path(folder).iterdir()) == before  # reading wrote nothing


def _read_or_refuse(path: Path) -> Volume | None:
    """The volume, or None when refused with a PedsegError; any other exception fails the test."""
    try:
        volume = read_volume(path, max_bytes=LIMIT)
    except PedsegError as error:
        text = str(error)
        assert text and "\n" not in text and len(text) <= 500
        return None
    assert volume.array.ndim == 3 and volume.array.size > 0
    assert np.isfinite(volume.affine).all() and min(volume.spacing) > 0
    if volume.array.dtype.kind == "f":
        assert np.isfinite(volume.array).all()
    return volume


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_valid_seeds_are_read(suffix: str) -> None:
    with _file(suffix, SEEDS[suffix]) as path:
        volume = _read_or_refuse(path)
    assert volume is not None and sorted(volume.shape) == [4, 5, 6]


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), content=st.binary(min_size=1, max_size=2048))
def test_random_bytes(suffix: str, content: bytes) -> None:
    with _file(suffix, content) as path:
        assert _read_or_refuse(path) is None


@FUZZ
@given(suffix=st.sampled_from(SUFFIXES), data=st.data())
def test_truncations(suffix: str, data: st.DataObject) -> None:
    seed = SEEDS[suffix]
    cut = data.draw(st.integers(1, len(seed) - 1), label="cut")
    with _file(suffix, seed[:cut]) as path:
        volume = _read_or_refuse(path)
    if volume is not None:  # only a cut into trailing padding or an unused tail may still read
        np.testing.assert_array_equal(np.sort(volume.array, axis=None), np.sort(_data(), axis=None))


def _mutate(seed: bytes, edits: list[tuple[int, int]], span: int) -> bytes:
    raw = bytearray(seed)
    for offset, value in edits:
        raw[offset % min(span, len(raw))] = value
    return bytes(raw)


edits = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=8)


@FUZZ
@given(edits=edits, compress=st.booleans())
def test_mutated_nifti_header(edits: list[tuple[int, int]], compress: bool) -> None:
    """Bytes of the 348-byte header (and the 4-byte extension flag) replaced; for .nii.gz the
    header is mutated before compressing, so the gzip checksum does not hide the damage."""
    mutated = _mutate(NII, edits, span=352)
    suffix = ".nii.gz" if compress else ".nii"
    with _file(suffix, gzip.compress(mutated, mtime=0) if compress else mutated) as path:
        _read_or_refuse(path)


header_fields = st.sampled_from(
    [
        ("<h", 40, "dim[0]"),
        ("<h", 42, "dim[1]"),
        ("<h", 70, "datatype"),
        ("<h", 72, "bitpix"),
        ("<f", 80, "pixdim[1]"),
        ("<f", 108, "vox_offset"),
        ("<f", 112, "scl_slope"),
        ("<f", 116, "scl_inter"),
        ("<h", 252, "qform_code"),
        ("<h", 254, "sform_code"),
        ("<f", 256, "quatern_b"),
        ("<f", 280, "srow_x[0]"),
    ]
)
numbers = st.one_of(
    st.integers(-(2**15), 2**15 - 1),
    st.sampled_from([0, -1, 1, 7, 255, 2**15 - 1]),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
)


@FUZZ
@given(field=header_fields, value=numbers)
def test_nifti_header_field_set_to_odd_values(
    field: tuple[str, int, str], value: float | int
) -> None:
    fmt, offset, _name = field
    raw = bytearray(NII)
    number = int(value) if fmt == "<h" and np.isfinite(value) else value
    if fmt == "<h":
        if not isinstance(number, int) or not -(2**15) <= number < 2**15:
            return
        struct.pack_into(fmt, raw, offset, number)
    else:
        struct.pack_into(fmt, raw, offset, float(value))
    with _file(".nii", bytes(raw)) as path:
        _read_or_refuse(path)


@pytest.mark.slow
@settings(max_examples=400, deadline=5000)
@given(suffix=st.sampled_from(SUFFIXES), edits=edits)
def test_mutated_anywhere_slow(suffix: str, edits: list[tuple[int, int]]) -> None:
    seed = SEEDS[suffix]
    with _file(suffix, _mutate(seed, edits, span=len(seed))) as path:
        _read_or_refuse(path)


# ------------------------------------------------------------------ the write side: all or nothing


write_ops = st.sampled_from(["mkdir", "open", "replace", "rename"])
codes = st.sampled_from([errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EIO, errno.ENAMETOOLONG])


@FUZZ
@given(op=write_ops, code=codes, suffix=st.sampled_from([".nii.gz", ".nii", ".mha", ".nrrd"]))
def test_write_fault_leaves_nothing(
    op: str, code: int, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fs_faults import fail_writes, snapshot

    with _file(".nii", NII) as source, tempfile.TemporaryDirectory() as folder:
        volume = read_volume(source)
        out = Path(folder) / "deep" / f"seg{suffix}"
        with monkeypatch.context() as patch:
            fail_writes(patch, Path(folder), code=code, ops=(op,))
            try:
                write_like(volume.array > 0, volume, out)
            except OutputError as error:
                assert str(error).startswith(f"{out}: cannot be written: ")
                written = False
            else:
                written = True
        if written:
            back = read_volume(out)
            np.testing.assert_array_equal(back.array, volume.array > 0)
        else:
            assert snapshot(Path(folder)) == {}


@settings(max_examples=30, deadline=5000)
@given(body=st.binary(min_size=0, max_size=1024), files=st.integers(1, 3))
def test_random_dicom_folder(body: bytes, files: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for k in range(files):
            (Path(folder) / f"slice{k}.dcm").write_bytes(b"\0" * 128 + b"DICM" + body)
        assert _read_or_refuse(Path(folder)) is None


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(
    which=st.integers(0, 3),
    edits=edits,
    cut=st.one_of(st.none(), st.integers(0, 2000)),
)
def test_mutated_dicom_slice_slow(
    which: int, edits: list[tuple[int, int]], cut: int | None
) -> None:
    from tests.io.conftest import write_dicom_series

    with tempfile.TemporaryDirectory() as folder:
        series = write_dicom_series(
            Path(folder) / "s", _data(), uid="1.2.826.0.1.3680043.2.1125.9", description="T1"
        )
        target = sorted(series.iterdir())[which]
        raw = target.read_bytes()
        mutated = _mutate(raw, edits, span=len(raw))
        target.write_bytes(mutated if cut is None else mutated[:cut])
        _read_or_refuse(series)
