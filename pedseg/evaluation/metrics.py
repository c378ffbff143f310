"""The paper's per-case, per-label metrics in 3D, and their summaries.

Definitions (supplementary material, "Metrics definitions"; ``GT`` reference, ``P`` prediction,
counts in voxels over the whole array):

* ``Dice = 2|GT∩P| / (|GT| + |P|)``, ``sensitivity = |GT∩P| / |GT|``,
  ``specificity = |¬GT∩¬P| / |¬GT|``, ``RAVD = ||GT| - |P|| / |GT|`` — all fractions (the paper
  prints them in %).
* ASSD, MSSD (symmetric Hausdorff) and HD95 in mm, from surface voxels with the volume's spacing;
  the exact definitions are in :mod:`pedseg.evaluation.surface`.
* Volumes in ml: voxel count times the voxel volume in mm³ / 1000.

Empty structures. A ratio with a zero denominator gets a fixed value, never NaN, and a missed or
hallucinated structure never drops out of an average: every label of every case is counted and
:class:`Summary` reports how many were empty next to each mean. The convention follows the Metrics
Reloaded recommendations (Maier-Hein et al., Nat. Methods 2024: empty reference cases must be
handled explicitly, worst-case values for missing distances) and MONAI / nnU-Net practice
(``DiceMetric(ignore_empty=False)``: Dice 1 when both are empty, 0 when only one is):

======================  ====  ===========  ===========  ====  ===================
case                    Dice  sensitivity  specificity  RAVD  ASSD / MSSD / HD95
======================  ====  ===========  ===========  ====  ===================
both empty              1     1            formula      0     0
reference empty (FP)    0     0            formula      inf   image diagonal (mm)
prediction empty (FN)   0     0 (formula)  formula      1     image diagonal (mm)
both non-empty          formula for every metric
======================  ====  ===========  ===========  ====  ===================

* With an empty reference, sensitivity follows Dice (1 if the prediction is empty too, else 0), so
  a hallucinated structure scores as a failure in every overlap column instead of a perfect,
  vacuous sensitivity.
* RAVD of a hallucinated structure is ``inf`` (the limit of ``|P| / |GT|``); its mean is then
  ``inf`` too, visibly, with ``n_empty_reference`` saying why.
* "image diagonal" is :func:`worst_distance`: ``sqrt(sum((n_i * s_i)^2))`` in mm.
* Specificity with no background in the reference (the structure fills the array) is 1: there is
  nothing a prediction could wrongly include.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage

from pedseg.errors import ConfigError
from pedseg.evaluation.surface import (
    check_spacing,
    distance_metrics,
    union_bbox,
    worst_distance,
)

__all__ = [
    "LabelMetrics",
    "Summary",
    "case_metrics",
    "label_metrics",
    "slice_dice",
    "summarize",
    "summarize_metric",
    "worst_distance",
]


@dataclass(frozen=True)
class LabelMetrics:
    """Metrics of one label in one case. Overlap metrics and RAVD are fractions, distances mm."""

    label: int
    dice: float
    sensitivity: float
    specificity: float
    ravd: float
    assd: float
    mssd: float
    hd95: float
    volume_ref_ml: float
    volume_pred_ml: float
    empty_reference: bool
    empty_prediction: bool


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation and median of one metric over ``n`` label-cases, with how
    many of them had an empty reference or prediction (and so a convention value, see above)."""

    mean: float
    std: float
    median: float
    n: int
    n_empty_reference: int
    n_empty_prediction: int


METRIC_NAMES = tuple(
    f.name
    for f in fields(LabelMetrics)
    if f.name not in ("label", "empty_reference", "empty_prediction")
)


_CORNER = (slice(0, 1),) * 3  # the crop used for a label absent from both masks


def _check_masks(pred: np.ndarray, ref: np.ndarray) -> None:
    for name, mask in (("pred", pred), ("ref", ref)):
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
            kind = mask.dtype if isinstance(mask, np.ndarray) else type(mask).__name__
            raise ConfigError(
                f"{name} must be a boolean numpy mask, got {kind}; pass (labels == k) for label k"
            )
    if pred.shape != ref.shape:
        raise ConfigError(
            f"prediction and reference must have the same shape, got {pred.shape} and {ref.shape}"
        )
    if pred.ndim not in (2, 3) or pred.size == 0:
        raise ConfigError(f"masks must be non-empty 2D or 3D arrays, got shape {pred.shape}")


