"""write_like / write_volume: exact geometry round trips, identifying fields, atomic writes."""

from __future__ import annotations

import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pedseg.errors import OutputError, OutputExistsError, VolumeError
from pedseg.io import read_volume, write_like, write_volume
from tests.io.conftest import NiftiMaker, make_affine, rotation, save_nifti

GEOMETRY_FIELDS = (
    "qform_code",
    "sform_code",
    "quatern_b",
    "quatern_c",
    "quatern_d",
    "qoffset_x",
    "qoffset_y",
    "qoffset_z",
    "srow_x",
    "srow_y",
    "srow_z",
)

signs = st.tuples(*[st.sampled_from([-1, 1])] * 3)
angles = st.one_of(
    st.just((0.0, 0.0, 0.0)), st.tuples(*[st.floats(-0.7, 0.7, allow_nan=False)] * 3)
)
spacings = st.tuples(*[st.floats(0.3, 4.0, allow_nan=False)] * 3)
origins = st.tuples(*[st.floats(-200.0, 200.0, allow_nan=False)] * 3)
shapes = st.tuples(*[st.integers(2, 6)] * 3)


def _assert_same_geometry(written: nib.Nifti1Header, original: nib.Nifti1Header) -> None:
    for field in GEOMETRY_FIELDS:
        assert written[field].tobytes() == original[field].tobytes(), field
    assert written["pixdim"][:4].tobytes() == original["pixdim"][:4].tobytes()
    assert written.get_data_shape()[:3] == original.get_data_shape()[:3]
    np.testing.assert_array_equal(written.get_qform(), original.get_qform())
    np.testing.assert_array_equal(written.get_sform(), original.get_sform())
    np.testing.assert_array_equal(written.get_best_affine(), original.get_best_affine())


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    perm=st.permutations([0, 1, 2]),
    flips=signs,
    sform_angles=angles,
    qform_angles=angles,
    spacing=spacings,
    origin=origins,
    shape=shapes,
    qform_code=st.sampled_from([0, 1, 2]),
    sform_code=st.sampled_from([0, 1, 2, 4]),
    dtype=st.sampled_from([np.int16, np.uint8, np.float32]),
    suffix=st.sampled_from([".nii", ".nii.gz"]),
    nifti2=st.booleans(),
)
def test_nifti_round_trip_is_exact(
    perm: list[int],
    flips: tuple[int, int, int],
    sform_angles: tuple[float, float, float],
    qform_angles: tuple[float, float, float],
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    shape: tuple[int, int, int],
    qform_code: int,
    sform_code: int,
    dtype: type,
    suffix: str,
    nifti2: bool,
) -> None:
    sform = make_affine(perm=perm, flips=flips, spacing=spacing, angles=sform_angles, origin=origin)
    qform = make_affine(perm=perm, flips=flips, spacing=spacing, angles=qform_angles, origin=origin)
    rng = np.random.default_rng(abs(hash((tuple(perm), flips, shape))) % 2**32)
    data = rng.integers(0, 200, shape).astype(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        source = save_nifti(
            Path(tmp) / f"in{suffix}",
            data,
            sform,
            qform_affine=qform,
            qform_code=qform_code,
            sform_code=sform_code,
            nifti2=nifti2,
        )
        volume = read_volume(source)
        out = Path(tmp) / f"out{suffix}"
        write_like(volume.array, volume, out)
        written, original = nib.load(out), nib.load(source)
        assert type(written) is type(original)
        _assert_same_geometry(written.header, original.header)
        written_data = np.asanyarray(written.dataobj)
        assert written_data.dtype == data.dtype
        np.testing.assert_array_equal(written_data, data)
        # A label-like array of another dtype maps back to the same voxels.
        labels = (volume.array % 3).astype(np.uint8)
        write_like(labels, volume, out, overwrite=True)
        np.testing.assert_array_equal(np.asanyarray(nib.load(out).dataobj), data % 3)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    perm=st.permutations([0, 1, 2]),
    flips=signs,
    rot=angles,
    spacing=spacings,
    origin=origins,
    suffix=st.sampled_from([".mha", ".nrrd"]),
)
def test_itk_round_trip_is_exact(
    perm: list[int],
    flips: tuple[int, int, int],
    rot: tuple[float, float, float],
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    suffix: str,
) -> None:
    columns = np.zeros((3, 3))
    for axis, (world, sign) in enumerate(zip(perm, flips, strict=True)):
        columns[world, axis] = sign
    direction = rotation(rot) @ columns
    xyz = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    image = sitk.GetImageFromArray(xyz.transpose(2, 1, 0).copy())
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"in{suffix}"
        sitk.WriteImage(image, str(source))
        volume = read_volume(source)
        out = Path(tmp) / f"out{suffix}"
        write_like(volume.array.astype(np.uint8), volume, out)
        original, written = sitk.ReadImage(str(source)), sitk.ReadImage(str(out))
        assert written.GetSize() == original.GetSize()
        if suffix == ".mha":  # MetaIO stores what it is given: bit-exact
            assert written.GetOrigin() == original.GetOrigin()
            assert written.GetSpacing() == original.GetSpacing()
            assert written.GetDirection() == original.GetDirection()
        else:  # NRRD stores spacing x direction vectors; ITK's norm round trip moves the last bit
            for get in ("GetOrigin", "GetSpacing", "GetDirection"):
                got, want = getattr(written, get)(), getattr(original, get)()
                np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-14, err_msg=get)
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(original)
        )


