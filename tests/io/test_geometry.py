"""Geometry helpers: affine validation, LPS/RAS conversion, exact reorientation inverses."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from pedseg.errors import VolumeError
from pedseg.io.geometry import (
    ItkGeometry,
    canonical_affine,
    canonical_ornt,
    from_canonical,
    itk_to_ras_affine,
    ras_affine_to_itk,
    spacing_of,
    to_canonical,
    validate_affine,
)
from tests.io.conftest import make_affine

ALL_ORIENTATIONS = [
    (perm, flips)
    for perm in itertools.permutations(range(3))
    for flips in itertools.product((-1, 1), repeat=3)
]


@pytest.mark.parametrize(("perm", "flips"), ALL_ORIENTATIONS)
def test_from_canonical_inverts_to_canonical(perm: tuple[int, ...], flips: tuple[int, ...]) -> None:
    affine = make_affine(perm=perm, flips=flips, spacing=(1.0, 2.0, 3.0), angles=(0.2, -0.1, 0.3))
    ornt = canonical_ornt(affine, "x")
    data = np.arange(2 * 3 * 4 * 2).reshape(2, 3, 4, 2)  # a trailing channel axis rides along
    canonical = to_canonical(data, ornt)
    np.testing.assert_array_equal(from_canonical(canonical, ornt), data)
    # The canonical affine points every voxel axis (roughly) along +x, +y, +z.
    canon = canonical_affine(affine, ornt, data.shape)
    assert np.all(np.argmax(np.abs(canon[:3, :3]), axis=0) == [0, 1, 2])
    assert np.all(np.diag(canon[:3, :3]) > 0)
    # Canonical axis ornt[i, 0] carries on-disk axis i and its spacing.
    disk_spacing = spacing_of(affine)
    expected = [disk_spacing[int(np.flatnonzero(ornt[:, 0] == axis)[0])] for axis in range(3)]
    assert spacing_of(canon) == pytest.approx(expected)


def test_itk_ras_round_trip() -> None:
    geometry = ItkGeometry(
        origin=(10.0, -20.0, 30.0),
        spacing=(0.5, 0.75, 2.0),
        direction=(0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0),
    )
    affine = itk_to_ras_affine(geometry)
    expected = np.array(
        [[0.0, -0.75, 0.0, -10.0], [0.5, 0.0, 0.0, 20.0], [0.0, 0.0, 2.0, 30.0], [0, 0, 0, 1]]
    )
    np.testing.assert_allclose(affine, expected)
    back = ras_affine_to_itk(affine)
    np.testing.assert_allclose(back.origin, geometry.origin)
    np.testing.assert_allclose(back.spacing, geometry.spacing)
    np.testing.assert_allclose(back.direction, geometry.direction, atol=1e-15)


@pytest.mark.parametrize(
    ("affine", "message"),
    [
        (np.diag([1.0, 0.0, 1.0, 1.0]), "zero axis"),
        (np.array([[1, 2, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), "singular"),
        (np.diag([1.0, np.nan, 1.0, 1.0]), "NaN"),
        (np.diag([1.0, 1.0, np.inf, 1.0]), "NaN or infinite"),
        (np.eye(3), "4x4"),
    ],
)
def test_validate_affine_rejects(affine: np.ndarray, message: str) -> None:
    with pytest.raises(VolumeError, match=message):
        validate_affine(affine, "scan.nii.gz")


def test_validate_affine_accepts_oblique() -> None:
    validate_affine(make_affine(spacing=(0.3, 0.3, 5.0), angles=(0.5, 0.4, 0.3)), "x")