def label_metrics(
    pred: np.ndarray, ref: np.ndarray, *, spacing: Sequence[float], label: int = 1
) -> LabelMetrics:
    """All metrics of boolean masks ``pred`` against ``ref`` (same shape, spacing in mm per axis)."""
    _check_masks(pred, ref)
    sizes = check_spacing(spacing, pred.ndim)
    box = union_bbox(pred, ref) or _CORNER[: pred.ndim]
    return _box_metrics(pred[box], ref[box], image_shape=pred.shape, sizes=sizes, label=label)


def _box_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    *,
    image_shape: tuple[int, ...],
    sizes: tuple[float, ...],
    label: int,
) -> LabelMetrics:
    """Metrics from crops holding every foreground voxel of both masks of an image."""
    n_ref = int(np.count_nonzero(ref))
    n_pred = int(np.count_nonzero(pred))
    tp = int(np.count_nonzero(pred & ref))
    negatives = math.prod(image_shape) - n_ref
    false_pos = n_pred - tp
    empty_ref, empty_pred = n_ref == 0, n_pred == 0
    if empty_ref:
        dice = sensitivity = 1.0 if empty_pred else 0.0
        ravd = 0.0 if empty_pred else math.inf
    else:
        dice = 2.0 * tp / (n_ref + n_pred)
        sensitivity = tp / n_ref
        ravd = abs(n_ref - n_pred) / n_ref
    specificity = 1.0 if negatives == 0 else (negatives - false_pos) / negatives
    distances = distance_metrics(pred, ref, spacing=sizes, image_shape=image_shape)
    voxel_ml = math.prod(sizes) / 1000.0
    return LabelMetrics(
        label=int(label),
        dice=dice,
        sensitivity=sensitivity,
        specificity=specificity,
        ravd=ravd,
        assd=distances.assd,
        mssd=distances.mssd,
        hd95=distances.hd95,
        volume_ref_ml=n_ref * voxel_ml,
        volume_pred_ml=n_pred * voxel_ml,
        empty_reference=empty_ref,
        empty_prediction=empty_pred,
    )


def _check_label_maps(pred: np.ndarray, ref: np.ndarray, label_ids: Sequence[int]) -> list[int]:
    for name, labels in (("prediction", pred), ("reference", ref)):
        if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "biu":
            kind = labels.dtype if isinstance(labels, np.ndarray) else type(labels).__name__
            raise ConfigError(f"{name} must be an integer label map, got {kind}")
    if pred.shape != ref.shape:
        raise ConfigError(
            f"prediction shape {pred.shape} differs from reference shape {ref.shape}; "
            "resample the prediction onto the reference grid"
        )
    ids = [int(i) for i in label_ids]
    if not ids:
        raise ConfigError("label_ids is empty; give the label values to evaluate, e.g. [1, 2, 3]")
    if len(set(ids)) != len(ids) or any(i <= 0 for i in ids):
        raise ConfigError(
            f"label_ids must be distinct positive labels (0 is background), got {ids}"
        )
    return ids


def case_metrics(
    pred: np.ndarray, ref: np.ndarray, *, spacing: Sequence[float], label_ids: Sequence[int]
) -> list[LabelMetrics]:
    """:func:`label_metrics` for each label of integer label maps, in the order of ``label_ids``.

    A label absent from both maps is the "both empty" case (Dice 1, distances 0).
    """
    ids = _check_label_maps(pred, ref, label_ids)
    if pred.ndim not in (2, 3) or pred.size == 0:
        raise ConfigError(f"label maps must be non-empty 2D or 3D arrays, got shape {pred.shape}")
    sizes = check_spacing(spacing, pred.ndim)
    top = max(ids)
    # One pass per map finds every label's bounding box; each label is then handled in its crop.
    boxes_pred = ndimage.find_objects(_as_int(pred), max_label=top)
    boxes_ref = ndimage.find_objects(_as_int(ref), max_label=top)
    results: list[LabelMetrics] = []
    for i in ids:
        box = _merge(boxes_pred[i - 1], boxes_ref[i - 1]) or _CORNER[: pred.ndim]
        p, r = pred[box] == i, ref[box] == i
        results.append(_box_metrics(p, r, image_shape=pred.shape, sizes=sizes, label=i))
    return results