def test_nifti_reference_written_as_mha(make_nifti: NiftiMaker, tmp_path: Path) -> None:
    affine = make_affine(
        perm=(2, 0, 1), flips=(1, -1, 1), spacing=(0.5, 1, 3), angles=(0.2, 0, 0.1)
    )
    data = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    volume = read_volume(make_nifti("img.nii.gz", data, affine))
    out = tmp_path / "seg.mha"
    write_like(volume.array, volume, out)
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-5)
    # ...and an MHA reference written as NIfTI.
    write_like(back.array, back, tmp_path / "seg.nii.gz")
    again = read_volume(tmp_path / "seg.nii.gz")
    np.testing.assert_array_equal(again.array, volume.array)
    np.testing.assert_allclose(again.affine, volume.affine, atol=1e-5)


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_probability_channels_last(make_nifti: NiftiMaker, tmp_path: Path, suffix: str) -> None:
    affine = make_affine(perm=(1, 2, 0), flips=(-1, 1, -1))
    data = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    volume = read_volume(make_nifti("img.nii.gz", data, affine))
    probs = np.stack([volume.array * 1.0, volume.array * 2.0], axis=-1).astype(np.float32)
    out = tmp_path / f"probs{suffix}"
    write_like(probs, volume, out)
    if suffix == ".nii.gz":
        written = np.asanyarray(nib.load(out).dataobj)
    else:
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(out))).transpose(2, 1, 0, 3)
    assert written.shape == (3, 4, 5, 2)
    np.testing.assert_array_equal(written[..., 0], data)
    np.testing.assert_array_equal(written[..., 1], data * 2)


def test_identifying_fields_not_copied(tmp_path: Path) -> None:
    img = nib.Nifti1Image(np.zeros((3, 3, 3), np.int16), np.eye(4))
    img.header["descrip"] = b"Patient Jane Doe 1999-01-01"
    img.header["aux_file"] = b"jane.doe"
    img.header.set_intent("none", (), name="JaneDoe")
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"Jane Doe comment"))
    source = tmp_path / "img.nii.gz"
    nib.save(img, source)
    volume = read_volume(source)
    out = tmp_path / "seg.nii.gz"
    write_like(volume.array, volume, out)
    header = nib.load(out).header
    assert header["descrip"].tobytes().strip(b"\0") == b""
    assert header["aux_file"].tobytes().strip(b"\0") == b""
    assert header["intent_name"].tobytes().strip(b"\0") == b""
    assert len(header.extensions) == 0
    assert b"Jane" not in out.read_bytes()
    assert b"Jane" not in __import__("gzip").decompress(out.read_bytes())


