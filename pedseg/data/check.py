"""Dataset integrity for ``pedseg check NAME``: every problem of every case, found in one pass.

Each file is read once. Per case: the image/label pair exists, both files read (missing, corrupt,
truncated, NaN/Inf, 4D and bad geometry are the reader's :class:`VolumeError` messages), the label
lies on the image's grid (shape, spacing, direction, origin), it holds only declared ids, and it has
foreground. A label absent from a case is a warning (sparse annotation happens), as is an empty
label map. The report also summarises the spacing range and the slice axis chosen. Nothing is
printed: the CLI renders the report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np

from pedseg.data.dataset import Case, scan_layout
from pedseg.data.preprocess import axis_for_spacing
from pedseg.domains.spec import DomainSpec
from pedseg.errors import VolumeError
from pedseg.io import check_pair, read_label, read_volume
from pedseg.io.volume import Volume

Status = Literal["ok", "warning", "error"]
_T = TypeVar("_T")
_RANK: dict[Status, int] = {"ok": 0, "warning": 1, "error": 2}


@dataclass(frozen=True)
class CaseFinding:
    """What the check found for one case. ``shape`` and ``spacing`` are canonical, when readable."""

    case_id: str
    status: Status
    messages: tuple[str, ...]
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    slice_axis: int | None = None
    num_slices: int | None = None


@dataclass(frozen=True)
class CheckReport:
    """The integrity report of one domain's dataset."""

    domain: str
    root: Path
    cases: tuple[CaseFinding, ...]
    slice_axis: str  # the descriptor's setting: "auto", "0", "1" or "2"
    messages: tuple[str, ...] = ()  # domain-level remarks (e.g. "auto" chose different axes)

    @property
    def ok(self) -> bool:
        """False when any case is unusable (status ``error``)."""
        return all(c.status != "error" for c in self.cases)

    @property
    def num_cases(self) -> int:
        return len(self.cases)

    def count(self, status: Status) -> int:
        return sum(1 for c in self.cases if c.status == status)

    @property
    def spacing_range(self) -> tuple[tuple[float, float, float], tuple[float, float, float]] | None:
        """Per-axis (minimum, maximum) spacing over the readable cases; ``None`` if none."""
        values = np.array([c.spacing for c in self.cases if c.spacing is not None], dtype=float)
        if values.size == 0:
            return None
        lo, hi = values.min(axis=0), values.max(axis=0)
        return (
            (float(lo[0]), float(lo[1]), float(lo[2])),
            (float(hi[0]), float(hi[1]), float(hi[2])),
        )

    @property
    def slice_axes(self) -> tuple[int, ...]:
        """The distinct slice axes chosen over the readable cases (one for a coherent dataset)."""
        return tuple(sorted({c.slice_axis for c in self.cases if c.slice_axis is not None}))

    @property
    def total_slices(self) -> int:
        return sum(c.num_slices or 0 for c in self.cases)


def check_dataset(spec: DomainSpec) -> CheckReport:
    """Check every case of ``spec``'s dataset.

    Layout problems that leave nothing to check (no data folder, no images, multi-channel images, a
    file outside the data root) raise :class:`~pedseg.errors.DatasetError` from
    :func:`pedseg.data.dataset.scan_layout`; everything else is a finding.
    """
    layout = scan_layout(spec, require_labels=True)
    findings = [check_case(case, spec, root=layout.root) for case in layout.cases]
    labels_name = spec.data.labels if spec.data is not None else "labelsTr"
    images_name = spec.data.images if spec.data is not None else "imagesTr"
    for case_id, path in layout.orphan_labels:
        findings.append(
            CaseFinding(
                case_id=case_id,
                status="error",
                messages=(
                    f"label {labels_name}/{path.name} has no image: add {images_name}/"
                    f"{case_id}.nii.gz (or _0000) or remove the label",
                ),
            )
        )
    findings.sort(key=lambda f: f.case_id)
    report = CheckReport(
        domain=spec.name,
        root=layout.root,
        cases=tuple(findings),
        slice_axis=str(spec.slice_axis),
    )
    remarks: list[str] = []
    if len(report.slice_axes) > 1:
        by_axis = {
            axis: [c.case_id for c in findings if c.slice_axis == axis]
            for axis in report.slice_axes
        }
        detail = "; ".join(f"axis {a}: {', '.join(ids[:5])}" for a, ids in by_axis.items())
        remarks.append(
            f"slice_axis 'auto' picks different axes across cases ({detail}); set slice_axis in "
            "the descriptor if the scans share an orientation"
        )
    return dataclasses.replace(report, messages=tuple(remarks)) if remarks else report


