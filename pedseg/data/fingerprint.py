"""A domain's dataset fingerprint: the facts the planner decides from, cached beside the slice cache.

Computed from the raw volumes and label maps (read with :mod:`pedseg.io`, canonical grid, before
any resizing; see :mod:`pedseg.data.case_facts` for what is measured per case), so it does not
depend on the image size. Per domain: the cases, slices per case, spacings, in-plane sizes,
intensity percentiles (0.5, 50, 99.5) of the foreground and of the whole image; per label
(:class:`LabelFingerprint`): voxel counts, bounding box, connected components and the smallest
in-plane cross-section; and whether its labels form a chain (serial anatomy such as vertebrae,
:mod:`pedseg.data.label_chain`).

Definitions:

* *major component*: a 26-connected component holding at least ``MAJOR_FRACTION`` (10 %) of the
  voxels of the case's largest component of that label; smaller ones are annotation specks.
  ``major_components`` counts them per case (bilateral femurs: 2), ``smallest_major_mm3`` is the
  volume of the smallest major component in any case, ``largest_minor_mm3`` the largest speck.
* *cross-section*: ``min_extent_fraction`` is the ``CROSS_SECTION_PERCENTILE`` (5th) percentile,
  over every slice of every case that holds the label, of the smaller side of the label's in-plane
  bounding box as a fraction of the slice's side; :meth:`LabelFingerprint.cross_section_px` turns
  it into network pixels at an image size (a 5 % fraction is 4.8 px at 96², 6.4 px at 128²).

The cache file ``<cache_root>/<domain>-<hash>.fingerprint.json`` (``$PEDSEG_HOME/cache`` by
default, the slice cache's folder) is keyed by the descriptor's content hash and holds the source
files' size, mtime and SHA-256; it is reused while they match, exactly like the slice cache (a
touched file with the same content keeps it). Writes are atomic; reading is strict.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pedseg import __version__
from pedseg.data.cache import default_cache_root, source_record, sources_state
from pedseg.data.case_facts import CaseFacts, case_facts
from pedseg.data.dataset import Case, list_cases
from pedseg.data.label_chain import LabelChain, chain_from_optional, detect_chain
from pedseg.data.preprocess import resolve_slice_axis
from pedseg.domains.spec import DomainSpec
from pedseg.errors import DatasetError, PlanError, VolumeError
from pedseg.io import check_pair, read_label, read_volume
from pedseg.io.atomic import write_text_atomic
from pedseg.io.strictjson import Reader

__all__ = [
    "CROSS_SECTION_PERCENTILE",
    "FINGERPRINT_FORMAT",
    "MAJOR_FRACTION",
    "Fingerprint",
    "LabelFingerprint",
    "compute_fingerprint",
    "dataset_fingerprint",
    "fingerprint_path",
]

logger = logging.getLogger(__name__)

FINGERPRINT_FORMAT = 2
MAJOR_FRACTION = 0.1
CROSS_SECTION_PERCENTILE = 5.0
PERCENTILES = (0.5, 50.0, 99.5)
Triple = tuple[float, float, float]
Pair = tuple[float, float]


@dataclass(frozen=True)
class LabelFingerprint:
    """One label's facts over the cases that hold it (see the module docstring)."""

    label_id: int
    name: str
    cases: int
    voxels_median: float
    volume_mm3_median: float
    bbox_mm_median: Triple
    components: tuple[int, ...]
    major_components: tuple[int, ...]
    smallest_major_mm3: float
    largest_minor_mm3: float
    min_extent_fraction: float

    def cross_section_px(self, size: int) -> float:
        """The label's smallest cross-section (5th percentile) in pixels at ``size`` x ``size``."""
        return self.min_extent_fraction * size

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("bbox_mm_median", "components", "major_components"):
            out[key] = list(out[key])
        return out

    @classmethod
    def from_reader(cls, r: Reader) -> LabelFingerprint:
        r.check_keys([f for f in cls.__dataclass_fields__])
        bbox = r.numbers("bbox_mm_median", length=3, low=0.0)
        return cls(
            label_id=r.integer("label_id", low=1),
            name=r.text("name"),
            cases=r.integer("cases", low=0),
            voxels_median=r.number("voxels_median", low=0.0),
            volume_mm3_median=r.number("volume_mm3_median", low=0.0),
            bbox_mm_median=(bbox[0], bbox[1], bbox[2]),
            components=r.integers("components", low=1),
            major_components=r.integers("major_components", low=1),
            smallest_major_mm3=r.number("smallest_major_mm3", low=0.0),
            largest_minor_mm3=r.number("largest_minor_mm3", low=0.0),
            min_extent_fraction=r.number("min_extent_fraction", low=0.0, high=1.0),
        )