def test_refuses_to_overwrite(make_nifti: NiftiMaker, tmp_path: Path) -> None:
    volume = read_volume(make_nifti("img.nii.gz", np.zeros((3, 3, 3), np.int16)))
    out = tmp_path / "seg.nii.gz"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        write_like(volume.array, volume, out)
    assert out.read_bytes() == b"keep me"
    write_like(volume.array + 1, volume, out, overwrite=True)
    np.testing.assert_array_equal(read_volume(out).array, 1)


def test_failed_write_leaves_nothing(
    make_nifti: NiftiMaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    volume = read_volume(make_nifti("img.nii.gz", np.zeros((3, 3, 3), np.int16)))
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def broken_save(image: object, filename: Path) -> None:
        Path(filename).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OutputError, match=r"seg.nii.gz: cannot be written: No space left"):
        write_like(volume.array, volume, out_dir / "seg.nii.gz")
    assert list(out_dir.iterdir()) == []


def test_bad_arrays_and_suffixes_refused_before_writing(
    make_nifti: NiftiMaker, tmp_path: Path
) -> None:
    volume = read_volume(make_nifti("img.nii.gz", np.zeros((3, 4, 5), np.int16)))
    with pytest.raises(VolumeError, match="does not match"):
        write_like(np.zeros((3, 4, 6)), volume, tmp_path / "a.nii.gz")
    with pytest.raises(VolumeError, match="3D or 4D"):
        write_like(np.zeros((3, 4)), volume, tmp_path / "b.nii.gz")
    with pytest.raises(VolumeError, match="unsupported output"):
        write_like(volume.array, volume, tmp_path / "c.png")
    with pytest.raises(VolumeError, match="voxel type"):
        write_like(volume.array.astype(np.complex64), volume, tmp_path / "d.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.nii.gz"]


def test_dtype_argument_and_bool(make_nifti: NiftiMaker, tmp_path: Path) -> None:
    volume = read_volume(make_nifti("img.nii.gz", np.zeros((3, 4, 5), np.int16)))
    write_like(volume.array > -1, volume, tmp_path / "mask.nii.gz")
    assert nib.load(tmp_path / "mask.nii.gz").get_data_dtype() == np.uint8
    write_like(volume.array, volume, tmp_path / "f.nii.gz", dtype=np.dtype(np.float32))
    assert nib.load(tmp_path / "f.nii.gz").get_data_dtype() == np.float32


def test_write_volume_codes_and_orientation(tmp_path: Path) -> None:
    affine = make_affine(perm=(2, 1, 0), flips=(-1, 1, 1), spacing=(2, 1, 0.5), origin=(1, 2, 3))
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    out = tmp_path / "phantom.nii.gz"
    write_volume(data, affine, out, qform_code=0, sform_code=2)
    img = nib.load(out)
    assert int(img.header["qform_code"]) == 0
    assert int(img.header["sform_code"]) == 2
    np.testing.assert_allclose(img.affine, affine, atol=1e-6)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), data)
    write_volume(data, affine, tmp_path / "phantom.mha")
    np.testing.assert_allclose(
        read_volume(tmp_path / "phantom.mha").affine, read_volume(out).affine, atol=1e-6
    )
    with pytest.raises(OutputExistsError):
        write_volume(data, affine, out)
    with pytest.raises(VolumeError, match="zero axis"):
        write_volume(data, np.diag([1.0, 1.0, 0.0, 1.0]), tmp_path / "bad.nii.gz")
    with pytest.raises(VolumeError, match="sform_code"):
        write_volume(data, affine, tmp_path / "bad.nii.gz", sform_code=9)
