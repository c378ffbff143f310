"""3D post-processing: the element, and bit-identity with a whole-volume scipy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from pedseg.domains.spec import PostprocessSpec
from pedseg.errors import ConfigError, VolumeError
from pedseg.inference.postprocess import MAX_HALF_EXTENT, ball, dilate, erode, postprocess

ISO = (1.0, 1.0, 1.0)


def reference_element(radius: float, spacing: tuple[float, float, float]) -> np.ndarray:
    """The element by its definition, offset by offset (slow, obviously right)."""
    half = [math.floor(radius / s * (1 + 1e-9)) for s in spacing]
    shape = tuple(2 * n + 1 for n in half)
    out = np.zeros(shape, dtype=bool)
    for index in np.ndindex(*shape):
        d2 = sum(((i - n) * s) ** 2 for i, n, s in zip(index, half, spacing, strict=True))
        out[index] = d2 <= radius * radius * (1 + 1e-9)
    return out


def reference(
    labels: np.ndarray,
    *,
    spec: PostprocessSpec,
    spacing: tuple[float, float, float],
    label_ids: list[int] | None = None,
) -> np.ndarray:
    """Straightforward whole-volume version: scipy label, bincount, closing on the padded volume."""
    ids = sorted(int(i) for i in np.unique(labels) if i != 0) if label_ids is None else label_ids
    steps = spacing if spec.closing_unit == "mm" else ISO
    element = reference_element(spec.closing_radius, steps)
    half = [n // 2 for n in element.shape]
    out = labels.copy()
    for label_id in ids:
        mask = labels == label_id
        if not mask.any():
            continue
        kept = mask
        if spec.largest_component:
            components, _ = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
            counts = np.bincount(components.ravel())
            counts[0] = 0
            kept = components == int(np.argmax(counts))  # first max = first in raster order
        closed = kept
        if spec.closing:
            padded = np.pad(kept, [(n, n) for n in half])
            full = ndimage.binary_closing(padded, structure=element)
            closed = full[
                tuple(slice(n, n + size) for n, size in zip(half, mask.shape, strict=True))
            ]
        out[mask & ~closed] = 0
        out[closed & (labels == 0) & (out == 0)] = label_id
    return out


def blobby_labels(seed: int, shape: tuple[int, int, int], num_labels: int) -> np.ndarray:
    """Smooth random blobs with holes, notches and small spurious islands."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=2.0)
    thresholds = np.quantile(field, np.linspace(0.45, 0.9, num_labels + 1))
    labels = np.zeros(shape, dtype=np.uint8)
    for k in range(num_labels):
        labels[(field > thresholds[k]) & (field <= thresholds[k + 1])] = k + 1
    holes = rng.random(shape) < 0.04
    labels[holes] = 0
    islands = rng.random(shape) < 0.005
    labels[islands] = rng.integers(1, num_labels + 1, size=int(islands.sum()))
    return labels


# -- the element ------------------------------------------------------------------------------------


def test_ball_radius_2_is_the_33_voxel_5x5x5_ball() -> None:
    z, y, x = np.mgrid[-2:3, -2:3, -2:3]
    expected = x**2 + y**2 + z**2 <= 4  # skimage.morphology.ball(2)
    element = ball(2)
    assert element.dtype == np.bool_
    assert element.shape == (5, 5, 5)
    assert int(element.sum()) == 33
    np.testing.assert_array_equal(element, expected)


def test_ball_small_radii() -> None:
    np.testing.assert_array_equal(ball(0.5), np.ones((1, 1, 1), dtype=bool))
    np.testing.assert_array_equal(ball(0), np.ones((1, 1, 1), dtype=bool))
    np.testing.assert_array_equal(ball(1), ndimage.generate_binary_structure(3, 1))
    assert int(ball(3).sum()) == 123  # skimage.morphology.ball(3)