def _as_int(labels: np.ndarray) -> np.ndarray:
    return labels.view(np.uint8) if labels.dtype == np.bool_ else labels


def _merge(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    """The smallest box holding boxes ``a`` and ``b`` (either may be ``None``, for empty)."""
    if a is None or b is None:
        return b if a is None else a
    return tuple(
        slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True)
    )


def slice_dice(
    pred: np.ndarray, ref: np.ndarray, *, axis: int, label_ids: Sequence[int]
) -> np.ndarray:
    """2D Dice of each slice along ``axis``, pooled over labels (the samples of the paper's KS tests).

    For each label in ``label_ids`` order, then each slice index in increasing order, one value is
    returned for every slice where the reference *or* the prediction holds that label; slices where
    neither does are left out (their Dice would be a vacuous 1). A hallucinated or missed label in a
    slice therefore contributes a 0. Call with one label for per-label samples. Returns float64, 1D.
    """
    ids = _check_label_maps(pred, ref, label_ids)
    if not 0 <= axis < pred.ndim:
        raise ConfigError(
            f"axis must be in [0, {pred.ndim - 1}] for shape {pred.shape}, got {axis}"
        )
    others = tuple(i for i in range(pred.ndim) if i != axis)
    values: list[np.ndarray] = []
    for i in ids:
        p, r = pred == i, ref == i
        tp = np.count_nonzero(p & r, axis=others)
        total = np.count_nonzero(p, axis=others) + np.count_nonzero(r, axis=others)
        kept = total > 0
        values.append(2.0 * tp[kept] / total[kept])
    return np.concatenate(values).astype(np.float64)


def summarize(
    values: Sequence[float] | np.ndarray,
    flags: Sequence[LabelMetrics] | Sequence[tuple[bool, bool]],
) -> Summary:
    """Summarize one metric over label-cases; ``flags[i]`` is the ``LabelMetrics`` that
    ``values[i]`` came from, or its ``(empty_reference, empty_prediction)`` pair.

    Nothing is dropped: ``n`` counts every value. NaN is refused (no metric here produces it). An
    infinite value (RAVD of a hallucinated structure) makes the mean and std infinite. ``std`` is
    the sample standard deviation (ddof = 1), 0 for a single value.
    """
    data = np.asarray(values, dtype=np.float64).reshape(-1)
    if data.size == 0:
        raise ConfigError("cannot summarize an empty list of metric values")
    if len(flags) != data.size:
        raise ConfigError(f"summarize got {data.size} values but {len(flags)} flags; pass one each")
    nan = np.flatnonzero(np.isnan(data))
    if nan.size:
        raise ConfigError(
            f"metric values hold NaN at positions {nan[:10].tolist()}; pedseg metrics never "
            "produce NaN, compute them with pedseg.evaluation.metrics"
        )
    pairs = [
        (f.empty_reference, f.empty_prediction) if isinstance(f, LabelMetrics) else f for f in flags
    ]
    if not np.all(np.isfinite(data)):
        std = math.inf
    else:
        std = float(np.std(data, ddof=1)) if data.size > 1 else 0.0
    return Summary(
        mean=float(np.mean(data)),
        std=std,
        median=float(np.median(data)),
        n=int(data.size),
        n_empty_reference=sum(bool(r) for r, _ in pairs),
        n_empty_prediction=sum(bool(p) for _, p in pairs),
    )


def summarize_metric(metrics: Sequence[LabelMetrics], name: str) -> Summary:
    """:func:`summarize` of field ``name`` (e.g. ``"dice"``) over ``metrics``."""
    if name not in METRIC_NAMES:
        raise ConfigError(f"unknown metric {name!r}; known: {', '.join(METRIC_NAMES)}")
    return summarize([float(getattr(m, name)) for m in metrics], metrics)
