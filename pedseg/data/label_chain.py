"""Serial anatomy found in the training labels: labels that form an ordered, evenly spaced chain.

Vertebrae L1..L5 (or ribs, digits) are near-identical structures told apart only by their place in
the series. A 2D network sees one slice and often counts wrong: on the real spine data it labels
L5, L4 and L3 correctly and then calls the next vertebra up L3 again, L1 "L2" and T12 "L1" (Dice
0 for L1 and L2 although every vertebral body is segmented). :func:`detect_chain` finds such a
series in the training labels, as nnU-Net decides its post-processing from data, and
:func:`pedseg.inference.chain.order_chain` renumbers a prediction's members by their order.

A domain's labels form a chain (:class:`LabelChain`) when, in **every** training case:

* at least ``MIN_MEMBERS`` (4) labels are present in every case (the candidates, in label-id order;
  three different bones stacked along an axis, like calcaneus, talus and tibia, are no series);
* their centroids are strictly monotone along one canonical axis, in the same direction in every
  case (if several axes qualify, the one with the longest median span);
* every gap between consecutive centroids along that axis lies within ``GAP_TOLERANCE``
  (0.5x-1.5x) of the case's median gap;

and, over all cases, the members are alike: the largest median member volume is at most
``VOLUME_RATIO`` (3x) the smallest, so is every side of their median bounding boxes
(``BOX_RATIO``, 2x), and a member's median extent along the axis is at most
``EXTENT_RATIO`` (1.5x) the median gap (members follow each other along the axis instead of being
nested in each other). Pelvic bones (femur,
ilium, lumbar spine, sacrum) fail these tests; lumbar vertebral bodies pass them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pedseg.errors import PlanError
from pedseg.io.strictjson import Reader

__all__ = [
    "BOX_RATIO",
    "EXTENT_RATIO",
    "GAP_TOLERANCE",
    "MIN_MEMBERS",
    "VOLUME_RATIO",
    "LabelChain",
    "detect_chain",
]

MIN_MEMBERS = 4
GAP_TOLERANCE = (0.5, 1.5)
VOLUME_RATIO = 3.0
BOX_RATIO = 2.0
EXTENT_RATIO = 1.5
UNIT_FRACTION = 0.25
"""Prediction components below this fraction of the smallest training member are not members."""


@dataclass(frozen=True)
class LabelChain:
    """An ordered series of labels along one canonical axis (see the module docstring).

    ``labels``: the member label names in order of increasing coordinate along ``axis``;
    ``gap_mm``: the median distance between consecutive members' centroids along the axis;
    ``extent_mm``: a member's median extent along the axis; ``volume_mm3``: a member's median
    volume; ``min_unit_mm3``: prediction components smaller than this are too small to count as a
    member.
    """

    labels: tuple[str, ...]
    axis: int
    gap_mm: float
    extent_mm: float
    volume_mm3: float
    min_unit_mm3: float
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "axis": self.axis,
            "gap_mm": self.gap_mm,
            "extent_mm": self.extent_mm,
            "volume_mm3": self.volume_mm3,
            "min_unit_mm3": self.min_unit_mm3,
            "reason": self.reason,
        }

    @classmethod
    def from_reader(cls, r: Reader, *, names: Sequence[str] | None = None) -> LabelChain:
        """Strict inverse of :meth:`to_dict`; ``names``: the domain's label names, if known."""
        r.check_keys(
            ["labels", "axis", "gap_mm", "extent_mm", "volume_mm3", "min_unit_mm3", "reason"]
        )
        labels = [str(v) for v in r.items("labels") if isinstance(v, str)]
        if len(labels) != len(r.items("labels")):
            r.fail("must be a list of label names", "labels")
        if len(labels) < 2 or len(set(labels)) != len(labels):
            r.fail(f"must be at least 2 distinct label names, got {labels!r}", "labels")
        if names is not None:
            unknown = [n for n in labels if n not in names]
            if unknown:
                r.fail(f"{unknown[0]!r} is not a label of the domain", "labels")
        axis = r.integer("axis", low=0)
        if axis > 2:
            r.fail(f"must be 0, 1 or 2, got {axis}", "axis")
        return cls(
            labels=tuple(labels),
            axis=axis,
            gap_mm=r.number("gap_mm", low=1e-6),
            extent_mm=r.number("extent_mm", low=0.0),
            volume_mm3=r.number("volume_mm3", low=1e-6),
            min_unit_mm3=r.number("min_unit_mm3", low=0.0),
            reason=r.text("reason"),
        )

    @classmethod
    def from_dict(cls, raw: Any, *, source: str, names: Sequence[str] | None = None) -> LabelChain:
        return cls.from_reader(Reader(raw, source=source), names=names)


