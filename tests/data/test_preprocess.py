"""Slice axis choice, normalisation, in-plane resizing and its inverse."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pedseg.data.preprocess import (
    axis_for_spacing,
    prepare_volume,
    resize_slices,
    resolve_slice_axis,
    restore_slices,
)
from pedseg.domains.normalization import zscore
from pedseg.domains.spec import DomainSpec, SliceAxis
from pedseg.errors import VolumeError
from pedseg.io import Volume, read_label, read_volume


def _spec(slice_axis: SliceAxis = "auto", size: tuple[int, int] = (16, 16)) -> DomainSpec:
    return DomainSpec(
        name="toy",
        labels=((1, "a"), (2, "b")),
        normalization="zscore",
        slice_axis=slice_axis,
        image_size=size,
    )


def _volume(
    tmp_path: Path, array: np.ndarray, spacing: tuple[float, float, float], name: str = "v"
) -> Volume:
    path = tmp_path / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), path)
    return read_label(path) if array.dtype == np.uint8 else read_volume(path)


@pytest.mark.parametrize(
    ("spacing", "axis"),
    [
        ((1.0, 1.0, 3.0), 2),
        ((3.0, 1.0, 1.0), 0),
        ((0.91, 5.2, 0.91), 1),
        ((1.0, 1.0, 1.0), 2),  # isotropic: the last axis
        ((1.0, 3.0, 3.0), 2),  # tie: the last of the tied axes
        ((3.0, 3.0, 1.0), 1),
        ((1.2, 1.2000001, 0.4), 1),  # float noise counts as a tie
    ],
)
def test_auto_axis_is_largest_spacing(spacing: tuple[float, float, float], axis: int) -> None:
    assert axis_for_spacing("auto", spacing) == axis


def test_explicit_axis_wins() -> None:
    assert axis_for_spacing(0, (1.0, 1.0, 5.0)) == 0


def test_resolve_slice_axis_on_anisotropic_volume(tmp_path: Path) -> None:
    vol = _volume(tmp_path, np.zeros((8, 6, 4), np.float32), (0.5, 4.0, 0.5))
    assert resolve_slice_axis(_spec(), vol) == 1
    assert resolve_slice_axis(_spec(slice_axis=2), vol) == 2


def test_shapes_and_normalisation_without_resize(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    array = rng.normal(100, 20, size=(12, 10, 5)).astype(np.float32)
    vol = _volume(tmp_path, array, (1.0, 1.0, 3.0))
    stack = prepare_volume(vol, _spec(), image_size=(12, 10))
    assert stack.axis == 2
    assert stack.in_plane_shape == (12, 10)
    assert stack.images.dtype == np.float32
    assert stack.labels is None
    np.testing.assert_allclose(stack.images, np.moveaxis(zscore(vol.array), 2, 0), atol=1e-6)


def test_slices_along_axis_zero_keep_axis_order(tmp_path: Path) -> None:
    array = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    vol = _volume(tmp_path, array, (3.0, 1.0, 1.0))
    stack = prepare_volume(vol, _spec(), image_size=(6, 8))
    assert stack.axis == 0 and stack.images.shape == (4, 6, 8)
    # rows along y, columns along z, no flips: values increase along both
    np.testing.assert_allclose(stack.images, zscore(vol.array), atol=1e-6)
    assert np.all(np.diff(stack.images[0], axis=0) > 0)
    assert np.all(np.diff(stack.images[0], axis=1) > 0)


def test_resized_shapes_and_types(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    image = _volume(tmp_path, rng.normal(size=(20, 12, 6)).astype(np.float32), (1.0, 1.0, 3.0))
    label_array = rng.integers(0, 3, size=(20, 12, 6)).astype(np.uint8)
    label = _volume(tmp_path, label_array, (1.0, 1.0, 3.0), name="l")
    stack = prepare_volume(image, _spec(size=(32, 24)), label=label)
    assert stack.images.shape == (6, 32, 24) and stack.images.dtype == np.float32
    assert stack.labels is not None
    assert stack.labels.shape == (6, 32, 24) and stack.labels.dtype == np.uint8
    assert stack.in_plane_shape == (20, 12)
    assert set(np.unique(stack.labels).tolist()) <= {0, 1, 2}
    # default image size comes from the descriptor
    assert prepare_volume(image, _spec(size=(16, 16))).images.shape == (6, 16, 16)


def test_nearest_labels_keep_only_declared_ids_and_exact_copies(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    label_array = rng.integers(0, 3, size=(8, 7, 3)).astype(np.uint8)
    image = _volume(tmp_path, rng.normal(size=(8, 7, 3)).astype(np.float32), (1.0, 1.0, 2.0))
    label = _volume(tmp_path, label_array, (1.0, 1.0, 2.0), name="l")
    stack = prepare_volume(image, _spec(), image_size=(16, 14), label=label)
    assert stack.labels is not None
    # a factor-2 upsampling with nearest neighbours repeats every pixel 2x2
    expected = np.moveaxis(label_array, 2, 0).repeat(2, axis=1).repeat(2, axis=2)
    np.testing.assert_array_equal(stack.labels, expected)
    # a non-integer factor (7 -> 16) must not invent values either
    odd = prepare_volume(image, _spec(), image_size=(17, 16), label=label)
    assert odd.labels is not None
    assert set(np.unique(odd.labels).tolist()) == {0, 1, 2}


def test_undeclared_label_value_is_refused(tmp_path: Path) -> None:
    label_array = np.zeros((6, 6, 3), np.uint8)
    label_array[1, 1, 1] = 5
    image = _volume(tmp_path, np.ones((6, 6, 3), np.float32), (1.0, 1.0, 2.0))
    label = _volume(tmp_path, label_array, (1.0, 1.0, 2.0), name="l")
    with pytest.raises(VolumeError, match=r"label values \{5\} are not declared"):
        prepare_volume(image, _spec(), label=label)


def test_label_on_another_grid_is_refused(tmp_path: Path) -> None:
    image = _volume(tmp_path, np.ones((6, 6, 3), np.float32), (1.0, 1.0, 2.0))
    label = _volume(tmp_path, np.zeros((6, 6, 4), np.uint8), (1.0, 1.0, 2.0), name="l")
    with pytest.raises(VolumeError, match="does not match image shape"):
        prepare_volume(image, _spec(), label=label)


def test_bilinear_keeps_constants_and_ramps() -> None:
    const = np.full((2, 9, 7), 3.5, np.float32)
    np.testing.assert_allclose(resize_slices(const, (20, 13), mode="bilinear"), 3.5, rtol=1e-6)
    ramp = np.broadcast_to(np.arange(10, dtype=np.float32)[None, :, None], (1, 10, 4))
    up = resize_slices(ramp, (20, 4), mode="bilinear")
    # pixel-centre alignment: output row r samples input position (r + 0.5) / 2 - 0.5
    rows = np.clip((np.arange(20) + 0.5) / 2 - 0.5, 0, 9)
    np.testing.assert_allclose(up[0, :, 0], rows, atol=1e-5)


def _smooth_field(shape: tuple[int, ...]) -> np.ndarray:
    grids = np.meshgrid(*[np.linspace(0, 1, n) for n in shape], indexing="ij")
    return (np.sin(2 * grids[0]) + np.cos(3 * grids[1]) + grids[2] ** 2).astype(np.float32)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_restore_slices_inverts_resize(axis: int) -> None:
    shape = (40, 50, 36)
    field = _smooth_field(shape)
    channels = np.stack([field, 1.0 - field], axis=-1)  # (X, Y, Z, C)
    slices = np.moveaxis(channels, axis, 0)  # (S, A, B, C)
    in_plane = (int(slices.shape[1]), int(slices.shape[2]))
    small = np.stack(
        [resize_slices(slices[..., c], (64, 64), mode="bilinear") for c in range(2)], axis=1
    )
    restored = restore_slices(small, in_plane_shape=in_plane, axis=axis)
    assert restored.shape == (*shape, 2)
    assert restored.dtype == np.float32
    interior = restored[2:-2, 2:-2, 2:-2] - channels[2:-2, 2:-2, 2:-2]
    assert float(np.abs(interior).max()) < 0.02
    assert float(np.abs(restored - channels).max()) < 0.1


def test_restore_slices_without_resize_is_exact() -> None:
    rng = np.random.default_rng(3)
    volume = rng.random((5, 6, 7, 3)).astype(np.float32)
    for axis in (0, 1, 2):
        probs = np.moveaxis(volume, axis, 0).transpose(0, 3, 1, 2)  # (S, C, A, B)
        in_plane = (int(probs.shape[2]), int(probs.shape[3]))
        out = restore_slices(probs, in_plane_shape=in_plane, axis=axis)
        np.testing.assert_array_equal(out, volume)


def test_prepare_then_restore_round_trip(tmp_path: Path) -> None:
    field = _smooth_field((30, 26, 10)) * 50 + 200
    vol = _volume(tmp_path, field, (0.8, 0.8, 2.5))
    stack = prepare_volume(vol, _spec(), image_size=(48, 48))
    back = restore_slices(
        stack.images[:, None], in_plane_shape=stack.in_plane_shape, axis=stack.axis
    )
    assert back.shape == (30, 26, 10, 1)
    np.testing.assert_allclose(back[2:-2, 2:-2, :, 0], zscore(field)[2:-2, 2:-2], atol=0.02)


def test_restore_slices_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="slices, channels"):
        restore_slices(np.zeros((2, 3, 4), np.float32), in_plane_shape=(4, 4), axis=2)
    with pytest.raises(ValueError, match="axis"):
        restore_slices(np.zeros((2, 1, 4, 4), np.float32), in_plane_shape=(4, 4), axis=3)


def test_resize_of_no_slices() -> None:
    out = resize_slices(np.zeros((0, 5, 6), np.float32), (8, 8), mode="nearest")
    assert out.shape == (0, 8, 8)


def test_nearest_uses_pixel_centres() -> None:
    # 6 -> 4 columns: output centre c maps to input (c + 0.5) * 1.5, i.e. pixels 0, 2, 3, 5
    ids = np.broadcast_to(np.arange(6, dtype=np.float32), (1, 2, 6))
    out = resize_slices(ids, (2, 4), mode="nearest")
    np.testing.assert_array_equal(out[0, 0], [0, 2, 3, 5])


@pytest.mark.parametrize(
    "size", [(96, 96), (384, 384), (384, 376), (100, 130), (97, 200), (40, 40), (60, 130)]
)
def test_restore_argmax_equals_the_argmax_of_the_restored_probabilities(
    size: tuple[int, int],
) -> None:
    import torch

    from pedseg.data.preprocess import restore_argmax, restore_slices

    torch.manual_seed(0)
    coarse = torch.randn(6, 5, 12, 12) * 3
    probs = torch.softmax(
        torch.nn.functional.interpolate(coarse, size=(96, 96), mode="bilinear"), 1
    )
    probs_np = probs.numpy()
    expected = restore_slices(probs_np, in_plane_shape=size, axis=0).argmax(-1)
    got = restore_argmax(probs_np, in_plane_shape=size)
    assert got.shape == (6, *size) and np.array_equal(got, expected)