@dataclass(frozen=True)
class Fingerprint:
    """A domain's dataset facts (see the module docstring). Spacings in mm, canonical axes."""

    domain: str
    descriptor_hash: str
    content_key: str
    num_cases: int
    total_slices: int
    slices_per_case: Triple
    """Median, min, max."""
    slice_axes: tuple[int, ...]
    spacing_median: Triple
    spacing_min: Triple
    spacing_max: Triple
    in_plane_median: Pair
    in_plane_min: Pair
    in_plane_max: Pair
    in_plane_spacing_median: Pair
    foreground_intensity: Triple
    image_intensity: Triple
    labels: tuple[LabelFingerprint, ...]
    build_seconds: float
    """How long reading and analysing the cases took (estimates the slice cache's build)."""
    label_chain: LabelChain | None = None
    """Serial labels (vertebrae) found in the training labels (:mod:`pedseg.data.label_chain`)."""

    def label(self, name: str) -> LabelFingerprint:
        for entry in self.labels:
            if entry.name == name:
                return entry
        raise PlanError(f"domain {self.domain!r} has no label {name!r}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FINGERPRINT_FORMAT}
        for key, value in asdict(self).items():
            out[key] = list(value) if isinstance(value, tuple) else value
        out["labels"] = [entry.to_dict() for entry in self.labels]
        out["label_chain"] = None if self.label_chain is None else self.label_chain.to_dict()
        return out

    @classmethod
    def from_dict(cls, raw: Any, *, source: str = "fingerprint") -> Fingerprint:
        """Strict inverse of :meth:`to_dict`; problems raise :class:`PlanError` naming the field."""
        r = raw if isinstance(raw, Reader) else Reader(raw, source=source)
        r.check_keys(["format", *cls.__dataclass_fields__])
        if r.integer("format") != FINGERPRINT_FORMAT:
            r.fail(f"must be {FINGERPRINT_FORMAT}; delete the file to recompute it", "format")

        def triple(key: str) -> Triple:
            return _triple(r.numbers(key, length=3, low=0.0))

        def pair(key: str) -> Pair:
            return _pair(r.numbers(key, length=2, low=0.0))

        return cls(
            domain=r.text("domain"),
            descriptor_hash=r.text("descriptor_hash"),
            content_key=r.text("content_key"),
            num_cases=r.integer("num_cases", low=1),
            total_slices=r.integer("total_slices", low=1),
            slices_per_case=triple("slices_per_case"),
            slice_axes=r.integers("slice_axes", low=0),
            spacing_median=triple("spacing_median"),
            spacing_min=triple("spacing_min"),
            spacing_max=triple("spacing_max"),
            in_plane_median=pair("in_plane_median"),
            in_plane_min=pair("in_plane_min"),
            in_plane_max=pair("in_plane_max"),
            in_plane_spacing_median=pair("in_plane_spacing_median"),
            foreground_intensity=_triple(r.numbers("foreground_intensity", length=3)),
            image_intensity=_triple(r.numbers("image_intensity", length=3)),
            labels=tuple(LabelFingerprint.from_reader(c) for c in r.children("labels")),
            build_seconds=r.number("build_seconds", low=0.0),
            label_chain=chain_from_optional(
                r.value("label_chain"),
                source=f"{r.source}: label_chain",
                names=[c.text("name") for c in r.children("labels")],
            ),
        )


def _triple(values: Sequence[float] | np.ndarray) -> Triple:
    return (float(values[0]), float(values[1]), float(values[2]))


def _pair(values: Sequence[float] | np.ndarray) -> Pair:
    return (float(values[0]), float(values[1]))


def fingerprint_path(spec: DomainSpec, *, cache_root: Path | None = None) -> Path:
    """Where ``spec``'s fingerprint is cached."""
    key = f"{spec.content_hash()}:fingerprint:{FINGERPRINT_FORMAT}"
    short = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    root = cache_root if cache_root is not None else default_cache_root()
    return root / f"{spec.name}-{short}.fingerprint.json"


def dataset_fingerprint(
    spec: DomainSpec, *, cache_root: Path | None = None, force: bool = False
) -> Fingerprint:
    """``spec``'s fingerprint: from the cache while its sources are unchanged, else computed."""
    cases = list_cases(spec)
    root = spec.data.root if spec.data is not None else None
    path = fingerprint_path(spec, cache_root=cache_root)
    if not force and path.is_file():
        cached = _reuse(path, spec, cases, root)
        if cached is not None:
            logger.info("fingerprint of %s is up to date: %s", spec.name, path)
            return cached
    logger.info("computing the fingerprint of %s (%d cases)", spec.name, len(cases))
    sources = [_sources(case, root) for case in cases]
    fingerprint = compute_fingerprint(spec, cases=cases, sources=sources)
    payload = {
        "pedseg_version": __version__,
        "sources": sources,
        "fingerprint": fingerprint.to_dict(),
    }
    write_text_atomic(path, json.dumps(payload, indent=1) + "\n")
    return fingerprint


def _sources(case: Case, root: Path | None) -> dict[str, Any]:
    if case.label is None:
        raise DatasetError(
            f"domain case {case.case_id!r} has no label file; run `pedseg check` on the domain"
        )
    image, label = source_record(case.image, root), source_record(case.label, root)
    return {"case_id": case.case_id, "image": image, "label": label}


def _reuse(
    path: Path, spec: DomainSpec, cases: Sequence[Case], root: Path | None
) -> Fingerprint | None:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("pedseg_version") != __version__:
            return None
        state = sources_state(cases, raw["sources"], root)
        if state == "changed":
            return None
        fingerprint = Fingerprint.from_dict(raw["fingerprint"], source=str(path))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, PlanError) as exc:
        logger.warning("recomputing the fingerprint %s: %s", path, exc)
        return None
    if fingerprint.descriptor_hash != spec.content_hash():
        return None
    if state == "touched":  # same content, new mtime: remember it (best effort)
        with contextlib.suppress(OSError):
            write_text_atomic(path, json.dumps(raw, indent=1) + "\n")
    return fingerprint