def detect_chain(
    cases: Sequence[
        Mapping[int, tuple[tuple[float, float, float], tuple[float, float, float], float]]
    ],
    labels: Sequence[tuple[int, str]],
) -> LabelChain | None:
    """The chain formed by ``labels`` in ``cases``, or ``None``.

    ``cases``: per training case, per present label id ``(centroid_mm, bbox_mm, volume_mm3)``;
    ``labels``: the domain's ``(label_id, name)`` pairs.
    """
    if not cases:
        return None
    members = [(i, n) for i, n in labels if all(i in case for case in cases)]
    if len(members) < MIN_MEMBERS:
        return None
    ids = [i for i, _ in members]
    centroids = np.asarray([[case[i][0] for i in ids] for case in cases], dtype=np.float64)
    best: tuple[float, int, int] | None = None  # (span, axis, direction)
    for axis in range(3):
        steps = np.diff(centroids[:, :, axis], axis=1)  # (cases, members - 1)
        for direction in (1, -1):
            if not np.all(direction * steps > 0):
                continue
            gaps = direction * steps
            ratio = gaps / np.median(gaps, axis=1, keepdims=True)
            if ratio.min() < GAP_TOLERANCE[0] or ratio.max() > GAP_TOLERANCE[1]:
                continue
            span = float(np.median(gaps.sum(axis=1)))
            if best is None or span > best[0]:
                best = (span, axis, direction)
    if best is None:
        return None
    _, axis, direction = best
    gaps = direction * np.diff(centroids[:, :, axis], axis=1)
    gap = float(np.median(gaps))
    boxes = np.asarray([[case[i][1] for i in ids] for case in cases], dtype=np.float64)
    sides = np.median(boxes, axis=0)  # (members, 3)
    if np.any(sides.max(axis=0) > BOX_RATIO * np.maximum(sides.min(axis=0), 1e-9)):
        return None
    extents = boxes[:, :, axis]
    volumes = np.asarray([[case[i][2] for i in ids] for case in cases], dtype=np.float64)
    extent = float(np.median(extents))
    medians = np.median(volumes, axis=0)
    if extent > EXTENT_RATIO * gap or medians.max() > VOLUME_RATIO * max(
        float(medians.min()), 1e-9
    ):
        return None
    names = [n for _, n in members]
    ordered = tuple(names if direction > 0 else names[::-1])
    reason = (
        f"{'/'.join(names)} follow each other along axis {axis} in all {len(cases)} training cases, "
        f"{gap:.1f} mm apart (gaps within {GAP_TOLERANCE[0]:g}-{GAP_TOLERANCE[1]:g}x of the median): "
        "members of a prediction are renumbered by their order"
    )
    return LabelChain(
        labels=ordered,
        axis=axis,
        gap_mm=gap,
        extent_mm=extent,
        volume_mm3=float(np.median(volumes)),
        min_unit_mm3=UNIT_FRACTION * float(volumes.min()),
        reason=reason,
    )


def chain_from_optional(raw: Any, *, source: str, names: Sequence[str]) -> LabelChain | None:
    """``None`` for JSON null, else :meth:`LabelChain.from_dict` (raises :class:`PlanError`)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise PlanError(
            f"{source}: label_chain must be an object or null, got {type(raw).__name__}"
        )
    return LabelChain.from_dict(raw, source=source, names=names)
