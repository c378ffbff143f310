"""Domain descriptors: frozen dataclasses and strict validation of the YAML schema.

A domain is one dataset: its label set, intensity normalisation, slice axis, the in-plane size the
network sees, optional 3D post-processing settings and, optionally, where its files are. Loading is
strict: every problem of a file is collected and reported at once as ``file: field: message``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pedseg.domains.outputs_spec import OutputsSpec, parse_outputs_section
from pedseg.errors import ConfigError, DescriptorError

SCHEMA_VERSION = 1
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_ .-]{0,62}$")
SliceAxis = Literal["auto", 0, 1, 2]

_TOP_KEYS = {
    "schema_version": "required, must be 1",
    "name": "required",
    "description": "optional",
    "modality": "optional",
    "labels": "required",
    "normalization": "required",
    "slice_axis": "optional",
    "image_size": "optional",
    "postprocess": "optional",
    "data": "optional",
    "outputs": "optional",
    "augment": "optional",
}
_DATA_KEYS = {"root", "images", "labels"}
_POST_KEYS = {"largest_component", "closing", "closing_radius", "closing_unit", "chain_anchor"}


@dataclass(frozen=True)
class PostprocessSpec:
    """The paper's 3D clean-up (section 3.2), per label.

    Keep the largest 26-connected component, then a morphological closing with a spherical element of
    ``closing_radius`` (in voxels, or in mm for anisotropic data). The paper's "5x5x5 spherical kernel"
    is radius 2 voxels.

    ``chain_anchor`` names the member of a label chain (serial
    labels such as vertebrae, found in the training labels: :mod:`pedseg.data.label_chain`) that
    the renumbering starts from, the one a network names reliably (L5, above the sacrum); ``None``:
    the numbering that agrees with most of the network's voxels.
    """

    largest_component: bool = True
    closing: bool = True
    closing_radius: float = 2.0
    closing_unit: Literal["voxel", "mm"] = "voxel"
    chain_anchor: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "largest_component": self.largest_component,
            "closing": self.closing,
            "closing_radius": self.closing_radius,
            "closing_unit": self.closing_unit,
        }
        if self.chain_anchor is not None:  # absent: the hashes of descriptors without it hold
            out["chain_anchor"] = self.chain_anchor
        return out


@dataclass(frozen=True)
class DataSpec:
    """Where a domain's files are: MSD / nnU-Net raw layout under ``root``."""

    root: Path
    images: str = "imagesTr"
    labels: str = "labelsTr"
    # how the user gave ``root`` when not in the descriptor (``--data NAME=DIR``), for messages
    given_as: str | None = field(default=None, compare=False)

    @property
    def images_dir(self) -> Path:
        return self.root / self.images

    @property
    def labels_dir(self) -> Path:
        return self.root / self.labels


