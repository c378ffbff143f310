"""Post-processing decided from the training labels, as nnU-Net decides its own from data.

Per label (:func:`choose_postprocess`, from a domain's :class:`~pedseg.data.fingerprint.Fingerprint`):
keep the k largest components, k = the most major components any training case has (bilateral
femurs: 2), and drop components below half the smallest major one. Per domain whose labels form a
chain (:mod:`pedseg.data.label_chain`): the chain. :func:`trained_postprocess` gathers both for a
training run, whose card records them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from pedseg.data.fingerprint import Fingerprint, dataset_fingerprint
from pedseg.data.label_chain import LabelChain
from pedseg.domains.spec import DomainSpec

__all__ = [
    "LabelPostprocess",
    "TrainedPostprocess",
    "choose_postprocess",
    "component_limits",
    "trained_postprocess",
]


@dataclass(frozen=True)
class LabelPostprocess:
    """How to clean one label's prediction in 3D, decided from the training labels.

    ``keep_largest``: keep at most this many components (0 = all); ``min_volume_mm3``: drop
    components smaller than this (0 = none), except the largest, which is always kept.
    """

    domain: str
    label: str
    keep_largest: int
    min_volume_mm3: float
    reason: str


def choose_postprocess(fingerprints: Sequence[Fingerprint]) -> tuple[LabelPostprocess, ...]:
    """Per label: keep the k largest components and drop small ones, k from the training labels.

    ``k`` = the most major components any training case has (bilateral femurs: 2); components
    below half the smallest major component seen in training are dropped.
    """
    out: list[LabelPostprocess] = []
    for fp in fingerprints:
        for entry in fp.labels:
            if entry.cases == 0:
                out.append(
                    LabelPostprocess(
                        fp.domain, entry.name, 0, 0.0, "absent from every training label map"
                    )
                )
                continue
            k = max(entry.major_components)
            volume = 0.5 * entry.smallest_major_mm3
            counts = sorted(set(entry.major_components))
            shown = "/".join(str(c) for c in counts)
            out.append(
                LabelPostprocess(
                    domain=fp.domain,
                    label=entry.name,
                    keep_largest=k,
                    min_volume_mm3=volume,
                    reason=(
                        f"{shown} major component(s) per training case ({entry.cases} cases): "
                        f"keep the {k} largest, drop components < {volume:,.0f} mm³ (half the "
                        "smallest major one)"
                    ),
                )
            )
    return tuple(out)


def component_limits(
    specs: Sequence[DomainSpec], *, cache_root: Path | None = None
) -> dict[str, dict[str, tuple[int, float]]]:
    """Per domain and label name ``(keep_largest, min_volume_mm3)`` from the domains' training
    labels (their fingerprints, computed or cached): what prediction's post-processing keeps."""
    rules = choose_postprocess([dataset_fingerprint(spec, cache_root=cache_root) for spec in specs])
    out: dict[str, dict[str, tuple[int, float]]] = {}
    for rule in rules:
        out.setdefault(rule.domain, {})[rule.label] = (rule.keep_largest, rule.min_volume_mm3)
    return out


class TrainedPostprocess(NamedTuple):
    """What prediction's post-processing takes from the training labels, per domain."""

    components: dict[str, dict[str, tuple[int, float]]]
    """Per label name ``(keep_largest, min_volume_mm3)`` (:func:`component_limits`)."""
    chains: dict[str, LabelChain]
    """The domains whose labels form a chain (:mod:`pedseg.data.label_chain`)."""


def trained_postprocess(
    specs: Sequence[DomainSpec], *, cache_root: Path | None = None
) -> TrainedPostprocess:
    """:class:`TrainedPostprocess` of ``specs`` from their fingerprints (computed or cached)."""
    chains: dict[str, LabelChain] = {}
    for spec in specs:
        chain = dataset_fingerprint(spec, cache_root=cache_root).label_chain
        if chain is not None:
            chains[spec.name] = chain
    return TrainedPostprocess(component_limits(specs, cache_root=cache_root), chains)
