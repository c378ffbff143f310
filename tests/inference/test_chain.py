"""Renumbering a label chain (vertebrae) by order: miscounted, merged and split members."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pedseg.data.label_chain import LabelChain
from pedseg.domains.spec import DomainSpec, PostprocessSpec
from pedseg.inference.backends import TorchBackend
from pedseg.inference.chain import ChainRule, order_chain
from pedseg.inference.postprocess import postprocess
from pedseg.inference.predictor import ModelInfo, Predictor
from pedseg.io import read_volume

GAP = 12  # voxels between vertebral bodies' centres (spacing 2 mm: 24 mm)
HEIGHT = 8  # a body's height along axis 0, voxels
RULE = ChainRule(
    ids=(1, 2, 3, 4, 5),
    axis=0,
    gap_mm=2.0 * GAP,
    extent_mm=2.0 * HEIGHT,
    volume_mm3=8.0 * HEIGHT * 10 * 10,
    min_unit_mm3=0.25 * 8.0 * HEIGHT * 10 * 10,
)
SPACING = (2.0, 2.0, 2.0)


def _spine(values: list[int], *, first: int = 6) -> np.ndarray:
    """Bodies of ``HEIGHT`` x 10 x 10 voxels, ``GAP`` apart along axis 0, labelled ``values``."""
    out = np.zeros((first + GAP * len(values) + 4, 24, 16), dtype=np.uint8)
    for k, value in enumerate(values):
        top = first + k * GAP
        out[top : top + HEIGHT, 6:16, 3:13] = value
    return out


def test_a_series_counted_one_too_high_is_renumbered() -> None:
    """T12 called L1, L1 called L2, L2 and L3 both L3 (what the 2D network does on real data)."""
    predicted = _spine([1, 2, 3, 3, 4, 5])  # T12, L1, L2, L3, L4, L5 in the field of view
    expected = _spine([0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(order_chain(predicted, RULE, spacing=SPACING), expected)


def test_a_correct_series_is_left_as_it_is() -> None:
    labels = _spine([1, 2, 3, 4, 5])
    out = order_chain(labels, RULE, spacing=SPACING)
    np.testing.assert_array_equal(out, labels)
    assert out is not labels and out.dtype == labels.dtype


def test_a_single_slice_volume_is_handled() -> None:
    labels = _spine([1, 2, 3, 3, 4, 5])[:, 10:11, :]  # a size-1 axis (cc3d refuses those)
    thin = RULE._replace(volume_mm3=RULE.volume_mm3 / 10, min_unit_mm3=RULE.min_unit_mm3 / 10)
    np.testing.assert_array_equal(
        order_chain(labels, thin, spacing=SPACING), _spine([0, 1, 2, 3, 4, 5])[:, 10:11, :]
    )


def test_a_partial_field_of_view_keeps_the_members_it_shows() -> None:
    labels = _spine([3, 4, 5])  # only L3..L5 in view
    np.testing.assert_array_equal(order_chain(labels, RULE, spacing=SPACING), labels)


def test_a_missed_member_leaves_a_gap_instead_of_shifting_the_rest() -> None:
    labels = _spine([1, 2, 3, 4, 5])
    labels[6 + 2 * GAP : 6 + 2 * GAP + HEIGHT] = 0  # L3 not segmented at all
    wrong = labels.copy()
    wrong[wrong == 4] = 3  # and L4 called L3
    np.testing.assert_array_equal(order_chain(wrong, RULE, spacing=SPACING), labels)


def test_two_members_merged_under_one_label_are_cut_at_the_disc() -> None:
    predicted = _spine([1, 2, 3, 4, 5])
    disc = slice(6 + GAP + HEIGHT, 6 + 2 * GAP)
    predicted[disc, 9:13, 6:10] = 2  # a bridge through the disc: L2 and L3 one component
    predicted[predicted == 3] = 2
    out = order_chain(predicted, RULE, spacing=SPACING)
    expected = _spine([1, 2, 3, 4, 5])
    body = expected > 0
    np.testing.assert_array_equal(out[body], expected[body])  # every body right
    assert set(np.unique(out[disc])) <= {0, 2, 3}


def test_left_and_right_halves_of_one_body_get_one_label() -> None:
    predicted = _spine([1, 2, 3, 4, 5])
    top = 6 + 2 * GAP
    predicted[top : top + HEIGHT, 6:16, 3:8] = 2  # half of L3 called L2
    predicted[6 + GAP : 6 + GAP + HEIGHT, 6:16, 3:8] = 1  # half of L2 called L1
    np.testing.assert_array_equal(
        order_chain(predicted, RULE, spacing=SPACING), _spine([1, 2, 3, 4, 5])
    )


def test_small_components_and_other_labels_are_not_touched() -> None:
    labels = _spine([2, 3, 4, 5, 0], first=6)
    labels[1:3, 1:3, 1:3] = 5  # a speck far above: below min_unit, left for the component rules
    labels[0, 20:24, 0:4] = 9  # not a chain label
    out = order_chain(labels, RULE, spacing=SPACING)
    assert out[1, 1, 1] == 5 and out[0, 21, 1] == 9
    body = labels.copy()
    body[1:3, 1:3, 1:3] = 0
    body[0, 20:24, 0:4] = 0
    # four bodies called L2..L5 in a field of view that can hold L1..L4 or L2..L5: kept as they are
    np.testing.assert_array_equal(out[body > 0], labels[body > 0])


def test_an_anchor_numbers_from_the_member_the_network_names_reliably() -> None:
    """T12 called L1 (confidently), L1 called L2, L2 and L3 called L3, and a small L5: the votes
    number from the top and shift every body; anchored at L5 the numbering is right."""
    predicted = _spine([1, 2, 3, 3, 4, 5])
    bottom = 6 + 5 * GAP
    predicted[bottom + HEIGHT // 2 : bottom + HEIGHT] = 0  # only half of L5 segmented
    expected = _spine([0, 1, 2, 3, 4, 5])
    expected[bottom + HEIGHT // 2 : bottom + HEIGHT] = 0
    by_votes = order_chain(predicted, RULE, spacing=SPACING)
    assert not np.array_equal(by_votes, expected)  # the top three agree with more voxels
    anchored = order_chain(predicted, RULE._replace(anchor=5), spacing=SPACING)
    np.testing.assert_array_equal(anchored, expected)
    no_l5 = predicted.copy()
    no_l5[no_l5 == 5] = 0  # no slot holds the anchor: back to the votes
    np.testing.assert_array_equal(
        order_chain(no_l5, RULE._replace(anchor=5), spacing=SPACING),
        order_chain(no_l5, RULE, spacing=SPACING),
    )


@pytest.mark.parametrize("value", [1, 4])
def test_postprocess_renumbers_before_its_component_rules(value: int) -> None:
    predicted = _spine([1, 2, 3, 3, 4, 5])
    predicted[1, 1, 1] = value  # a stray voxel, dropped by the largest-component step
    spec = PostprocessSpec(largest_component=True, closing=False)
    out = postprocess(predicted, spec=spec, spacing=SPACING, label_ids=[1, 2, 3, 4, 5], chain=RULE)
    np.testing.assert_array_equal(out, _spine([0, 1, 2, 3, 4, 5]))
    without = postprocess(predicted, spec=spec, spacing=SPACING, label_ids=[1, 2, 3, 4, 5])
    assert not np.array_equal(without, out)


def test_a_member_keeps_both_halves_of_its_body_and_drops_debris() -> None:
    """The network missed the middle sagittal slices of L3: its two halves are separate
    components. Keeping the largest would cut the vertebra in half; the member keeps its slot."""
    predicted = _spine([1, 2, 3, 4, 5])
    top = 6 + 2 * GAP
    predicted[top : top + HEIGHT, 6:16, 7:9] = 0  # halves of 8 x 10 x 4 voxels: units
    predicted[top : top + HEIGHT, 6:16, 3:7] = 2  # and the left one called L2
    predicted[1:3, 1:3, 1:3] = 3  # a speck far above, below a unit
    spec = PostprocessSpec(largest_component=True, closing=False)
    out = postprocess(predicted, spec=spec, spacing=SPACING, label_ids=[1, 2, 3, 4, 5], chain=RULE)
    expected = _spine([1, 2, 3, 4, 5])
    expected[top : top + HEIGHT, 6:16, 7:9] = 0
    np.testing.assert_array_equal(out, expected)
    # the same labels without the chain: L3's largest component only, the speck dropped
    plain = postprocess(expected, spec=spec, spacing=SPACING, label_ids=[1, 2, 3, 4, 5])
    assert int((plain == 3).sum()) == int((expected == 3).sum()) // 2
    # no component step asked for: the chain renumbers and every component stays, the speck too
    off = PostprocessSpec(largest_component=False, closing=False)
    kept = postprocess(predicted, spec=off, spacing=SPACING, label_ids=[1, 2, 3, 4, 5], chain=RULE)
    assert kept[1, 1, 1] == 3
    np.testing.assert_array_equal(kept[3:], expected[3:])


class LevelNet(torch.nn.Module):
    """Class k where the (z-scored) intensity is nearest ``levels[k]``: the network's labels are
    the intensities the test draws."""

    def __init__(self, levels: np.ndarray) -> None:
        super().__init__()
        self.levels = torch.nn.Parameter(
            torch.tensor(levels, dtype=torch.float32)[None, :, None, None]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(-((x - self.levels) ** 2) * 400.0, dim=1)


def test_the_predictor_renumbers_with_its_models_chain_and_reports_it(tmp_path: Path) -> None:
    values = _spine([1, 2, 3, 3, 4, 5]).astype(np.float64)  # what the "network" will call them
    image = values * 10.0
    mean, std = image.mean(), image.std()
    levels = (np.arange(6) * 10.0 - mean) / std
    labels = tuple((i, f"L{i}") for i in range(1, 6))
    spec = DomainSpec(
        name="toy",
        labels=labels,
        normalization="zscore",
        image_size=(image.shape[0], image.shape[1]),
        postprocess=PostprocessSpec(largest_component=False, closing=False, chain_anchor="L5"),
        slice_axis=2,
    )
    chain = LabelChain(tuple(n for _, n in labels), 0, 2.0 * GAP, 2.0 * HEIGHT, 6400.0, 1600.0, "t")
    info = ModelInfo(
        spec=spec,
        image_size=spec.image_size,
        model_sha256="0" * 64,
        scheme="test",
        source=Path("toy"),
        label_chain=chain,
    )
    backend = TorchBackend(LevelNet(levels).eval(), device="cpu", threads=1)
    path = tmp_path / "spine.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.float32), np.diag([*SPACING, 1.0])), path)
    volume = read_volume(path)
    out = Predictor(info, backend).predict(volume).labels
    np.testing.assert_array_equal(out, _spine([0, 1, 2, 3, 4, 5]))
    raw = Predictor(replace(info, label_chain=None), backend).predict(volume).labels
    np.testing.assert_array_equal(raw, _spine([1, 2, 3, 3, 4, 5]))  # the network's own count