def check_case(case: Case, spec: DomainSpec, *, root: Path) -> CaseFinding:
    """Check one case (reads its image and label once each)."""
    errors: list[str] = []
    warnings: list[str] = []
    image = _read(lambda: read_volume(case.image), errors, root)
    label: Volume | None = None
    if case.label is None:
        labels_name = spec.data.labels if spec.data is not None else "labelsTr"
        errors.append(
            f"image {case.image.name} has no label: add {labels_name}/{case.case_id}.nii.gz"
        )
    else:
        label_path = case.label
        label = _read(lambda: read_label(label_path), errors, root)
    if image is not None and label is not None and _pair_matches(image, label, errors, root):
        _check_label_values(label, spec, errors, warnings)
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    axis = slices = None
    if image is not None:
        shape = image.shape
        spacing = (float(image.spacing[0]), float(image.spacing[1]), float(image.spacing[2]))
        axis = axis_for_spacing(spec.slice_axis, image.spacing)
        slices = int(shape[axis])
    status: Status = "error" if errors else "warning" if warnings else "ok"
    return CaseFinding(
        case_id=case.case_id,
        status=status,
        messages=tuple(errors + warnings),
        shape=shape,
        spacing=spacing,
        slice_axis=axis,
        num_slices=slices,
    )


def worst(statuses: Sequence[Status]) -> Status:
    """The most severe of ``statuses`` (``ok`` for none)."""
    return max(statuses, key=lambda s: _RANK[s], default="ok")


def _read(fn: Callable[[], _T], errors: list[str], root: Path) -> _T | None:
    """``fn()``, or ``None`` with its :class:`VolumeError` message added to ``errors``."""
    try:
        return fn()
    except VolumeError as exc:
        errors.append(_relative_message(exc, root))
        return None


def _pair_matches(image: Volume, label: Volume, errors: list[str], root: Path) -> bool:
    try:
        check_pair(image, label)
    except VolumeError as exc:
        errors.append(_relative_message(exc, root))
        return False
    return True


def _relative_message(exc: VolumeError, root: Path) -> str:
    """The error's message with its path shortened to the part below the data root."""
    text = str(exc)
    prefix = f"{exc.path}: "
    if text.startswith(prefix):
        try:
            rel = Path(exc.path).relative_to(root)
        except ValueError:
            rel = Path(exc.path)
        text = f"{rel}: {text[len(prefix) :]}"
    return text


def _check_label_values(
    label: Volume, spec: DomainSpec, errors: list[str], warnings: list[str]
) -> None:
    counts = np.bincount(label.array.ravel())
    present = {int(v) for v in np.flatnonzero(counts)}
    declared = set(spec.label_ids)
    undeclared = sorted(present - declared - {0})
    if undeclared:
        errors.append(
            f"label values {{{', '.join(map(str, undeclared))}}} are not declared in domain "
            f"{spec.name!r} (declared: 0-{max(declared)}); fix the label map or the descriptor"
        )
    if not present - {0}:
        warnings.append("label map is empty (no foreground)")
        return
    for label_id, name in spec.labels:
        if label_id not in present:
            warnings.append(f"label {label_id} ({name}) absent")
