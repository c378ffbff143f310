"""Per-label metrics, the empty-structure convention, slice-wise Dice and summaries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pedseg.errors import ConfigError
from pedseg.evaluation.metrics import (
    LabelMetrics,
    Summary,
    case_metrics,
    label_metrics,
    slice_dice,
    summarize,
    summarize_metric,
    worst_distance,
)

ISO = (1.0, 1.0, 1.0)


def _row(*values: int) -> np.ndarray:
    """A 1 x 1 x n boolean mask."""
    return np.array(values, dtype=bool).reshape(1, 1, -1)


# ----------------------------------------------------------------------------- overlap metrics


def test_overlap_metrics_of_a_hand_made_case() -> None:
    # 10 voxels; reference 4, prediction 3, overlap 2, one false positive, 5 true negatives.
    ref = _row(1, 1, 1, 1, 0, 0, 0, 0, 0, 0)
    pred = _row(0, 0, 1, 1, 1, 0, 0, 0, 0, 0)
    m = label_metrics(pred, ref, spacing=(1.0, 2.0, 0.5), label=3)
    assert m.label == 3
    assert m.dice == pytest.approx(2 * 2 / (4 + 3))
    assert m.sensitivity == pytest.approx(2 / 4)
    assert m.specificity == pytest.approx(5 / 6)
    assert m.ravd == pytest.approx(1 / 4)
    assert m.volume_ref_ml == pytest.approx(4 * 1.0e-3)
    assert m.volume_pred_ml == pytest.approx(3 * 1.0e-3)
    assert not m.empty_reference and not m.empty_prediction
    # Surfaces along the row (spacing 0.5 on axis 2): every voxel of these thin rows is surface.
    # ref -> pred: 1.0, 0.5, 0, 0; pred -> ref: 0, 0, 0.5.
    assert m.assd == pytest.approx(2.0 / 7)
    assert m.mssd == pytest.approx(1.0)


def test_identical_masks_are_perfect() -> None:
    ref = np.zeros((5, 6, 7), dtype=bool)
    ref[1:4, 2:5, 1:6] = True
    m = label_metrics(ref.copy(), ref, spacing=(0.5, 0.5, 2.0))
    assert (m.dice, m.sensitivity, m.specificity, m.ravd) == (1.0, 1.0, 1.0, 0.0)
    assert (m.assd, m.mssd, m.hd95) == (0.0, 0.0, 0.0)
    assert m.volume_ref_ml == pytest.approx(45 * 0.5 * 0.5 * 2.0 / 1000)


# ----------------------------------------------------------------------------- empty structures

SHAPE = (4, 5, 6)
SPACING = (1.0, 2.0, 3.0)


def _some() -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[1:3, 1:3, 2:4] = True
    return mask


def test_both_empty_is_perfect() -> None:
    empty = np.zeros(SHAPE, dtype=bool)
    m = label_metrics(empty, empty.copy(), spacing=SPACING)
    assert (m.dice, m.sensitivity, m.specificity, m.ravd) == (1.0, 1.0, 1.0, 0.0)
    assert (m.assd, m.mssd, m.hd95) == (0.0, 0.0, 0.0)
    assert m.empty_reference and m.empty_prediction


def test_hallucinated_structure_is_a_counted_failure() -> None:
    pred = _some()
    m = label_metrics(pred, np.zeros(SHAPE, dtype=bool), spacing=SPACING)
    worst = worst_distance(SHAPE, SPACING)
    assert (m.dice, m.sensitivity) == (0.0, 0.0)
    assert m.specificity == pytest.approx(1 - 8 / pred.size)
    assert m.ravd == math.inf
    assert (m.assd, m.mssd, m.hd95) == (worst, worst, worst)
    assert m.empty_reference and not m.empty_prediction


def test_missed_structure_is_a_counted_failure() -> None:
    m = label_metrics(np.zeros(SHAPE, dtype=bool), _some(), spacing=SPACING)
    worst = worst_distance(SHAPE, SPACING)
    assert (m.dice, m.sensitivity, m.specificity, m.ravd) == (0.0, 0.0, 1.0, 1.0)
    assert (m.assd, m.mssd, m.hd95) == (worst, worst, worst)
    assert worst == pytest.approx(math.sqrt(4**2 + 10**2 + 18**2))
    assert not m.empty_reference and m.empty_prediction


def test_reference_filling_the_array_has_specificity_one() -> None:
    full = np.ones((2, 2, 2), dtype=bool)
    assert label_metrics(full, full, spacing=ISO).specificity == 1.0


def test_no_metric_is_ever_nan() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        pred, ref = (rng.random((3, 4, 2)) > rng.uniform(0.3, 1.0) for _ in range(2))
        values = vars(label_metrics(pred, ref, spacing=ISO)).values()
        assert not any(isinstance(v, float) and math.isnan(v) for v in values)


# ----------------------------------------------------------------------------- case metrics


def test_case_metrics_match_label_metrics_per_label() -> None:
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 3, size=(9, 8, 7)).astype(np.uint8)
    pred = ref.copy()
    pred[rng.random(ref.shape) < 0.2] = 1
    pred[0, 0, 0] = 4  # label 4 hallucinated, label 5 absent from both
    spacing = (0.8, 0.8, 2.5)
    results = case_metrics(pred, ref, spacing=spacing, label_ids=[2, 1, 4, 5])
    assert [m.label for m in results] == [2, 1, 4, 5]
    for m in results:
        assert m == label_metrics(pred == m.label, ref == m.label, spacing=spacing, label=m.label)
    assert results[2].empty_reference and results[2].ravd == math.inf
    assert results[3].dice == 1.0 and results[3].empty_prediction


@pytest.mark.parametrize(
    ("pred", "ref", "label_ids", "match"),
    [
        (np.zeros((2, 3, 4), np.uint8), np.zeros((2, 3, 5), np.uint8), [1], "shape"),
        (np.zeros((2, 3, 4), np.float32), np.zeros((2, 3, 4), np.uint8), [1], "integer"),
        (np.zeros((2, 3, 4), np.uint8), np.zeros((2, 3, 4), np.uint8), [], "empty"),
        (np.zeros((2, 3, 4), np.uint8), np.zeros((2, 3, 4), np.uint8), [1, 1], "distinct"),
        (np.zeros((2, 3, 4), np.uint8), np.zeros((2, 3, 4), np.uint8), [0, 1], "background"),
    ],
)
def test_case_metrics_input_errors(
    pred: np.ndarray, ref: np.ndarray, label_ids: list[int], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        case_metrics(pred, ref, spacing=ISO, label_ids=label_ids)


def test_label_metrics_input_errors() -> None:
    mask = np.zeros((2, 3, 4), dtype=bool)
    with pytest.raises(ConfigError, match="boolean"):
        label_metrics(mask.astype(np.uint8), mask, spacing=ISO)
    with pytest.raises(ConfigError, match="same shape"):
        label_metrics(mask, mask[:, :, :3], spacing=ISO)
    with pytest.raises(ConfigError, match="spacing"):
        label_metrics(mask, mask, spacing=(1.0, 1.0))


def test_two_dimensional_masks_are_supported() -> None:
    ref = np.zeros((6, 6), dtype=bool)
    ref[1:4, 1:4] = True
    pred = np.roll(ref, 1, axis=1)
    m = label_metrics(pred, ref, spacing=(1.0, 0.5))
    assert m.dice == pytest.approx(2 * 6 / 18)
    assert m.mssd == pytest.approx(0.5)


# ----------------------------------------------------------------------------- slice Dice


def test_slice_dice_of_a_hand_made_case() -> None:
    ref = np.zeros((4, 2, 2), dtype=np.uint8)
    pred = np.zeros_like(ref)
    ref[0] = 1  # slice 0: 4 vs 2 voxels of label 1, 2 shared -> 2*2/6
    pred[0, 0] = 1
    pred[1, 0, 0] = 1  # slice 1: label 1 hallucinated -> 0
    ref[2, 1, 1] = 2  # slice 2: label 2 matched -> 1
    pred[2, 1, 1] = 2
    # slice 3 holds nothing and contributes no value
    values = slice_dice(pred, ref, axis=0, label_ids=[1, 2])
    np.testing.assert_allclose(values, [4 / 6, 0.0, 1.0])
    np.testing.assert_allclose(slice_dice(pred, ref, axis=0, label_ids=[2]), [1.0])
    # Along axis 1, label 1: slice 0 has ref {(0,0,0), (0,0,1)} and pred {(0,0,0), (0,0,1),
    # (1,0,0)} -> 2*2/5; slice 1 has ref {(0,1,0), (0,1,1)} and no prediction -> 0.
    along_1 = slice_dice(pred, ref, axis=1, label_ids=[1])
    np.testing.assert_allclose(along_1, [4 / 5, 0.0])


def test_slice_dice_rejects_a_bad_axis() -> None:
    labels = np.zeros((2, 2, 2), dtype=np.uint8)
    with pytest.raises(ConfigError, match="axis"):
        slice_dice(labels, labels, axis=3, label_ids=[1])


# ----------------------------------------------------------------------------- summaries


def test_summarize_counts_everything() -> None:
    values = [0.9, 0.8, 0.0, 1.0]
    flags = [(False, False), (False, False), (False, True), (True, True)]
    s = summarize(values, flags)
    assert isinstance(s, Summary)
    assert s.mean == pytest.approx(0.675)
    assert s.std == pytest.approx(float(np.std(values, ddof=1)))
    assert s.median == pytest.approx(0.85)
    assert (s.n, s.n_empty_reference, s.n_empty_prediction) == (4, 1, 2)


def test_summarize_single_value_and_infinite_value() -> None:
    assert summarize([0.5], [(False, False)]).std == 0.0
    s = summarize([0.1, math.inf, 0.3], [(False, False), (True, False), (False, False)])
    assert (s.mean, s.std, s.median, s.n_empty_reference) == (math.inf, math.inf, 0.3, 1)


def test_summarize_refuses_bad_input() -> None:
    with pytest.raises(ConfigError, match="empty"):
        summarize([], [])
    with pytest.raises(ConfigError, match="NaN"):
        summarize([0.1, math.nan], [(False, False)] * 2)
    with pytest.raises(ConfigError, match="flags"):
        summarize([0.1, 0.2], [(False, False)])


def test_summarize_metric_reads_flags_from_label_metrics() -> None:
    ref = np.zeros((3, 3, 3), dtype=bool)
    ref[1, 1, 1] = True
    empty = np.zeros_like(ref)
    metrics = [label_metrics(ref, ref, spacing=ISO), label_metrics(empty, ref, spacing=ISO)]
    s = summarize_metric(metrics, "dice")
    assert (s.mean, s.n, s.n_empty_reference, s.n_empty_prediction) == (0.5, 2, 0, 1)
    assert summarize_metric(metrics, "hd95").mean == pytest.approx(
        worst_distance((3, 3, 3), ISO) / 2
    )
    with pytest.raises(ConfigError, match="unknown metric"):
        summarize_metric(metrics, "jaccard")


# ----------------------------------------------------------------------------- invariants

masks = arrays(np.bool_, (4, 5, 3), elements=st.booleans())


@settings(max_examples=40, deadline=None)
@given(a=masks, b=masks)
def test_dice_is_bounded_and_symmetric(a: np.ndarray, b: np.ndarray) -> None:
    ab = label_metrics(a, b, spacing=(1.0, 0.5, 2.0))
    ba = label_metrics(b, a, spacing=(1.0, 0.5, 2.0))
    assert 0.0 <= ab.dice <= 1.0
    assert ab.dice == ba.dice
    assert (ab.assd, ab.mssd, ab.hd95) == (ba.assd, ba.mssd, ba.hd95)
    assert 0.0 <= ab.sensitivity <= 1.0 and 0.0 <= ab.specificity <= 1.0
    # Sensitivity of (a vs b) is the precision of (b vs a): Dice is their harmonic mean.
    if a.any() and b.any():
        harmonic = 2 * ab.sensitivity * ba.sensitivity / (ab.sensitivity + ba.sensitivity or 1)
        assert ab.dice == pytest.approx(harmonic)


@settings(max_examples=30, deadline=None)
@given(a=masks)
def test_a_mask_against_itself(a: np.ndarray) -> None:
    m = label_metrics(a, a.copy(), spacing=ISO)
    assert (m.dice, m.sensitivity, m.specificity, m.ravd) == (1.0, 1.0, 1.0, 0.0)
    assert (m.assd, m.mssd, m.hd95) == (0.0, 0.0, 0.0)


def test_label_metrics_is_a_frozen_dataclass() -> None:
    m = label_metrics(_some(), _some(), spacing=SPACING)
    assert isinstance(m, LabelMetrics)
    with pytest.raises(AttributeError):
        m.dice = 0.0  # type: ignore[misc]