@dataclass(frozen=True)
class DomainSpec:
    """A validated, immutable domain descriptor."""

    name: str
    labels: tuple[tuple[int, str], ...]
    normalization: str
    description: str = ""
    modality: str = "MR"
    slice_axis: SliceAxis = "auto"
    image_size: tuple[int, int] = (256, 256)
    postprocess: PostprocessSpec = field(default_factory=PostprocessSpec)
    data: DataSpec | None = None
    source: str = "<memory>"
    outputs: OutputsSpec | None = None
    flip: FlipAxis = "width"
    """Which in-plane axis the training flip mirrors (``augment: {flip: ...}``): ``width``
    (the paper's), ``height``, or ``none``. Mirror only the axis that is left-right in this
    domain's slices: mirroring head-feet turns a pelvis upside down and reorders vertebrae."""

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(name for _, name in self.labels)

    @property
    def label_ids(self) -> tuple[int, ...]:
        return tuple(i for i, _ in self.labels)

    @property
    def num_classes(self) -> int:
        """Output channels of this domain's head: its labels plus background."""
        return len(self.labels) + 1

    def to_dict(self, *, include_data: bool = True, include_outputs: bool = True) -> dict[str, Any]:
        """The descriptor as plain types, in the YAML schema (``outputs`` only when it has one)."""
        out: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "description": self.description,
            "modality": self.modality,
            "labels": {i: n for i, n in self.labels},
            "normalization": self.normalization,
            "slice_axis": self.slice_axis,
            "image_size": list(self.image_size),
            "postprocess": self.postprocess.to_dict(),
        }
        if include_data and self.data is not None:
            out["data"] = {
                "root": str(self.data.root),
                "images": self.data.images,
                "labels": self.data.labels,
            }
        if include_outputs and self.outputs is not None:
            out["outputs"] = self.outputs.to_dict()
        if self.flip != "width":  # the default leaves the content hash of older descriptors
            out["augment"] = {"flip": self.flip}
        return out

    def content_hash(self) -> str:
        """SHA-256 of what defines the task: everything but where the data lies on this machine and
        the ``outputs`` defaults (presentation only; trained runs stay valid when they change)."""
        payload = json.dumps(
            self.to_dict(include_data=False, include_outputs=False), sort_keys=True, default=str
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def with_data_root(self, root: Path, *, given_as: str | None = None) -> DomainSpec:
        """A copy whose data lives under ``root``; ``given_as`` says where the user gave it (e.g.
        ``"--data knee=DIR"``), so that messages name that rather than the descriptor."""
        images = self.data.images if self.data else "imagesTr"
        labels = self.data.labels if self.data else "labelsTr"
        data = DataSpec(root=root, images=images, labels=labels, given_as=given_as)
        return _replace(self, data=data)


def _replace(spec: DomainSpec, **changes: Any) -> DomainSpec:
    from dataclasses import replace

    return replace(spec, **changes)


def parse_descriptor(
    raw: Any,
    *,
    source: str,
    known_normalizations: Mapping[str, object] | None = None,
    base_dir: Path | None = None,
) -> DomainSpec:
    """Validate a parsed YAML mapping and build a :class:`DomainSpec`.

    All problems are collected and raised together as one :class:`DescriptorError`. ``base_dir`` is the
    folder relative data roots are resolved against (the descriptor's folder).
    """
    problems: list[tuple[str, str]] = []
    if not isinstance(raw, Mapping):
        raise DescriptorError(source, [("<root>", f"must be a mapping, got {_tname(raw)}")])

    for key in raw:
        if key not in _TOP_KEYS:
            problems.append((str(key), _unknown_key_message(str(key), _TOP_KEYS)))

    version = raw.get("schema_version")
    if version is None:
        problems.append(("schema_version", f"is required; set it to {SCHEMA_VERSION}"))
    elif type(version) is not int or version != SCHEMA_VERSION:
        problems.append(("schema_version", f"must be {SCHEMA_VERSION}, got {version!r}"))

    name = raw.get("name")
    if name is None:
        problems.append(("name", "is required"))
    elif not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        problems.append(
            ("name", f"must be a lower-case slug matching {NAME_PATTERN.pattern}, got {name!r}")
        )

    description = _optional_str(raw, "description", "", problems)
    modality = _optional_str(raw, "modality", "MR", problems)
    labels = _parse_labels(raw.get("labels"), problems)
    normalization = _parse_normalization(raw.get("normalization"), known_normalizations, problems)
    slice_axis = _parse_slice_axis(raw.get("slice_axis", "auto"), problems)
    image_size = _parse_image_size(raw.get("image_size", [256, 256]), problems)
    postprocess = _parse_postprocess(raw.get("postprocess", {}), problems)
    anchor = postprocess.chain_anchor
    if anchor is not None and anchor not in [n for _, n in labels]:
        problems.append(("postprocess.chain_anchor", f"must be one of the labels, got {anchor!r}"))
    data = _parse_data(raw.get("data"), base_dir, problems)
    outputs = parse_outputs_section(raw.get("outputs"), [n for _, n in labels], problems)
    flip = _parse_augment(raw.get("augment", {}), problems)

    if problems:
        raise DescriptorError(source, problems)
    return DomainSpec(
        name=str(name),
        labels=labels,
        normalization=str(normalization),
        description=description,
        modality=modality,
        slice_axis=slice_axis,
        image_size=image_size,
        postprocess=postprocess,
        data=data,
        source=source,
        outputs=outputs,
        flip=flip,
    )


FLIP_AXES: tuple[str, ...] = ("width", "height", "none")
FlipAxis = Literal["width", "height", "none"]


def _parse_augment(value: Any, problems: list[tuple[str, str]]) -> FlipAxis:
    if not isinstance(value, Mapping):
        problems.append(("augment", f"must be a mapping, got {_tname(value)}"))
        return "width"
    for key in value:
        if key != "flip":
            problems.append((f"augment.{key}", _unknown_key_message(str(key), {"flip"})))
    flip = value.get("flip", "width")
    if flip not in FLIP_AXES:
        problems.append(("augment.flip", f"must be one of {', '.join(FLIP_AXES)}, got {flip!r}"))
        return "width"
    return flip


def _tname(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _unknown_key_message(key: str, known: Mapping[str, str] | set[str]) -> str:
    from difflib import get_close_matches

    close = get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(sorted(known))}"
    return f"unknown key{hint}"


def _optional_str(
    raw: Mapping[str, Any], key: str, default: str, problems: list[tuple[str, str]]
) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        problems.append((key, f"must be a string, got {_tname(value)}"))
        return default
    return value


def _parse_labels(value: Any, problems: list[tuple[str, str]]) -> tuple[tuple[int, str], ...]:
    if value is None:
        problems.append(("labels", "is required: a mapping of ids 1..N to names, e.g. {1: femur}"))
        return ()
    if not isinstance(value, Mapping) or not value:
        problems.append(
            ("labels", f"must be a non-empty mapping of id to name, got {_tname(value)}")
        )
        return ()
    out: list[tuple[int, str]] = []
    names: set[str] = set()
    for key, label in value.items():
        if type(key) is not int:
            problems.append((f"labels.{key}", f"id must be an integer, got {_tname(key)} {key!r}"))
            continue
        if key == 0:
            problems.append(("labels.0", "0 is the implied background; number labels from 1"))
            continue
        if not isinstance(label, str) or not LABEL_NAME_PATTERN.fullmatch(label):
            problems.append((f"labels.{key}", f"name must be a short identifier, got {label!r}"))
            continue
        if label in names:
            problems.append((f"labels.{key}", f"duplicate label name {label!r}"))
        names.add(label)
        out.append((key, label))
    ids = sorted(i for i, _ in out)
    if ids and ids != list(range(1, len(ids) + 1)) and len(ids) == len(out):
        problems.append(("labels", f"ids must be contiguous from 1 (1..{len(ids)}), got {ids}"))
    return tuple(sorted(out))


def _parse_normalization(
    value: Any, known: Mapping[str, object] | None, problems: list[tuple[str, str]]
) -> str:
    if value is None:
        problems.append(("normalization", "is required (e.g. zscore)"))
        return ""
    if not isinstance(value, str):
        problems.append(("normalization", f"must be a string, got {_tname(value)}"))
        return ""
    if known is not None and value not in known:
        from difflib import get_close_matches

        close = get_close_matches(value, list(known), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        listing = ", ".join(sorted(known))
        problems.append(
            ("normalization", f"unknown normalization {value!r}{hint} (known: {listing})")
        )
    return value


def _parse_slice_axis(value: Any, problems: list[tuple[str, str]]) -> SliceAxis:
    if value == "auto":
        return "auto"
    if type(value) is int and value in (0, 1, 2):
        return value  # type: ignore[return-value]
    problems.append(("slice_axis", f"must be 'auto', 0, 1 or 2, got {value!r}"))
    return "auto"


IMAGE_SIZE_RANGE = (16, 4096)
"""The in-plane sizes pedseg works at (descriptor, training config, slice cache, prediction)."""


def image_size_problem(value: Any) -> str | None:
    """Why ``value`` is not an in-plane size ``(H, W)``, or ``None`` when it is one."""
    low, high = IMAGE_SIZE_RANGE
    ok = (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in value)
    )
    return None if ok else f"must be two integers in [{low}, {high}], got {value!r}"


def check_image_size(value: Any, *, name: str = "image_size") -> tuple[int, int]:
    """``value`` as ``(H, W)``; :class:`ConfigError` ("image_size must be ...") otherwise."""
    problem = image_size_problem(value)
    if problem is not None:
        raise ConfigError(f"{name} {problem}")
    return (int(value[0]), int(value[1]))


def _parse_image_size(value: Any, problems: list[tuple[str, str]]) -> tuple[int, int]:
    problem = image_size_problem(value)
    if problem is not None:
        problems.append(("image_size", problem))
        return (256, 256)
    return (int(value[0]), int(value[1]))


def _parse_postprocess(value: Any, problems: list[tuple[str, str]]) -> PostprocessSpec:
    if not isinstance(value, Mapping):
        problems.append(("postprocess", f"must be a mapping, got {_tname(value)}"))
        return PostprocessSpec()
    for key in value:
        if key not in _POST_KEYS:
            problems.append((f"postprocess.{key}", _unknown_key_message(str(key), _POST_KEYS)))
    default = PostprocessSpec()
    flags: dict[str, bool] = {}
    for key in ("largest_component", "closing"):
        flag = value.get(key, getattr(default, key))
        if not isinstance(flag, bool):
            problems.append((f"postprocess.{key}", f"must be true or false, got {flag!r}"))
            flag = True
        flags[key] = flag
    radius = value.get("closing_radius", default.closing_radius)
    if isinstance(radius, bool) or not isinstance(radius, int | float) or not 0 < radius <= 50:
        problems.append(
            ("postprocess.closing_radius", f"must be a number in (0, 50], got {radius!r}")
        )
        radius = default.closing_radius
    unit = value.get("closing_unit", default.closing_unit)
    if unit not in ("voxel", "mm"):
        problems.append(("postprocess.closing_unit", f"must be 'voxel' or 'mm', got {unit!r}"))
        unit = default.closing_unit
    anchor = value.get("chain_anchor")
    if anchor is not None and not isinstance(anchor, str):
        problems.append(("postprocess.chain_anchor", f"must be a label name, got {anchor!r}"))
        anchor = None
    return PostprocessSpec(
        largest_component=flags["largest_component"],
        closing=flags["closing"],
        closing_radius=float(radius),
        closing_unit=unit,
        chain_anchor=anchor,
    )


def _parse_data(
    value: Any, base_dir: Path | None, problems: list[tuple[str, str]]
) -> DataSpec | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        problems.append(
            ("data", f"must be a mapping with root, images, labels, got {_tname(value)}")
        )
        return None
    for key in value:
        if key not in _DATA_KEYS:
            problems.append((f"data.{key}", _unknown_key_message(str(key), _DATA_KEYS)))
    root_raw = value.get("root")
    if not isinstance(root_raw, str) or not root_raw:
        problems.append(("data.root", f"must be a folder path, got {root_raw!r}"))
        return None
    root = Path(root_raw).expanduser()
    if not root.is_absolute() and base_dir is not None:
        # once, to an absolute path: a registered copy lives in another folder than the original
        root = Path(os.path.normpath(base_dir.absolute() / root))
    subdirs: dict[str, str] = {}
    for key, default in (("images", "imagesTr"), ("labels", "labelsTr")):
        sub = value.get(key, default)
        if not isinstance(sub, str) or not sub:
            problems.append((f"data.{key}", f"must be a folder name, got {sub!r}"))
            sub = default
        elif Path(sub).is_absolute() or ".." in Path(sub).parts:
            problems.append(
                (
                    f"data.{key}",
                    f"must stay inside data.root (no absolute path or '..'), got {sub!r}",
                )
            )
            sub = default
        subdirs[key] = sub
    return DataSpec(root=root, images=subdirs["images"], labels=subdirs["labels"])
