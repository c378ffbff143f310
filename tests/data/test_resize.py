"""pedseg.data.resize: numpy resizing equal to torch's interpolate (torch is the reference here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pedseg.data.resize import bilinear_sources, bilinear_weights, nearest_indices, resize_slices

SIZES = [1, 2, 5, 7, 31, 77, 96, 224, 384]


def _torch(x: np.ndarray, size: tuple[int, int], mode: str, antialias: bool) -> np.ndarray:
    tensor = torch.from_numpy(x)[:, None]
    if mode == "nearest":
        out = torch.nn.functional.interpolate(tensor, size=size, mode="nearest-exact")
    else:
        out = torch.nn.functional.interpolate(
            tensor, size=size, mode="bilinear", align_corners=False, antialias=antialias
        )
    return out[:, 0].numpy()


@pytest.mark.parametrize("antialias", [True, False])
@pytest.mark.parametrize("in_n", SIZES)
def test_bilinear_equals_torch(in_n: int, antialias: bool) -> None:
    rng = np.random.default_rng(in_n)
    x = rng.standard_normal((2, in_n, in_n + 3)).astype(np.float32)
    for out_n in (1, 3, 13, 64, 96, 192, 256):
        size = (out_n, out_n + 1)
        got = resize_slices(x, size, mode="bilinear", antialias=antialias)
        np.testing.assert_allclose(got, _torch(x, size, "bilinear", antialias), rtol=0, atol=2e-6)
        assert got.dtype == np.float32 and got.shape == (2, *size)


@pytest.mark.parametrize("in_n", SIZES)
def test_nearest_equals_torch_nearest_exact_off_ties(in_n: int) -> None:
    # torch computes the source in floating point: where an output centre lies exactly on the
    # border of two input pixels ((2i + 1) * in_n divisible by 2 * out_n) it may pick either.
    x = np.arange(2 * in_n * (in_n + 2), dtype=np.float32).reshape(2, in_n, in_n + 2)
    for out_n in (1, 3, 13, 64, 96, 141, 192, 256):
        size = (out_n, out_n + 2)
        got, want = resize_slices(x, size, mode="nearest"), _torch(x, size, "nearest", False)
        rows = ((2 * np.arange(size[0]) + 1) * in_n) % (2 * size[0]) == 0
        cols = ((2 * np.arange(size[1]) + 1) * (in_n + 2)) % (2 * size[1]) == 0
        off_tie = ~rows[:, None] & ~cols[None, :]
        np.testing.assert_array_equal(got[:, off_tie], want[:, off_tie])


def test_nearest_ties_take_the_upper_pixel() -> None:
    # 2 -> 141: output 70's centre is exactly on the border of pixels 0 and 1
    assert nearest_indices(141, 2)[70] == 1
    assert nearest_indices(2, 4).tolist() == [1, 3]  # centres 1.0 and 3.0: on borders
    assert nearest_indices(4, 2).tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("antialias", [True, False])
def test_weights_are_a_partition_of_unity(antialias: bool) -> None:
    for out_n, in_n in ((96, 384), (384, 96), (192, 77), (5, 5), (1, 9)):
        matrix = bilinear_weights(out_n, in_n, antialias=antialias)
        assert matrix.shape == (out_n, in_n) and matrix.dtype == np.float32
        assert (matrix >= 0).all()
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-6)


def test_plain_bilinear_sources_clamp_at_the_edges() -> None:
    first, second, weight = bilinear_sources(8, 4)
    assert first.min() == 0 and second.max() == 3
    assert weight[0] == 0.0 and weight[-1] == 0.0  # clamped: a single source at either end
    assert ((weight >= 0) & (weight < 1)).all()


def test_nearest_indices_stay_inside() -> None:
    for out_n, in_n in ((1, 1), (7, 3), (3, 7), (384, 96)):
        index = nearest_indices(out_n, in_n)
        assert index.min() >= 0 and index.max() <= in_n - 1


def test_same_size_copies_and_empty_stacks() -> None:
    x = np.ones((2, 4, 5), dtype=np.float32)
    out = resize_slices(x, (4, 5), mode="bilinear")
    assert out is not x and np.array_equal(out, x)
    assert resize_slices(np.zeros((0, 4, 5), np.float32), (2, 3), mode="nearest").shape == (0, 2, 3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "cubic"}, "mode must be 'bilinear' or 'nearest', got 'cubic'"),
        ({"mode": "bilinear", "size": (0, 3)}, "size must be two positive integers"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    options = {"size": (3, 3), **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resize_slices(np.zeros((1, 4, 4), np.float32), **options)  # type: ignore[arg-type]


def test_slices_must_be_a_stack() -> None:
    with pytest.raises(ValueError, match=r"slices must be \(slices, h, w\), got shape \(4, 4\)"):
        resize_slices(np.zeros((4, 4), np.float32), (2, 2), mode="bilinear")