def test_ball_in_mm_on_anisotropic_spacing() -> None:
    element = ball(2.0, spacing=(0.5, 0.5, 2.0))
    # 4 voxels either side in-plane, 1 either side along z (2 mm at 2 mm spacing is on the sphere).
    assert element.shape == (9, 9, 3)
    j, i = np.mgrid[-4:5, -4:5]
    np.testing.assert_array_equal(element[:, :, 1], i**2 + j**2 <= 16)
    tip = np.zeros((9, 9), dtype=bool)
    tip[4, 4] = True
    np.testing.assert_array_equal(element[:, :, 0], tip)
    np.testing.assert_array_equal(element[:, :, 2], tip)
    np.testing.assert_array_equal(element, reference_element(2.0, (0.5, 0.5, 2.0)))


@pytest.mark.parametrize(
    ("radius", "spacing"),
    [
        (2.0, (0.7, 0.7, 3.0)),
        (1.5, (0.3, 0.9, 1.1)),
        (2.1, (1.0, 1.0, 1.0)),
        (0.2, (0.5, 1.0, 1.0)),
    ],
)
def test_ball_matches_its_definition(radius: float, spacing: tuple[float, float, float]) -> None:
    element = ball(radius, spacing=spacing)
    expected = reference_element(radius, spacing)
    np.testing.assert_array_equal(element, expected)
    assert element[tuple(n // 2 for n in element.shape)]
    np.testing.assert_array_equal(element, element[::-1, ::-1, ::-1])


@pytest.mark.parametrize("radius", [-1.0, math.nan, math.inf])
def test_ball_rejects_bad_radius(radius: float) -> None:
    with pytest.raises(ConfigError, match="closing_radius must be a finite number >= 0"):
        ball(radius)


def test_ball_rejects_huge_element_and_bad_spacing() -> None:
    with pytest.raises(ConfigError, match=f"the limit is {MAX_HALF_EXTENT}"):
        ball(50.0, spacing=(0.1, 1.0, 1.0))
    with pytest.raises(ConfigError, match="spacing must be three positive finite numbers"):
        ball(2.0, spacing=(1.0, 0.0, 1.0))


# -- against the whole-volume reference ---------------------------------------------------------------

SPECS = [
    PostprocessSpec(),
    PostprocessSpec(largest_component=False),
    PostprocessSpec(closing=False),
    PostprocessSpec(closing_radius=1.0),
    PostprocessSpec(closing_radius=3.0),
    PostprocessSpec(closing_radius=2.0, closing_unit="mm"),
]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(
    "spec",
    SPECS,
    ids=lambda s: f"{s.largest_component}-{s.closing}-{s.closing_radius}{s.closing_unit}",
)
def test_matches_whole_volume_reference(seed: int, spec: PostprocessSpec) -> None:
    labels = blobby_labels(seed, (24, 28, 20), num_labels=3)
    spacing = (0.6, 0.6, 1.5)
    result = postprocess(labels, spec=spec, spacing=spacing)
    expected = reference(labels, spec=spec, spacing=spacing)
    assert result.shape == labels.shape
    assert result.dtype == labels.dtype
    np.testing.assert_array_equal(result, expected)
    if spec.largest_component or spec.closing:
        assert not np.array_equal(result, labels)  # the volumes are noisy: something must change


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    shape=st.tuples(st.integers(1, 14), st.integers(1, 14), st.integers(1, 14)),
    num_labels=st.integers(1, 3),
    largest=st.booleans(),
    closing=st.booleans(),
    radius=st.sampled_from([0.5, 1.0, 1.5, 2.0, 2.5]),
    unit=st.sampled_from(["voxel", "mm"]),
)
def test_matches_reference_property(
    seed: int,
    shape: tuple[int, int, int],
    num_labels: int,
    largest: bool,
    closing: bool,
    radius: float,
    unit: str,
) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.choice(num_labels + 1, size=shape, p=None).astype(np.uint16)
    labels[rng.random(shape) < 0.3] = 0
    spec = PostprocessSpec(
        largest_component=largest,
        closing=closing,
        closing_radius=radius,
        closing_unit="mm" if unit == "mm" else "voxel",
    )
    spacing = (0.8, 1.0, 1.7)
    result = postprocess(labels, spec=spec, spacing=spacing)
    np.testing.assert_array_equal(result, reference(labels, spec=spec, spacing=spacing))


# -- specific behaviour ----------------------------------------------------------------------------


def test_single_label_is_closing_of_largest_component() -> None:
    mask = np.zeros((20, 20, 20), dtype=bool)
    mask[4:14, 4:14, 4:14] = True
    mask[8, 8, 8] = False  # a hole: filled
    mask[6:8, 10:12, 5:7] = False  # a 2x2x2 cavity: filled
    mask[18, 18, 18] = True  # an island: removed
    result = postprocess(mask.astype(np.uint8), spec=PostprocessSpec(), spacing=ISO)
    expected = np.zeros_like(mask)
    expected[4:14, 4:14, 4:14] = True
    np.testing.assert_array_equal(result.astype(bool), expected)


def test_flags_off_is_identity_and_a_new_array() -> None:
    labels = blobby_labels(5, (16, 16, 16), num_labels=2)
    spec = PostprocessSpec(largest_component=False, closing=False)
    result = postprocess(labels, spec=spec, spacing=ISO)
    np.testing.assert_array_equal(result, labels)
    assert result is not labels
    assert not np.shares_memory(result, labels)


def test_input_is_not_modified() -> None:
    labels = blobby_labels(6, (16, 16, 16), num_labels=2)
    before = labels.copy()
    postprocess(labels, spec=PostprocessSpec(), spacing=ISO)
    np.testing.assert_array_equal(labels, before)


def test_label_touching_the_border_is_not_eroded() -> None:
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[0:6, 0:6, 0:6] = 1  # a corner cube
    labels[6:12, 9:12, 0:12] = 2  # a slab along three faces
    result = postprocess(labels, spec=PostprocessSpec(), spacing=ISO)
    np.testing.assert_array_equal(result, labels)
    # scipy's closing without padding would have eroded the border voxels
    naive = ndimage.binary_closing(labels == 1, structure=ball(2))
    assert not naive[0, 0, 0]


def test_notch_open_to_the_border_is_closed_like_the_reference() -> None:
    labels = np.zeros((10, 12, 12), dtype=np.uint8)
    labels[0:6, 2:10, 2:10] = 1
    labels[0:4, 5:7, 5:7] = 0  # a 2-wide well, open only onto the image border at axis 0
    result = postprocess(labels, spec=PostprocessSpec(), spacing=ISO)
    np.testing.assert_array_equal(result, reference(labels, spec=PostprocessSpec(), spacing=ISO))
    # outside the image is background: the ball's tip enters the well's mouth, not deeper
    assert (result[1:4, 5:7, 5:7] == 1).all()
    assert (result[0, 5:7, 5:7] == 0).all()


def test_empty_and_absent_labels() -> None:
    zeros = np.zeros((8, 8, 8), dtype=np.uint8)
    np.testing.assert_array_equal(postprocess(zeros, spec=PostprocessSpec(), spacing=ISO), zeros)
    labels = blobby_labels(7, (16, 16, 16), num_labels=3)
    labels[labels == 2] = 0
    result = postprocess(labels, spec=PostprocessSpec(), spacing=ISO, label_ids=[1, 2, 3, 7])
    expected = reference(labels, spec=PostprocessSpec(), spacing=ISO, label_ids=[1, 2, 3, 7])
    np.testing.assert_array_equal(result, expected)
    assert not (result == 2).any()
    empty = np.zeros((0, 4, 4), dtype=np.uint8)
    assert postprocess(empty, spec=PostprocessSpec(), spacing=ISO).shape == (0, 4, 4)


def test_closing_never_steals_another_label() -> None:
    labels = np.zeros((12, 12, 12), dtype=np.uint8)
    labels[2:10, 2:10, 2:10] = 1
    labels[5:7, 5:7, 5:7] = 2  # inside label 1: its closing would cover it
    labels[2:10, 2:4, 5:7] = 3  # a groove of label 3 cut into label 1's face
    result = postprocess(labels, spec=PostprocessSpec(largest_component=False), spacing=ISO)
    np.testing.assert_array_equal(result, labels)


@pytest.mark.parametrize(("plane_id", "sandwich_id"), [(1, 2), (2, 1)])
def test_background_claimed_by_two_closings_goes_to_the_lowest_id(
    plane_id: int, sandwich_id: int
) -> None:
    labels = np.zeros((9, 13, 13), dtype=np.uint8)
    labels[3:6, 2:11, 2:11] = plane_id
    labels[4, 6, 6] = 0  # a one-voxel hole inside the slab: its closing fills it
    labels[2, 2:11, 2:11] = sandwich_id  # two planes around the slab: their closing covers it too
    labels[6, 2:11, 2:11] = sandwich_id
    spec = PostprocessSpec(largest_component=False)
    result = postprocess(labels, spec=spec, spacing=ISO)
    assert result[4, 6, 6] == 1
    np.testing.assert_array_equal(result, reference(labels, spec=spec, spacing=ISO))


@pytest.mark.parametrize("flip", [False, True])
def test_largest_component_ties_go_to_the_first_in_c_order(flip: bool) -> None:
    labels = np.zeros((12, 8, 8), dtype=np.uint8)
    labels[1:4, 1:4, 1:4] = 1  # 27 voxels
    labels[7:10, 2:5, 2:5] = 1  # 27 voxels, later in C order
    if flip:
        labels = np.ascontiguousarray(labels[::-1])
    result = postprocess(labels, spec=PostprocessSpec(closing=False), spacing=ISO)
    assert int((result == 1).sum()) == 27
    first = np.unravel_index(int(np.flatnonzero(labels.ravel())[0]), labels.shape)
    assert result[first] == 1


def test_unprocessed_labels_are_kept() -> None:
    labels = blobby_labels(8, (16, 16, 16), num_labels=3)
    result = postprocess(labels, spec=PostprocessSpec(), spacing=ISO, label_ids=[1])
    np.testing.assert_array_equal(result[labels >= 2], labels[labels >= 2])
    expected = reference(labels, spec=PostprocessSpec(), spacing=ISO, label_ids=[1])
    np.testing.assert_array_equal(result, expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.uint64])
