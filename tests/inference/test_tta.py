"""Test-time augmentation: the mirror of the domain's training flip, mirrored back; shifts along a
label chain, shifted back and averaged over the views that saw each row."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pedseg.data.label_chain import LabelChain
from pedseg.errors import ConfigError
from pedseg.inference.predictor import Predictor
from pedseg.inference.tta import FlipTTA, ShiftTTA, chain_shifts, with_tta
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


class RowBackend:
    """Foreground probability = the input itself (clipped to [0, 1]), plus a record of the inputs:
    shift-equivariant, so the shifted-back views agree with the plain one wherever they saw it."""

    name = "test"
    device = "cpu"

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.calls: list[np.ndarray] = []

    def __call__(self, images: np.ndarray) -> np.ndarray:
        self.calls.append(images.copy())
        fg = np.clip(images + self.offset, 0.0, 1.0).astype(np.float32)
        return np.concatenate([1.0 - fg, fg], axis=1)


@pytest.mark.parametrize("dim", [2, 3])
def test_shifted_views_are_shifted_back_and_filled_with_the_slice_minimum(dim: int) -> None:
    images = np.random.default_rng(4).uniform(0.2, 0.8, size=(3, 1, 7, 9)).astype(np.float32)
    inner = RowBackend()
    probs = ShiftTTA(inner, dim=dim, shifts=(-2, 0, 3))(images)  # type: ignore[arg-type]
    assert len(inner.calls) == 3  # plain, -2, +3 (a zero shift is the plain pass)
    np.testing.assert_allclose(probs, inner(images), atol=1e-6)  # equivariant: unchanged
    plus = inner.calls[2]  # shifted by +3: input row r at r + 3, rows 0-2 filled
    np.testing.assert_array_equal(
        np.take(plus, range(3, images.shape[dim]), axis=dim),
        np.take(images, range(images.shape[dim] - 3), axis=dim),
    )
    floor = images.min(axis=(1, 2, 3))
    for n in range(3):
        np.testing.assert_array_equal(np.take(plus[n], range(3), axis=dim - 1), floor[n])


def test_rows_are_averaged_over_the_views_that_saw_them() -> None:
    """A network that adds 0.1 to the foreground of rows at or beyond row 4 of its input: which
    rows of the original land there differs per view, and each row's mean counts only its views."""

    class Ramp(RowBackend):
        def __call__(self, images: np.ndarray) -> np.ndarray:
            out = super().__call__(images)
            out[:, 1, 4:] += 0.1
            return out

    images = np.full((1, 1, 6, 2), 0.5, dtype=np.float32)
    probs = ShiftTTA(Ramp(), dim=2, shifts=(-2, 2))(images)  # type: ignore[arg-type]
    # row r is seen at r (plain), r - 2 (shift -2, rows 2-5), r + 2 (shift +2, rows 0-3)
    expected = []
    for r in range(6):
        views = [r] + ([r - 2] if r >= 2 else []) + ([r + 2] if r <= 3 else [])
        expected.append(0.5 + 0.1 * np.mean([v >= 4 for v in views]))
    np.testing.assert_allclose(probs[0, 1, :, 0], expected, atol=1e-6)


def test_chain_shifts_are_half_and_one_gap_either_way() -> None:
    assert chain_shifts(36.0) == (-36, -18, 18, 36)
    assert chain_shifts(3.0) == (-3, -2, 2, 3)
    assert chain_shifts(0.4) == ()
    with pytest.raises(ConfigError, match="must be 2 or 3, got 1"):
        ShiftTTA(RowBackend(), dim=1, shifts=(1,))  # type: ignore[arg-type]


def _chain(axis: int) -> LabelChain:
    return LabelChain(
        ("bone",), axis=axis, gap_mm=4.0, extent_mm=3.0, volume_mm3=10.0, min_unit_mm3=1.0
    )


def test_the_predictor_shifts_along_an_in_plane_chain_only(tmp_path: Path) -> None:
    # canonical (16, 16, 6) at 1 x 1 x 3 mm; the toy slices along the last (thickest) axis, so
    # axes 0 and 1 are in plane: a 4 mm gap is 4 px at 16² -> shifts -4, -2, 2, 4 (5 passes)
    volume = read_volume(store(tmp_path / "in.nii.gz", phantom((16, 16, 6))))
    spec = replace(toy_spec(), flip="none")
    for axis, passes in ((0, 5), (1, 5), (2, 1)):
        inner = RowBackend()
        info = replace(toy_info(spec), label_chain=_chain(axis))
        predictor = Predictor(info, inner, tta=True, batch_size=64)  # type: ignore[arg-type]
        assert predictor.tta and predictor.tta_name == "chain-shifts"
        prediction = predictor.predict(volume, embed=True)
        assert prediction.labels.shape == volume.array.shape
        assert len(inner.calls) == passes, axis
        assert prediction.tta == ("chain-shifts" if passes == 5 else "")  # what ran on it
        if passes == 5:
            assert inner.calls[0].shape[0] == 6  # one batch of the six slices
    plain = Predictor(replace(toy_info(spec), label_chain=_chain(0)), RowBackend(), tta=False)  # type: ignore[arg-type]
    assert not plain.tta and plain.tta_name == ""
    both = Predictor(replace(toy_info(toy_spec()), label_chain=_chain(0)), RowBackend(), tta=True)  # type: ignore[arg-type]
    assert both.tta_name == f"flip-{toy_spec().flip}+chain-shifts"
