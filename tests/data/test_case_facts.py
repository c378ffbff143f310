"""Per-case facts on hand-made arrays whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pedseg.data.case_facts import MAX_SAMPLES, case_facts, component_sizes


def test_components_are_26_connected_and_sorted() -> None:
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[0:3, 0:3, 0:3] = True  # 27 voxels
    mask[3, 3, 3] = True  # touches the cube's corner only: 26-connected to it
    mask[6:8, 6:8, 6:8] = True  # 8 voxels, separate
    mask[9, 0, 9] = True  # a speck
    assert component_sizes(mask).tolist() == [28, 8, 1]
    reference, count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    assert count == 3
    assert sorted(np.bincount(reference.ravel())[1:].tolist(), reverse=True) == [28, 8, 1]


def test_components_of_a_one_voxel_thick_slab() -> None:
    mask = np.zeros((1, 6, 6), dtype=bool)
    mask[0, 0:2, 0:2] = True
    mask[0, 4:6, 4:6] = True
    assert component_sizes(mask).tolist() == [4, 4]
    assert component_sizes(np.zeros((3, 3, 3), dtype=bool)).size == 0


def test_case_facts_measure_boxes_extents_and_counts() -> None:
    labels = np.zeros((20, 30, 6), dtype=np.uint8)  # slice axis 2: slices are 20 x 30
    labels[2:6, 5:11, 1:4] = 1  # a 4 x 6 box over 3 slices
    labels[10:12, 0:30, 4] = 2  # 2 x 30 in one slice
    image = np.arange(labels.size, dtype=np.float32).reshape(labels.shape)
    facts = case_facts(image, labels, spacing=(0.5, 1.0, 3.0), axis=2, label_ids=(1, 2, 3))
    assert facts.in_plane == (20, 30)
    assert facts.in_plane_spacing == (0.5, 1.0)
    assert facts.num_slices == 6
    assert set(facts.labels) == {1, 2}  # label 3 is absent
    box = facts.labels[1]
    assert box.voxels == 4 * 6 * 3
    assert box.bbox_mm == (2.0, 6.0, 9.0)
    assert box.components.tolist() == [72]
    # min(4 / 20, 6 / 30) = 0.2 in each of its 3 slices
    assert box.extents.tolist() == pytest.approx([0.2, 0.2, 0.2])
    assert facts.labels[2].extents.tolist() == pytest.approx([0.1])  # min(2/20, 30/30)
    foreground = image[labels > 0]
    assert np.array_equal(np.sort(facts.foreground_sample), np.sort(foreground))


def test_extents_follow_the_slice_axis() -> None:
    labels = np.zeros((8, 10, 12), dtype=np.uint8)
    labels[1:3, 2:7, 0:12] = 1
    facts = case_facts(
        np.zeros(labels.shape), labels, spacing=(1.0, 1.0, 1.0), axis=0, label_ids=(1,)
    )
    # slices along axis 0 are 10 x 12; the box there is 5 x 12: min(5/10, 12/12) = 0.5
    assert facts.in_plane == (10, 12)
    assert facts.labels[1].extents.tolist() == pytest.approx([0.5, 0.5])


def test_samples_are_capped_and_deterministic() -> None:
    image = np.random.default_rng(0).normal(size=(100, 100, 30))
    labels = np.ones(image.shape, dtype=np.uint8)
    one = case_facts(image, labels, spacing=(1.0, 1.0, 1.0), axis=2, label_ids=(1,))
    two = case_facts(image, labels, spacing=(1.0, 1.0, 1.0), axis=2, label_ids=(1,))
    assert one.image_sample.size <= MAX_SAMPLES
    assert np.array_equal(one.image_sample, two.image_sample)


def test_mismatched_grids_are_refused() -> None:
    with pytest.raises(ValueError, match="one 3D grid"):
        case_facts(
            np.zeros((2, 2, 2)), np.zeros((2, 2, 3)), spacing=(1, 1, 1), axis=2, label_ids=()
        )
