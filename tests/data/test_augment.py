"""On-device augmentation: identity, label set, known transforms, seeding, batch independence."""

from __future__ import annotations

import math

import pytest
import torch

from pedseg.data.augment import (
    AugmentConfig,
    AugmentParams,
    apply_augmentation,
    augmentation_generator,
    identity_params,
    sample_params,
)
from pedseg.errors import ConfigError


def _batch(n: int = 4, h: int = 16, w: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn((n, 1, h, w), generator=gen)
    labels = torch.randint(0, 4, (n, h, w), generator=gen)
    return images, labels


def _params(flip: bool, degrees: float, shift: tuple[float, float]) -> AugmentParams:
    return AugmentParams(
        flip=torch.tensor([flip]),
        angle=torch.tensor([math.radians(degrees)]),
        shift=torch.tensor([shift]),
    )


def test_identity_params_give_identity() -> None:
    images, labels = _batch()
    out_images, out_labels = apply_augmentation(images, labels, identity_params(4))
    torch.testing.assert_close(out_images, images, atol=1e-5, rtol=0)
    assert torch.equal(out_labels, labels)
    assert out_labels.dtype == torch.long


def test_flip_mirrors_width() -> None:
    images, labels = _batch(1)
    out_images, out_labels = apply_augmentation(images, labels, _params(True, 0.0, (0.0, 0.0)))
    torch.testing.assert_close(out_images, images.flip(-1), atol=1e-5, rtol=0)
    assert torch.equal(out_labels, labels.flip(-1))


def test_flip_axis_per_sample_height_or_none() -> None:
    images, labels = _batch(3)
    params = AugmentParams(
        flip=torch.tensor([True, True, True]),
        angle=torch.zeros(3),
        shift=torch.zeros((3, 2)),
    ).with_flip_axes(["width", "height", "none"])
    out_images, out_labels = apply_augmentation(images, labels, params)
    expected = [images[0].flip(-1), images[1].flip(-2), images[2]]
    for got, want in zip(out_images, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert torch.equal(out_labels[1], labels[1].flip(-2))
    assert torch.equal(out_labels[2], labels[2])
    with pytest.raises(ConfigError, match="one flip axis per sample"):
        params.with_flip_axes(["width"])


def test_quarter_turn_is_a_rot90_on_square_images() -> None:
    images, labels = _batch(1, 12, 12)
    out_images, out_labels = apply_augmentation(images, labels, _params(False, 90.0, (0.0, 0.0)))
    rotated = [torch.rot90(images, k, dims=(2, 3)) for k in (1, -1)]
    assert any(torch.allclose(out_images, r, atol=1e-4) for r in rotated)
    assert any(torch.equal(out_labels, torch.rot90(labels, k, dims=(1, 2))) for k in (1, -1))


def test_translation_by_whole_pixels() -> None:
    images, labels = _batch(1, 16, 16)
    # shift 0.25 of the width: output pixel x samples input x + 4
    out_images, out_labels = apply_augmentation(images, labels, _params(False, 0.0, (0.25, 0.0)))
    torch.testing.assert_close(out_images[..., :12], images[..., 4:], atol=1e-5, rtol=0)
    assert torch.equal(out_labels[..., :12], labels[..., 4:])
    assert (out_labels[..., 12:] == 0).all()  # labels padded with background
    floor = images.amin()
    torch.testing.assert_close(out_images[..., 12:], torch.full_like(out_images[..., 12:], floor))


def test_labels_stay_in_label_set_under_random_transforms() -> None:
    images, labels = _batch(8)
    labels = labels * 2  # ids {0, 2, 4, 6}: interpolation would create odd values
    params = sample_params(8, config=AugmentConfig(), generator=augmentation_generator(0, 1, 1))
    out_images, out_labels = apply_augmentation(images, labels, params)
    assert set(out_labels.unique().tolist()) <= {0, 2, 4, 6}
    assert torch.isfinite(out_images).all()


def test_parameters_seeded_per_step_and_within_ranges() -> None:
    config = AugmentConfig()
    a = sample_params(64, config=config, generator=augmentation_generator(5, 2, 3))
    b = sample_params(64, config=config, generator=augmentation_generator(5, 2, 3))
    c = sample_params(64, config=config, generator=augmentation_generator(5, 2, 4))
    assert torch.equal(a.angle, b.angle) and torch.equal(a.shift, b.shift)
    assert torch.equal(a.flip, b.flip)
    assert not torch.equal(a.angle, c.angle)
    assert a.angle.abs().max() <= math.radians(45.0) + 1e-6
    assert a.shift.abs().max() <= 0.25 + 1e-6
    assert 0 < int(a.flip.sum()) < 64
    torch.manual_seed(123)  # the global RNG state must not matter
    d = sample_params(64, config=config, generator=augmentation_generator(5, 2, 3))
    assert torch.equal(a.angle, d.angle)


def test_each_sample_independent_of_batch_position() -> None:
    images, labels = _batch(6)
    params = sample_params(6, config=AugmentConfig(), generator=augmentation_generator(1, 1, 1))
    whole_images, whole_labels = apply_augmentation(images, labels, params)
    for i in (0, 3, 5):
        one_images, one_labels = apply_augmentation(
            images[i : i + 1], labels[i : i + 1], params.select([i])
        )
        torch.testing.assert_close(one_images, whole_images[i : i + 1], atol=1e-6, rtol=0)
        assert torch.equal(one_labels, whole_labels[i : i + 1])


def test_config_and_shape_validation() -> None:
    with pytest.raises(ConfigError, match=r"flip_probability must be in \[0, 1\], got 1.5"):
        AugmentConfig(flip_probability=1.5)
    with pytest.raises(ConfigError, match="max_rotation"):
        AugmentConfig(max_rotation=-1.0)
    images, labels = _batch(2)
    with pytest.raises(ConfigError, match="parameters for 3 samples"):
        apply_augmentation(images, labels, identity_params(3))
    with pytest.raises(ConfigError, match="labels"):
        apply_augmentation(images, labels[:, None], identity_params(2))
