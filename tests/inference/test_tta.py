"""Flip test-time augmentation: the mirror of the domain's training flip, mirrored back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pedseg.errors import ConfigError
from pedseg.inference.predictor import Predictor
from pedseg.inference.tta import FlipTTA, with_tta
from pedseg.io import read_volume
from tests.inference.test_predictor import ThresholdNet, phantom, store, toy_info, toy_spec


class RampBackend:
    """Probability of class 1 grows with the column index (or row index): not flip-equivariant,
    so the average over the flip differs from the plain output in a known way."""

    name = "test"
    device = "cpu"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.calls: list[np.ndarray] = []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls.append(images.copy())
        n, _, h, w = images.shape
        ramp = np.linspace(0.0, 1.0, w if self.dim == 3 else h, dtype=np.float32)
        shape = (1, 1, 1, w) if self.dim == 3 else (1, 1, h, 1)
        fg = np.broadcast_to(ramp.reshape(shape), (n, 1, h, w)) * 0.5 + images * 0.0 + 0.25
        return np.concatenate([1.0 - fg, fg], axis=1).astype(np.float32)


@pytest.mark.parametrize(("axis", "dim"), [("width", 3), ("height", 2)])
def test_the_mirrored_pass_is_mirrored_back_before_the_mean(axis: str, dim: int) -> None:
    images = np.random.default_rng(0).normal(size=(2, 1, 6, 8)).astype(np.float32)
    inner = RampBackend(dim)
    probs = FlipTTA(inner, axis=axis)(images)
    assert len(inner.calls) == 2
    np.testing.assert_array_equal(inner.calls[1], np.flip(images, axis=dim))
    # the ramp and its mirror average to a constant 0.5 foreground probability
    np.testing.assert_allclose(probs[:, 1], 0.5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert probs.shape == (2, 2, 6, 8)


def test_an_equivariant_network_is_unchanged_by_tta() -> None:
    from pedseg.inference.backends import TorchBackend

    backend = TorchBackend(ThresholdNet(), device="cpu", threads=1)
    images = np.random.default_rng(1).normal(size=(3, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(FlipTTA(backend, axis="width")(images), backend(images), atol=1e-6)


def test_no_flip_domain_gets_no_tta_and_unknown_axis_is_refused() -> None:
    inner = RampBackend(3)
    assert with_tta(inner, "none") is inner  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="height, width, got 'depth'"):
        FlipTTA(inner, axis="depth")  # type: ignore[arg-type]


def test_the_predictor_runs_tta_only_for_domains_trained_with_flips(tmp_path: Path) -> None:
    volume = read_volume(store(tmp_path / "in.nii.gz", phantom((16, 16, 6))))
    flipping = toy_spec()
    still = replace(toy_spec(), flip="none")
    for spec, expected_calls in ((flipping, 2), (still, 1)):
        inner = RampBackend(3)
        predictor = Predictor(toy_info(spec), inner, tta=True, batch_size=64)  # type: ignore[arg-type]
        assert predictor.tta is (spec.flip != "none")
        labels = predictor.predict(volume).labels
        assert labels.shape == volume.array.shape
        assert len(inner.calls) == expected_calls


def test_tta_embedding_is_the_unflipped_pass(tmp_path: Path) -> None:
    """With TTA the domain check still gets the plain slices' embedding (what the profiles were
    measured on) and the same averaged probabilities as without asking for it."""
    import torch

    from pedseg.inference.backends import TorchBackend, embedding_call
    from tests.inference.test_backends import tiny_domain_model

    model, _ = tiny_domain_model(tmp_path)
    backend = TorchBackend(model.module, device="cpu", threads=1)
    tta = FlipTTA(backend, axis="width")
    call = embedding_call(tta)
    assert call is not None
    x = np.random.default_rng(3).standard_normal((2, 1, 16, 16)).astype(np.float32)
    probabilities, z = call(x)
    np.testing.assert_allclose(probabilities, tta(x), atol=1e-6)
    with torch.inference_mode():
        expected = model.module.net.embed(torch.from_numpy(x), 0).numpy()
    np.testing.assert_allclose(z, expected, atol=1e-5, rtol=1e-5)
    assert embedding_call(FlipTTA(TorchBackend(ThresholdNet(), device="cpu"), axis="width")) is None
