"""Surface voxels and surface distances against hand-derived values and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage
from scipy.spatial.distance import cdist

from pedseg.errors import ConfigError
from pedseg.evaluation.surface import (
    check_spacing,
    directed_distances,
    distance_metrics,
    surface_mask,
    union_bbox,
    worst_distance,
)


def _brute_force(a: np.ndarray, b: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Pooled symmetric surface distances: scipy erosion surfaces + all-pairs cdist, no cropping."""
    structure = ndimage.generate_binary_structure(a.ndim, 1)
    surf_a = a & ~ndimage.binary_erosion(a, structure, border_value=0)
    surf_b = b & ~ndimage.binary_erosion(b, structure, border_value=0)
    pa = np.argwhere(surf_a) * np.asarray(spacing)
    pb = np.argwhere(surf_b) * np.asarray(spacing)
    d = cdist(pa, pb)
    return np.concatenate([d.min(axis=1), d.min(axis=0)])


def _box(shape: tuple[int, ...], lo: tuple[int, ...], hi: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return mask


# ----------------------------------------------------------------------------- surface voxels


def test_surface_of_a_cube_excludes_only_its_interior() -> None:
    cube = _box((7, 7, 7), (2, 2, 2), (5, 5, 5))
    surface = surface_mask(cube)
    assert surface.sum() == 26
    assert not surface[3, 3, 3]
    assert not (surface & ~cube).any()


def test_outside_the_array_counts_as_background() -> None:
    full = np.ones((3, 4, 3), dtype=bool)
    surface = surface_mask(full)
    assert surface.sum() == full.size - 2  # only voxels (1, 1, 1) and (1, 2, 1) are interior
    assert not surface[1, 1, 1] and not surface[1, 2, 1]


def test_diagonal_background_neighbours_do_not_make_a_surface_voxel() -> None:
    # A plus-shaped 2D region: the centre has only diagonal background neighbours.
    plus = np.zeros((5, 5), dtype=bool)
    plus[1:4, 2] = True
    plus[2, 1:4] = True
    surface = surface_mask(plus)
    assert not surface[2, 2]
    assert surface.sum() == 4


def test_union_bbox() -> None:
    a = _box((6, 6, 6), (1, 2, 3), (2, 3, 4))
    b = _box((6, 6, 6), (4, 0, 3), (5, 1, 6))
    assert union_bbox(a, b) == (slice(1, 5), slice(0, 3), slice(3, 6))
    assert union_bbox(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) is None


# ----------------------------------------------------------------------------- analytic cases


def test_cube_shifted_by_one_thick_slice() -> None:
    """Two 4x4x4 cubes, the second one slice (5 mm) further along axis 2, spacing 0.5 x 0.5 x 5.

    Each cube has 64 - 8 = 56 surface voxels. From A to B: A's bottom face (16 voxels, z = 2) is
    5 mm from B's bottom face; the 4 inner voxels of A's top face (z = 5) lie inside B, 0.5 mm
    (one in-plane voxel) from B's side ring; the other 36 are on B's surface too (0 mm). B to A is
    the mirror image. ASSD = 2 (16*5 + 4*0.5) / 112 = 164 / 112; MSSD = 5; of the 112 pooled
    distances the top 32 are 5 mm, so the 95th percentile (index 105.45) is 5.
    """
    a = _box((10, 10, 10), (2, 2, 2), (6, 6, 6))
    b = _box((10, 10, 10), (2, 2, 3), (6, 6, 7))
    result = distance_metrics(a, b, spacing=(0.5, 0.5, 5.0))
    assert result.mssd == pytest.approx(5.0)
    assert result.assd == pytest.approx(164 / 112)
    assert result.hd95 == pytest.approx(5.0)
    d_a, d_b = directed_distances(a, b, spacing=(0.5, 0.5, 5.0))
    assert sorted(d_a.tolist()) == [0.0] * 36 + [0.5] * 4 + [5.0] * 16
    assert sorted(d_b.tolist()) == sorted(d_a.tolist())


@pytest.mark.parametrize(
    ("offset", "spacing"),
    [((0, 0, 3), (1.0, 1.0, 1.0)), ((1, 2, 2), (0.7, 0.4, 3.0)), ((4, 0, 0), (2.5, 1.0, 1.0))],
)
def test_single_voxels_at_a_known_distance(
    offset: tuple[int, int, int], spacing: tuple[float, float, float]
) -> None:
    a = np.zeros((6, 6, 6), dtype=bool)
    b = np.zeros_like(a)
    a[1, 1, 1] = True
    b[1 + offset[0], 1 + offset[1], 1 + offset[2]] = True
    expected = math.sqrt(sum((o * s) ** 2 for o, s in zip(offset, spacing, strict=True)))
    result = distance_metrics(a, b, spacing=spacing)
    assert result.assd == pytest.approx(expected)
    assert result.mssd == pytest.approx(expected)
    assert result.hd95 == pytest.approx(expected)


@pytest.mark.parametrize(("r1", "r2"), [(6.0, 10.0), (8.0, 11.0)])
def test_concentric_spheres_hausdorff_is_the_radius_difference(r1: float, r2: float) -> None:
    grid = np.indices((28, 28, 28)).astype(float) - 13.5
    radius = np.sqrt((grid**2).sum(axis=0))
    inner, outer = radius <= r1, radius <= r2
    result = distance_metrics(inner, outer, spacing=(1.0, 1.0, 1.0))
    # Digital surface voxels lie within about one voxel of the continuous spheres.
    assert result.mssd == pytest.approx(r2 - r1, abs=1.0)
    assert r2 - r1 - 1.0 <= result.assd <= result.hd95 <= result.mssd


def test_empty_masks() -> None:
    a = _box((4, 5, 6), (1, 1, 1), (2, 2, 2))
    empty = np.zeros_like(a)
    assert distance_metrics(empty, empty, spacing=(1, 1, 1)) == distance_metrics(
        a, a, spacing=(1, 1, 1)
    )
    worst = worst_distance((4, 5, 6), (1.0, 2.0, 3.0))
    assert worst == pytest.approx(math.sqrt(4**2 + 10**2 + 18**2))
    for pair in ((a, empty), (empty, a)):
        result = distance_metrics(*pair, spacing=(1.0, 2.0, 3.0))
        assert (result.assd, result.mssd, result.hd95) == (worst, worst, worst)
    cropped = distance_metrics(a, empty, spacing=(1.0, 2.0, 3.0), image_shape=(8, 5, 6))
    assert cropped.mssd == pytest.approx(worst_distance((8, 5, 6), (1.0, 2.0, 3.0)))
    with pytest.raises(ConfigError, match="non-empty"):
        directed_distances(a, empty, spacing=(1, 1, 1))


# ----------------------------------------------------------------------------- brute force


@pytest.mark.parametrize("seed", range(6))
def test_kd_tree_matches_brute_force_on_random_shapes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (12, 14, 9)
    # Smooth random blobs (thresholded blurred noise) plus a few isolated voxels.
    a = ndimage.gaussian_filter(rng.normal(size=shape), 1.5) > 0.05
    b = ndimage.gaussian_filter(rng.normal(size=shape), 1.5) > 0.05
    b[tuple(rng.integers(0, n, 3) for n in shape)] = True
    spacing = tuple(float(s) for s in rng.uniform(0.3, 3.0, size=3))
    pooled = np.concatenate(directed_distances(a, b, spacing=spacing))
    reference = _brute_force(a, b, spacing)
    np.testing.assert_allclose(np.sort(pooled), np.sort(reference), rtol=1e-12, atol=1e-12)
    result = distance_metrics(a, b, spacing=spacing)
    assert result.assd == pytest.approx(reference.mean(), rel=1e-12)
    assert result.mssd == pytest.approx(reference.max(), rel=1e-12)
    assert result.hd95 == pytest.approx(np.percentile(reference, 95), rel=1e-12)


def test_padding_with_background_changes_nothing() -> None:
    rng = np.random.default_rng(7)
    a = rng.random((6, 7, 5)) > 0.6
    b = rng.random((6, 7, 5)) > 0.6
    padded = [np.pad(m, ((3, 1), (0, 4), (2, 2))) for m in (a, b)]
    assert distance_metrics(a, b, spacing=(1, 2, 3)) == distance_metrics(*padded, spacing=(1, 2, 3))


# ----------------------------------------------------------------------------- invariants

masks = arrays(np.bool_, (5, 6, 4), elements=st.booleans())
spacings = st.tuples(*[st.floats(0.25, 4.0)] * 3)


@settings(max_examples=40, deadline=None)
@given(a=masks, b=masks, spacing=spacings)
def test_distances_are_symmetric(
    a: np.ndarray, b: np.ndarray, spacing: tuple[float, float, float]
) -> None:
    assert distance_metrics(a, b, spacing=spacing) == distance_metrics(b, a, spacing=spacing)


@settings(max_examples=30, deadline=None)
@given(a=masks, spacing=spacings)
def test_identical_masks_have_zero_distances(a: np.ndarray, spacing: tuple[float, ...]) -> None:
    result = distance_metrics(a, a.copy(), spacing=spacing)
    assert (result.assd, result.mssd, result.hd95) == (0.0, 0.0, 0.0)


@settings(max_examples=30, deadline=None)
@given(a=masks, b=masks, spacing=spacings, factor=st.floats(0.1, 10.0))
def test_scaling_spacing_scales_distances(
    a: np.ndarray, b: np.ndarray, spacing: tuple[float, float, float], factor: float
) -> None:
    base = distance_metrics(a, b, spacing=spacing)
    scaled = distance_metrics(a, b, spacing=tuple(s * factor for s in spacing))
    for name in ("assd", "mssd", "hd95"):
        assert getattr(scaled, name) == pytest.approx(getattr(base, name) * factor, rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(a=masks, b=masks)
def test_hd95_lies_between_assd_bounds(a: np.ndarray, b: np.ndarray) -> None:
    result = distance_metrics(a, b, spacing=(1.0, 1.0, 1.0))
    assert 0.0 <= result.hd95 <= result.mssd
    assert 0.0 <= result.assd <= result.mssd


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("spacing", "match"),
    [((1.0, 1.0), "one value per array axis"), ((1.0, 0.0, 1.0), "> 0"), ((1, math.nan, 1), "> 0")],
)
def test_bad_spacing_is_a_config_error(spacing: tuple[float, ...], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        check_spacing(spacing, 3)


def test_mismatched_shapes_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="same shape"):
        directed_distances(np.ones((2, 2, 2), bool), np.ones((2, 2, 3), bool), spacing=(1, 1, 1))
