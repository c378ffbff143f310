"""Label mappings: the classes of the head each domain's labels are predicted by.

For ``dsl``/``dsl-contrastive``/``baseline``, domain ``k``'s label with position ``j`` in its
descriptor (1-based) is class ``j`` of head ``k``. For ``joint`` there is one head over the *union*
of labels, kept disjoint per domain: domain ``k``'s label ``j`` is global class ``offset_k + j`` with
``offset_k`` = the number of labels of the domains before ``k``. A joint prediction of another
domain's class counts as background for this domain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pedseg.domains.spec import DomainSpec

__all__ = ["LabelMapping", "label_mappings"]


@dataclass(frozen=True)
class LabelMapping:
    """How a domain's label ids map to the classes of the head it uses (see module docstring)."""

    domain: str
    head: int
    classes: dict[int, int]
    """Label id -> class index of the head (background 0 -> 0 implied)."""
    num_classes: int
    """Output channels of the head."""

    def target_lut(self) -> np.ndarray:
        """uint8 label value -> class index (int64), 256 entries; undeclared values map to 0."""
        lut = np.zeros(256, dtype=np.int64)
        for label, cls in self.classes.items():
            lut[label] = cls
        return lut

    def prediction_lut(self) -> np.ndarray:
        """Class index of the head -> this domain's label id (other domains' classes -> 0)."""
        lut = np.zeros(self.num_classes, dtype=np.int64)
        for label, cls in self.classes.items():
            lut[cls] = label
        return lut

    def to_dict(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "num_classes": self.num_classes,
            "classes": {str(label): cls for label, cls in sorted(self.classes.items())},
        }

    @classmethod
    def from_dict(cls, domain: str, raw: Mapping[str, Any]) -> LabelMapping:
        """Inverse of :meth:`to_dict`; ``ValueError`` naming the problem for malformed input."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"must be a mapping, got {type(raw).__name__}")
        try:
            head, total = raw["head"], raw["num_classes"]
            table = raw["classes"]
            if not isinstance(table, Mapping):
                raise TypeError("classes must be a mapping")
            classes = {int(label): int(value) for label, value in table.items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"is malformed ({exc!r})") from None
        for name, value in (("head", head), ("num_classes", total)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not all(0 < c < total for c in classes.values()) or len(set(classes.values())) != len(
            classes
        ):
            raise ValueError(
                f"classes must be distinct head classes in [1, {total}), got {table!r}"
            )
        return cls(domain=domain, head=head, classes=classes, num_classes=total)


def label_mappings(specs: Sequence[DomainSpec], *, scheme: str) -> list[LabelMapping]:
    """One :class:`LabelMapping` per domain, in domain order."""
    if scheme != "joint":
        return [
            LabelMapping(
                domain=spec.name,
                head=k,
                classes={label: j + 1 for j, label in enumerate(spec.label_ids)},
                num_classes=spec.num_classes,
            )
            for k, spec in enumerate(specs)
        ]
    total = 1 + sum(len(spec.labels) for spec in specs)
    out: list[LabelMapping] = []
    offset = 0
    for spec in specs:
        classes = {label: offset + j + 1 for j, label in enumerate(spec.label_ids)}
        out.append(LabelMapping(domain=spec.name, head=0, classes=classes, num_classes=total))
        offset += len(spec.labels)
    return out
