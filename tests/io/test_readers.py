"""read_volume: canonical orientation like nibabel, and a clear VolumeError for every bad input."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from pedseg.errors import ConfigError, VolumeError
from pedseg.io import is_volume_path, read_volume
from tests.io.conftest import NiftiMaker, make_affine, save_nifti


def _data(shape: tuple[int, ...] = (5, 6, 7), dtype: type = np.int16) -> np.ndarray:
    return np.arange(int(np.prod(shape))).reshape(shape).astype(dtype)


@pytest.mark.parametrize(
    ("perm", "flips", "angles"),
    [
        ((0, 1, 2), (1, 1, 1), (0.0, 0.0, 0.0)),
        ((1, 0, 2), (-1, 1, 1), (0.0, 0.0, 0.0)),
        ((2, 0, 1), (1, -1, -1), (0.0, 0.0, 0.0)),
        ((1, 2, 0), (-1, -1, -1), (0.3, -0.2, 0.5)),
        ((0, 2, 1), (1, 1, -1), (0.6, 0.1, -0.4)),  # strongly oblique
    ],
)
def test_canonical_array_equals_nibabel(
    make_nifti: NiftiMaker, perm: tuple[int, ...], flips: tuple[int, ...], angles: tuple[float, ...]
) -> None:
    affine = make_affine(
        perm=perm, flips=flips, spacing=(0.7, 1.1, 2.5), angles=angles, origin=(3, -4, 5)
    )
    path = make_nifti("img.nii.gz", _data(), affine)
    volume = read_volume(path)
    canonical = nib.as_closest_canonical(nib.load(path))
    expected = np.asanyarray(canonical.dataobj)
    assert volume.array.dtype == expected.dtype
    np.testing.assert_array_equal(volume.array, expected)
    np.testing.assert_allclose(volume.affine, canonical.affine, atol=1e-6)
    np.testing.assert_allclose(volume.spacing, canonical.header.get_zooms()[:3], rtol=1e-5)
    assert volume.source.shape == (5, 6, 7)
    assert volume.source.format == "nifti"
    assert volume.path == path
    assert volume.array.flags.writeable


def test_scaled_and_uncompressed_nifti_match_nibabel(tmp_path: Path) -> None:
    img = nib.Nifti1Image(_data(), make_affine(perm=(2, 1, 0)))
    img.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / "scaled.nii"
    nib.save(img, path)
    volume = read_volume(path)
    expected = np.asanyarray(nib.as_closest_canonical(nib.load(path)).dataobj)
    assert volume.array.dtype == expected.dtype
    np.testing.assert_array_equal(volume.array, expected)


def test_nifti2_is_read(tmp_path: Path) -> None:
    path = save_nifti(tmp_path / "n2.nii.gz", _data(), make_affine(flips=(-1, 1, 1)), nifti2=True)
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, _data()[::-1])
    assert isinstance(volume.source.header, nib.Nifti2Header)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VolumeError, match="does not exist"):
        read_volume(tmp_path / "nope.nii.gz")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.nii.gz"
    path.write_bytes(b"")
    with pytest.raises(VolumeError, match="is empty"):
        read_volume(path)


def test_truncated_nii_gz(make_nifti: NiftiMaker) -> None:
    rng = np.random.default_rng(0)
    path = make_nifti("img.nii.gz", rng.integers(0, 1000, (16, 16, 16)).astype(np.int16))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])
    with pytest.raises(VolumeError, match="truncated"):
        read_volume(path)


def test_gzip_cut_inside_voxels_but_stream_complete(tmp_path: Path) -> None:
    """A complete gzip stream holding fewer voxels than the header declares is truncated too."""
    good = tmp_path / "good.nii"
    nib.save(nib.Nifti1Image(_data(), np.eye(4)), good)
    raw = good.read_bytes()
    path = tmp_path / "short.nii.gz"
    path.write_bytes(gzip.compress(raw[:-20]))
    with pytest.raises(VolumeError, match="truncated"):
        read_volume(path)


def test_truncated_uncompressed_nii(tmp_path: Path) -> None:
    path = tmp_path / "img.nii"
    nib.save(nib.Nifti1Image(_data(), np.eye(4)), path)
    raw = path.read_bytes()
    path.write_bytes(raw[:-10])
    with pytest.raises(VolumeError, match="truncated"):
        read_volume(path)


def test_text_file_named_nii_gz(tmp_path: Path) -> None:
    path = tmp_path / "notes.nii.gz"
    path.write_text("this is not an image\n")
    with pytest.raises(VolumeError, match="not a readable NIfTI"):
        read_volume(path)


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(VolumeError, match="unsupported file type"):
        read_volume(path)


def test_singular_affine(make_nifti: NiftiMaker) -> None:
    affine = np.array([[1.0, 1.0, 0, 0], [1.0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    path = make_nifti("img.nii.gz", _data(), affine, qform_affine=np.eye(4), qform_code=0)
    with pytest.raises(VolumeError, match="singular"):
        read_volume(path)


def test_zero_spacing(make_nifti: NiftiMaker) -> None:
    affine = np.diag([1.0, 0.0, 1.0, 1.0])
    path = make_nifti("img.nii.gz", _data(), affine, qform_affine=np.eye(4), qform_code=0)
    with pytest.raises(VolumeError, match="zero axis"):
        read_volume(path)


def test_nan_voxels(make_nifti: NiftiMaker) -> None:
    data = _data(dtype=np.float32)
    data[1, 2, 3] = np.nan
    data[0, 0, 0] = np.inf
    path = make_nifti("img.nii.gz", data)
    with pytest.raises(VolumeError, match="2 NaN or infinite"):
        read_volume(path)


def test_4d_with_time_points_refused(make_nifti: NiftiMaker) -> None:
    path = make_nifti("img.nii.gz", _data((4, 4, 4, 3)))
    with pytest.raises(VolumeError, match=r"4D with shape \(4, 4, 4, 3\)"):
        read_volume(path)


def test_4d_trailing_singleton_accepted(make_nifti: NiftiMaker) -> None:
    data = _data((4, 5, 6, 1))
    path = make_nifti("img.nii.gz", data, make_affine(flips=(1, -1, 1)))
    volume = read_volume(path)
    assert volume.array.shape == (4, 5, 6)
    np.testing.assert_array_equal(volume.array, data[:, ::-1, :, 0])
    assert volume.source.shape == (4, 5, 6)


def test_2d_refused(tmp_path: Path) -> None:
    path = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(_data((4, 5)), np.eye(4)), path)
    with pytest.raises(VolumeError, match="2D"):
        read_volume(path)


def test_over_max_bytes_refused_before_decoding(make_nifti: NiftiMaker) -> None:
    path = make_nifti("img.nii.gz", _data((8, 8, 8)))  # 1024 bytes of int16
    assert read_volume(path, max_bytes=1024).array.shape == (8, 8, 8)
    with pytest.raises(VolumeError, match="limit"):
        read_volume(path, max_bytes=1023)
    # The size is checked from the header: a truncated file over the limit reports the size.
    big = make_nifti("big.nii.gz", np.random.default_rng(0).normal(size=(32, 32, 32)))
    raw = big.read_bytes()
    big.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(VolumeError, match="limit"):
        read_volume(big, max_bytes=100)
    with pytest.raises(VolumeError, match="truncated"):
        read_volume(big)
    with pytest.raises(ConfigError, match="max_bytes"):
        read_volume(path, max_bytes=0)


def test_max_bytes_none_means_no_limit(make_nifti: NiftiMaker) -> None:
    path = make_nifti("img.nii.gz", _data((8, 8, 8)))
    assert read_volume(path, max_bytes=None).array.shape == (8, 8, 8)


# --------------------------------------------------------------------------------- ITK formats


def _itk_image(array_zyx: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing((0.5, 0.75, 2.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection((0, 1, 0, -1, 0, 0, 0, 0, 1))
    return image


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_itk_geometry_becomes_ras(tmp_path: Path, suffix: str) -> None:
    xyz = _data((4, 5, 6))
    zyx = xyz.transpose(2, 1, 0).copy()  # SimpleITK arrays are (z, y, x)
    path = tmp_path / f"img{suffix}"
    sitk.WriteImage(_itk_image(zyx), str(path))
    volume = read_volume(path)
    # NIfTI written by hand with the equivalent RAS affine must give the same canonical volume.
    lps = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1.0]]) @ np.diag([0.5, 0.75, 2.0])
    affine = np.eye(4)
    affine[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ lps
    affine[:3, 3] = [-10.0, 20.0, 30.0]
    reference = save_nifti(tmp_path / "ref.nii.gz", xyz, affine)
    expected = read_volume(reference)
    np.testing.assert_array_equal(volume.array, expected.array)
    np.testing.assert_allclose(volume.affine, expected.affine, atol=1e-6)
    assert volume.source.format == suffix[1:]


def test_truncated_mha(tmp_path: Path) -> None:
    path = tmp_path / "img.mha"
    sitk.WriteImage(_itk_image(_data()), str(path))
    raw = path.read_bytes()
    path.write_bytes(raw[:-40])
    with pytest.raises(VolumeError, match="truncated or corrupt"):
        read_volume(path)


def test_text_file_named_mha(tmp_path: Path) -> None:
    path = tmp_path / "img.mha"
    path.write_text("hello\n")
    with pytest.raises(VolumeError, match="not a readable MHA"):
        read_volume(path)


def test_itk_4d_trailing_singleton_and_vector(tmp_path: Path) -> None:
    single = tmp_path / "t1.mha"
    volume_3d = sitk.GetImageFromArray(_data((3, 4, 5)))  # x=5, y=4, z=3
    sitk.WriteImage(sitk.JoinSeries([volume_3d]), str(single))
    volume = read_volume(single)
    np.testing.assert_array_equal(volume.array, _data((3, 4, 5)).transpose(2, 1, 0)[::-1, ::-1])
    several = tmp_path / "t3.mha"
    sitk.WriteImage(sitk.JoinSeries([volume_3d, volume_3d]), str(several))
    with pytest.raises(VolumeError, match="4D"):
        read_volume(several)
    vector = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.GetImageFromArray(_data((3, 4, 5, 3)), isVector=True), str(vector))
    with pytest.raises(VolumeError, match="3 components"):
        read_volume(vector)


def test_itk_over_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "img.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(_data((4, 4, 4))), str(path))  # 128 bytes
    with pytest.raises(VolumeError, match="limit"):
        read_volume(path, max_bytes=127)


def test_is_volume_path(tmp_path: Path) -> None:
    for name in ("a.nii", "a.NII.GZ", "a.mha", "a.mhd", "a.nrrd", "a.nhdr"):
        assert is_volume_path(tmp_path / name), name
    for name in ("a.gz", "a.png", "a.json", "._a.nii.gz", ".a.nii.gz.x1.tmp.nii.gz"):
        assert not is_volume_path(tmp_path / name), name
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "notes.txt").write_text("x")
    assert not is_volume_path(plain)


@pytest.mark.realdata
def test_real_pelvis_case_round_trip(shared_data: Path, tmp_path: Path) -> None:
    from pedseg.io import check_pair, read_label, write_like

    image_path = shared_data / "pelvis" / "imagesTr" / "pelvis_01.nii.gz"
    label_path = shared_data / "pelvis" / "labelsTr" / "pelvis_01.nii.gz"
    image = read_volume(image_path)
    label = read_label(label_path, allowed=range(5))
    check_pair(image, label)
    expected = np.asanyarray(nib.as_closest_canonical(nib.load(image_path)).dataobj)
    np.testing.assert_array_equal(image.array, expected)
    out = tmp_path / "seg.nii.gz"
    write_like(label.array, image, out)
    written, original = nib.load(out), nib.load(label_path)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), np.asanyarray(original.dataobj))
    np.testing.assert_array_equal(
        written.header.get_sform(), nib.load(image_path).header.get_sform()
    )


# ------------------------------------------------------------- which transform was used, and why


def test_disagreeing_qform_and_sform_say_which_was_used(
    make_nifti: NiftiMaker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pedseg.io import write_like
    from tests.io.test_writers import GEOMETRY_FIELDS

    caplog.set_level("INFO", logger="pedseg.io.readers")
    sform = make_affine(spacing=(0.8, 0.8, 2.0), origin=(10, -20, 30))
    qform = make_affine(spacing=(0.8, 0.8, 2.0), origin=(15, -20, 30))  # 5 mm along x
    path = make_nifti("img.nii.gz", _data(), sform, qform_affine=qform, qform_code=1, sform_code=2)
    volume = read_volume(path)
    assert volume.source.affine_source == "sform"
    np.testing.assert_allclose(volume.source.affine, sform)
    assert volume.warnings == (
        "qform and sform disagree (by up to 5 mm at the volume's corners); pedseg used the sform "
        "(sform_code 2, qform_code 1), as nibabel does; tools that prefer the qform place this "
        "scan differently",
    )
    assert f"{path}: qform and sform disagree" in caplog.text
    labels = volume.with_array((volume.array > 10).astype(np.uint8))
    assert labels.warnings == volume.warnings
    out = tmp_path / "seg.nii.gz"
    write_like(labels.array, labels, out)
    written, original = nib.load(out).header, nib.load(path).header
    for field in (*GEOMETRY_FIELDS, "pixdim"):  # both transforms go back bit for bit
        assert written[field].tobytes() == original[field].tobytes(), field


def test_micrometre_quaternion_rounding_is_no_disagreement(make_nifti: NiftiMaker) -> None:
    """The real pelvis scans' qform differs from their sform by ~3 um (a quaternion cannot hold a
    slight shear): not worth a warning."""
    sform = make_affine(spacing=(0.8, 0.8, 2.0), origin=(10, -20, 30))
    qform = make_affine(spacing=(0.8, 0.8, 2.0), origin=(10.003, -20, 30))
    path = make_nifti("img.nii.gz", _data(), sform, qform_affine=qform, qform_code=1, sform_code=1)
    assert read_volume(path).warnings == ()


@pytest.mark.parametrize(
    ("qform_code", "sform_code", "source", "warned"),
    [
        (1, 1, "sform", False),
        (1, 0, "qform", False),
        (0, 1, "sform", False),
        (0, 0, "pixdim", True),
    ],
)
def test_affine_source_of_agreeing_or_single_transforms(
    make_nifti: NiftiMaker, qform_code: int, sform_code: int, source: str, warned: bool
) -> None:
    affine = make_affine(spacing=(0.7, 1.1, 2.5), angles=(0.3, -0.2, 0.5), origin=(3, -4, 5))
    path = make_nifti(
        "img.nii.gz", _data(), affine, qform_code=qform_code, sform_code=sform_code
    )  # an oblique qform is stored as float32 quaternions: rounding is not a disagreement
    volume = read_volume(path)
    assert volume.source.affine_source == source
    assert bool(volume.warnings) == warned
    if warned:
        assert volume.warnings[0].startswith("neither qform nor sform is set (both codes 0)")


def test_itk_formats_record_their_affine_source(tmp_path: Path) -> None:
    image = sitk.GetImageFromArray(_data().astype(np.int16))
    sitk.WriteImage(image, str(tmp_path / "img.mha"))
    volume = read_volume(tmp_path / "img.mha")
    assert volume.source.affine_source == "itk" and volume.warnings == ()


def test_corrupt_mha_header_prints_nothing_itself(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.mha"
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 4 zz\nElementDataFile = LOCAL\n")
    capfd.readouterr()
    with pytest.raises(VolumeError, match="is not a readable MHA file"):
        read_volume(path)
    assert capfd.readouterr().err == ""  # MetaIO's own lines ("M_Read: Error parsing") are kept out