def test_dtype_is_preserved(dtype: type[np.generic]) -> None:
    labels = blobby_labels(9, (14, 14, 14), num_labels=2).astype(dtype)
    result = postprocess(labels, spec=PostprocessSpec(), spacing=ISO)
    assert result.dtype == np.dtype(dtype)
    expected = reference(labels.astype(np.uint8), spec=PostprocessSpec(), spacing=ISO)
    np.testing.assert_array_equal(result, expected.astype(dtype))


def test_large_label_ids_in_uint16() -> None:
    labels = blobby_labels(10, (14, 14, 14), num_labels=2).astype(np.uint16) * 30000
    result = postprocess(labels, spec=PostprocessSpec(), spacing=ISO)
    expected = reference(labels, spec=PostprocessSpec(), spacing=ISO)
    np.testing.assert_array_equal(result, expected)
    assert set(np.unique(result)) <= {0, 30000, 60000}


def test_boolean_mask() -> None:
    mask = blobby_labels(11, (14, 14, 14), num_labels=1).astype(bool)
    result = postprocess(mask, spec=PostprocessSpec(), spacing=ISO)
    assert result.dtype == np.bool_
    expected = reference(mask.astype(np.uint8), spec=PostprocessSpec(), spacing=ISO)
    np.testing.assert_array_equal(result, expected.astype(bool))


