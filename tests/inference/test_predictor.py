"""Whole-volume prediction: geometry, orientation invariance, resizing, post-processing.

The helpers at the top (a threshold "network", a toy descriptor, NIfTI writers) are shared with
``test_batch.py`` and ``tests/cli/test_predict_cli.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from pedseg.domains.spec import DomainSpec, PostprocessSpec
from pedseg.errors import ConfigError, ModelError
from pedseg.inference.backends import TorchBackend
from pedseg.inference.postprocess import postprocess
from pedseg.inference.predictor import ModelInfo, Predictor, label_dtype
from pedseg.io import read_volume, write_like
from tests.io.conftest import rotation

NO_POST = PostprocessSpec(largest_component=False, closing=False)


class ThresholdNet(nn.Module):
    """Label 1 where the normalised intensity is positive (z-score: above the volume's mean)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(torch.cat([-x, x], dim=1) * 8.0, dim=1)


def toy_spec(
    *,
    image_size: tuple[int, int] = (16, 16),
    postprocess: PostprocessSpec = NO_POST,
    slice_axis: str | int = "auto",
    labels: tuple[tuple[int, str], ...] = ((1, "bone"),),
) -> DomainSpec:
    return DomainSpec(
        name="toy",
        labels=labels,
        normalization="zscore",
        image_size=image_size,
        postprocess=postprocess,
        slice_axis=slice_axis,  # type: ignore[arg-type]
    )


def toy_info(spec: DomainSpec, *, sha: str = "0" * 64) -> ModelInfo:
    return ModelInfo(
        spec=spec, image_size=spec.image_size, model_sha256=sha, scheme="test", source=Path("toy")
    )


def threshold_predictor(spec: DomainSpec | None = None, **kwargs: object) -> Predictor:
    spec = spec if spec is not None else toy_spec()
    backend = TorchBackend(ThresholdNet(), device="cpu", threads=1)
    return Predictor(toy_info(spec), backend, **kwargs)  # type: ignore[arg-type]


def make_affine(
    *,
    perm: Sequence[int] = (0, 1, 2),
    flips: Sequence[int] = (1, 1, 1),
    spacing: Sequence[float] = (1.0, 1.0, 3.0),
    angles: Sequence[float] = (0.0, 0.0, 0.0),
    shape: Sequence[int] = (16, 16, 8),
) -> np.ndarray:
    """Voxel axis ``i`` points along world axis ``perm[i]`` (sign ``flips[i]``), then rotated.

    ``spacing`` and ``shape`` are per world axis: whatever the storage order, the voxel centres are
    the same world points (flipped axes start from the far end)."""
    columns = np.zeros((3, 3))
    origin = np.array([-7.0, 3.5, 12.0])
    for axis, (world, sign) in enumerate(zip(perm, flips, strict=True)):
        columns[world, axis] = sign * spacing[world]
        if sign < 0:
            origin[world] += (shape[world] - 1) * spacing[world]
    affine = np.eye(4)
    affine[:3, :3] = rotation(angles) @ columns
    affine[:3, 3] = rotation(angles) @ origin
    return affine


def phantom(shape: tuple[int, int, int] = (16, 16, 8), *, seed: int = 0) -> np.ndarray:
    """An asymmetric int16 blob image (values 0 or ~100) in canonical (world-aligned) order."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float64)
    centre = (
        np.array(shape, dtype=np.float64)[:, None, None, None]
        * np.array([0.4, 0.55, 0.5])[:, None, None, None]
    )
    radii = (
        np.array(shape, dtype=np.float64)[:, None, None, None]
        * np.array([0.3, 0.2, 0.35])[:, None, None, None]
    )
    inside = (((grid - centre) / radii) ** 2).sum(axis=0) <= 1.0
    inside[: shape[0] // 4, : shape[1] // 4, :2] = True  # a corner piece: breaks symmetries
    noise = rng.integers(0, 5, size=shape)
    return np.where(inside, 100 + noise, noise).astype(np.int16)


def store(
    path: Path,
    canonical: np.ndarray,
    *,
    perm: Sequence[int] = (0, 1, 2),
    flips: Sequence[int] = (1, 1, 1),
    angles: Sequence[float] = (0.0, 0.0, 0.0),
    spacing: Sequence[float] = (1.0, 1.0, 3.0),
    codes: tuple[int, int] = (1, 1),
) -> Path:
    """Write ``canonical`` (world-aligned array) stored with voxel axis ``i`` along world axis
    ``perm[i]`` (flipped where ``flips[i] < 0``)."""
    data = canonical
    for world, sign in enumerate(
        [flips[list(perm).index(w)] for w in range(3)]
    ):  # flip in world order, then permute to storage order
        if sign < 0:
            data = np.flip(data, axis=world)
    data = np.ascontiguousarray(np.transpose(data, perm))
    affine = make_affine(
        perm=perm, flips=flips, spacing=spacing, angles=angles, shape=canonical.shape
    )
    image = nib.Nifti1Image(data, None)
    image.header.set_qform(affine, code=codes[0])
    image.header.set_sform(affine, code=codes[1])
    nib.save(image, path)
    return path


LAYOUTS = {
    "ras": {},
    "permuted": {"perm": (2, 0, 1)},
    "flipped": {"flips": (-1, 1, -1)},
    "permuted-flipped": {"perm": (1, 2, 0), "flips": (1, -1, -1)},
    "oblique": {"perm": (1, 0, 2), "angles": (0.2, -0.1, 0.3)},
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_label_map_has_the_input_geometry(tmp_path: Path, layout: str) -> None:
    source = store(tmp_path / "in.nii.gz", phantom(), codes=(1, 2), **LAYOUTS[layout])  # type: ignore[arg-type]
    volume = read_volume(source)
    prediction = threshold_predictor().predict(volume)
    write_like(prediction.labels, volume, tmp_path / "out.nii.gz")
    original, written = nib.load(source), nib.load(tmp_path / "out.nii.gz")
    assert written.shape == original.shape
    assert np.array_equal(written.affine, original.affine)
    for coded in ("get_qform", "get_sform"):
        expected_matrix, expected_code = getattr(original.header, coded)(coded=True)
        matrix, code = getattr(written.header, coded)(coded=True)
        assert code == expected_code
        assert np.array_equal(matrix, expected_matrix)
    assert written.get_data_dtype() == np.uint8
    raw = np.asarray(original.dataobj)
    # no resizing (16x16 slices at image size 16x16): the threshold is exact, voxel for voxel on disk
    assert np.array_equal(np.asarray(written.dataobj), (raw > raw.mean()).astype(np.uint8))


def test_prediction_does_not_depend_on_storage_order(tmp_path: Path) -> None:
    torch.manual_seed(0)
    from pedseg.models import ModelConfig, build_model

    net = build_model(ModelConfig(base_width=4, depth=3), num_classes=[3]).eval()
    spec = toy_spec(image_size=(24, 16), labels=((1, "a"), (2, "b")))
    predictor = Predictor(toy_info(spec), TorchBackend(net.domain_view(0), device="cpu", threads=1))
    image = phantom((20, 12, 6))
    results = []
    for name, layout in (("ras", {}), ("other", {"perm": (2, 0, 1), "flips": (-1, 1, -1)})):
        source = store(tmp_path / f"{name}.nii.gz", image, **layout)  # type: ignore[arg-type]
        volume = read_volume(source)
        write_like(predictor.predict(volume).labels, volume, tmp_path / f"{name}_seg.nii.gz")
        canonical = nib.as_closest_canonical(nib.load(tmp_path / f"{name}_seg.nii.gz"))
        results.append((np.asarray(canonical.dataobj), canonical.affine))
    assert np.array_equal(results[0][0], results[1][0])
    assert np.allclose(results[0][1], results[1][1])


def test_resizing_keeps_the_segmentation(tmp_path: Path) -> None:
    from scipy import ndimage

    image = phantom((48, 40, 4))  # slices 48x40 -> network 32x32 -> back
    volume = read_volume(store(tmp_path / "in.nii.gz", image))
    labels = threshold_predictor(toy_spec(image_size=(32, 32))).predict(volume).labels
    expected = image > image.mean()
    assert labels.shape == image.shape
    # resampling only blurs the boundary: every error lies within one voxel of it (in plane)
    plane = np.ones((3, 3, 1), dtype=bool)
    band = ndimage.binary_dilation(expected, plane) & ~ndimage.binary_erosion(expected, plane)
    wrong = expected != (labels == 1)
    assert wrong.any() and not (wrong & ~band).any()
    dice = 2 * np.sum(expected & (labels == 1)) / (expected.sum() + np.sum(labels == 1))
    assert dice > 0.9


def test_probabilities_are_resized_before_the_argmax(tmp_path: Path) -> None:
    volume = read_volume(store(tmp_path / "in.nii.gz", phantom((24, 20, 5))))
    prediction = threshold_predictor(toy_spec(image_size=(16, 16))).predict(
        volume, keep_probabilities=True
    )
    probs = prediction.probabilities
    assert probs is not None and probs.shape == (24, 20, 5, 2) and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    assert np.array_equal(prediction.labels, np.argmax(probs, axis=-1))
    assert prediction.axis == 2  # "auto": the 3 mm axis


def test_postprocess_is_applied_in_3d(tmp_path: Path) -> None:
    image = phantom((16, 16, 8))
    image[14:16, 14:16, 6:8] = 100  # a small detached island: largest component removes it
    volume = read_volume(store(tmp_path / "in.nii.gz", image))
    post = PostprocessSpec(largest_component=True, closing=True, closing_radius=1.0)
    raw = threshold_predictor(toy_spec(postprocess=post), postprocess=False).predict(volume)
    clean = threshold_predictor(toy_spec(postprocess=post)).predict(volume)
    expected = postprocess(raw.labels, spec=post, spacing=volume.spacing, label_ids=[1])
    assert np.array_equal(clean.labels, expected)
    assert raw.labels[15, 15, 7] == 1 and clean.labels[15, 15, 7] == 0
    assert set(clean.timings) == {"preprocess", "inference", "postprocess"}


@pytest.mark.parametrize("batch_size", [1, 3, 8, 100])
def test_batch_size_does_not_change_the_result(tmp_path: Path, batch_size: int) -> None:
    volume = read_volume(store(tmp_path / "in.nii.gz", phantom((16, 16, 7))))
    reference = threshold_predictor(batch_size=8).predict(volume).labels
    assert np.array_equal(
        threshold_predictor(batch_size=batch_size).predict(volume).labels, reference
    )


def test_bad_batch_size_and_wrong_class_count(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="batch-size"):
        threshold_predictor(batch_size=0)
    spec = toy_spec(labels=((1, "a"), (2, "b")))  # 3 classes, ThresholdNet gives 2
    volume = read_volume(store(tmp_path / "in.nii.gz", phantom()))
    with pytest.raises(ModelError, match="2 classes"):
        threshold_predictor(spec).predict(volume)


def test_label_dtype() -> None:
    assert label_dtype(4) == np.uint8
    assert label_dtype(255) == np.uint8
    assert label_dtype(256) == np.uint16