def compute_fingerprint(
    spec: DomainSpec,
    *,
    cases: Sequence[Case] | None = None,
    sources: Sequence[dict[str, Any]] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Fingerprint:
    """Read every case of ``spec`` (one at a time) and summarise it; nothing is cached."""
    started = clock()
    case_list = list(cases) if cases is not None else list_cases(spec)
    if not case_list:
        raise DatasetError(f"domain {spec.name!r}: no cases to fingerprint")
    root = spec.data.root if spec.data is not None else None
    records = list(sources) if sources is not None else [_sources(c, root) for c in case_list]
    facts = [_read_case(spec, case) for case in case_list]
    key_payload = {
        "descriptor_hash": spec.content_hash(),
        "files": [[r["case_id"], r["image"]["sha256"], r["label"]["sha256"]] for r in records],
    }
    content_key = hashlib.sha256(json.dumps(key_payload, sort_keys=True).encode()).hexdigest()
    return _summarise(spec, facts, content_key=content_key[:16], seconds=clock() - started)


def _read_case(spec: DomainSpec, case: Case) -> CaseFacts:
    if case.label is None:
        raise DatasetError(f"domain {spec.name!r}, case {case.case_id!r}: no label file")
    try:
        image = read_volume(case.image)
        label = read_label(case.label, allowed={0, *spec.label_ids})
        check_pair(image, label)
    except VolumeError as exc:
        raise DatasetError(
            f"domain {spec.name!r}, case {case.case_id!r}: {exc}; run `pedseg check {spec.name}`"
        ) from exc
    return case_facts(
        image.array,
        label.array,
        spacing=image.spacing,
        axis=resolve_slice_axis(spec, image),
        label_ids=spec.label_ids,
    )


def _summarise(
    spec: DomainSpec, facts: Sequence[CaseFacts], *, content_key: str, seconds: float
) -> Fingerprint:
    spacing = np.asarray([f.spacing for f in facts], dtype=np.float64)
    in_plane = np.asarray([f.in_plane for f in facts], dtype=np.float64)
    slices = np.asarray([f.num_slices for f in facts], dtype=np.float64)
    return Fingerprint(
        domain=spec.name,
        descriptor_hash=spec.content_hash(),
        content_key=content_key,
        num_cases=len(facts),
        total_slices=int(slices.sum()),
        slices_per_case=(float(np.median(slices)), float(slices.min()), float(slices.max())),
        slice_axes=tuple(sorted({f.axis for f in facts})),
        spacing_median=_triple(np.median(spacing, axis=0)),
        spacing_min=_triple(spacing.min(axis=0)),
        spacing_max=_triple(spacing.max(axis=0)),
        in_plane_median=_pair(np.median(in_plane, axis=0)),
        in_plane_min=_pair(in_plane.min(axis=0)),
        in_plane_max=_pair(in_plane.max(axis=0)),
        in_plane_spacing_median=_pair(np.median([f.in_plane_spacing for f in facts], axis=0)),
        foreground_intensity=_percentiles([f.foreground_sample for f in facts]),
        image_intensity=_percentiles([f.image_sample for f in facts]),
        labels=tuple(_label(facts, label_id, name) for label_id, name in spec.labels),
        build_seconds=float(max(seconds, 0.0)),
        label_chain=detect_chain(
            [
                {i: (e.centroid_mm, e.bbox_mm, e.voxels * f.voxel_mm3) for i, e in f.labels.items()}
                for f in facts
            ],
            spec.labels,
        ),
    )


def _percentiles(samples: Sequence[np.ndarray]) -> Triple:
    pooled = np.concatenate([s for s in samples if s.size] or [np.zeros(1)])
    return _triple(np.percentile(pooled, PERCENTILES))


def _label(facts: Sequence[CaseFacts], label_id: int, name: str) -> LabelFingerprint:
    present = [(f, f.labels[label_id]) for f in facts if label_id in f.labels]
    if not present:
        return LabelFingerprint(label_id, name, 0, 0.0, 0.0, (0.0, 0.0, 0.0), (), (), 0.0, 0.0, 0.0)
    majors: list[int] = []
    smallest_major, largest_minor = np.inf, 0.0
    for case, entry in present:
        sizes = entry.components.astype(np.float64)
        is_major = sizes >= MAJOR_FRACTION * sizes[0]
        majors.append(int(is_major.sum()))
        smallest_major = min(smallest_major, float(sizes[is_major].min()) * case.voxel_mm3)
        if (~is_major).any():
            largest_minor = max(largest_minor, float(sizes[~is_major].max()) * case.voxel_mm3)
    voxels = np.asarray([e.voxels for _, e in present], dtype=np.float64)
    volumes = np.asarray([e.voxels * f.voxel_mm3 for f, e in present], dtype=np.float64)
    extents = np.concatenate([e.extents for _, e in present])
    return LabelFingerprint(
        label_id=label_id,
        name=name,
        cases=len(present),
        voxels_median=float(np.median(voxels)),
        volume_mm3_median=float(np.median(volumes)),
        bbox_mm_median=_triple(np.median([e.bbox_mm for _, e in present], axis=0)),
        components=tuple(int(e.components.size) for _, e in present),
        major_components=tuple(majors),
        smallest_major_mm3=float(smallest_major),
        largest_minor_mm3=float(largest_minor),
        min_extent_fraction=float(np.percentile(extents, CROSS_SECTION_PERCENTILE)),
    )