def test_invalid_inputs() -> None:
    spec = PostprocessSpec()
    with pytest.raises(VolumeError, match="must be a 3D label map"):
        postprocess(np.zeros((4, 4), dtype=np.uint8), spec=spec, spacing=ISO)
    with pytest.raises(VolumeError, match="must hold integer label ids"):
        postprocess(np.zeros((4, 4, 4), dtype=np.float32), spec=spec, spacing=ISO)
    with pytest.raises(VolumeError, match="label ids must be >= 0"):
        postprocess(np.full((4, 4, 4), -1, dtype=np.int16), spec=spec, spacing=ISO)
    with pytest.raises(ConfigError, match="spacing must be three positive finite numbers"):
        postprocess(np.zeros((4, 4, 4), dtype=np.uint8), spec=spec, spacing=(1.0, 1.0))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="label_ids must be positive integers"):
        postprocess(np.zeros((4, 4, 4), dtype=np.uint8), spec=spec, spacing=ISO, label_ids=[0, 1])


def test_component_rules_from_the_training_labels() -> None:
    from pedseg.domains.spec import PostprocessSpec
    from pedseg.inference.postprocess import ComponentRule

    labels = np.zeros((20, 20, 20), dtype=np.uint8)
    labels[1:6, 1:6, 1:6] = 1  # 125 voxels: left femur
    labels[10:16, 10:16, 10:16] = 1  # 216 voxels: right femur
    labels[18, 18, 18] = 1  # a speck
    off = PostprocessSpec(largest_component=False, closing=False)
    spacing = (1.0, 1.0, 1.0)

    def kept(rule: ComponentRule) -> int:
        out = postprocess(labels, spec=off, spacing=spacing, components={1: rule})
        return int((out == 1).sum())

    assert kept(ComponentRule(keep=2)) == 125 + 216  # both femurs, the speck dropped (3rd)
    assert kept(ComponentRule(keep=1)) == 216
    assert kept(ComponentRule(keep=0, min_volume_mm3=10.0)) == 125 + 216
    assert kept(ComponentRule(keep=0, min_volume_mm3=200.0)) == 216
    assert kept(ComponentRule(keep=0, min_volume_mm3=1e6)) == 216  # the largest always stays
    assert kept(ComponentRule(keep=0)) == 125 + 216 + 1
    # anisotropic voxels: the volume rule counts mm³
    out = postprocess(
        labels, spec=off, spacing=(1.0, 1.0, 2.0), components={1: ComponentRule(0, 300.0)}
    )
    assert int((out == 1).sum()) == 216  # 250 mm³ < 300 mm³ <= 432 mm³


@pytest.mark.parametrize("spacing", [(0.9, 5.2, 0.9), (1.0, 1.0, 1.0), (0.5, 0.7, 2.0)])
@pytest.mark.parametrize("radius", [1.0, 2.0, 3.0])
def test_shifted_morphology_equals_scipy(
    spacing: tuple[float, float, float], radius: float
) -> None:
    """The closing's dilation and erosion by shifted copies equal scipy.ndimage's, also on
    arrays thinner than the element."""
    element = ball(radius, spacing=spacing)
    half = np.array(element.shape) // 2
    offsets = [tuple(int(v) for v in p - half) for p in np.argwhere(element)]
    rng = np.random.default_rng(int(radius * 10))
    for shape in ((9, 6, 11), (12, 2, 5), (3, 3, 3)):
        for fill in (0.2, 0.6, 0.95):
            mask = rng.random(shape) < fill
            np.testing.assert_array_equal(
                dilate(mask, offsets), ndimage.binary_dilation(mask, structure=element)
            )
            np.testing.assert_array_equal(
                erode(mask, offsets),
                ndimage.binary_erosion(mask, structure=element, border_value=0),
            )
