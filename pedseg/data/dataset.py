"""Cases of a domain's dataset on disk: the MSD / nnU-Net raw layout.

```
<data.root>/
  imagesTr/<case>.nii.gz        or <case>_0000.nii.gz (nnU-Net channel suffix, single channel only)
  labelsTr/<case>.nii.gz
```

Supported files: ``.nii``, ``.nii.gz``, ``.mha``, ``.nrrd``. Hidden files (``.name``) and other
files (``dataset.json``, notes) are ignored. Unpaired images or labels are *not* errors here: an
image without a label gives a :class:`Case` whose ``label`` is ``None`` and :func:`scan_layout`
lists labels without an image; ``pedseg check`` reports both. Every file must really live under
``data.root`` (symlinks are resolved): a file whose real path escapes the root is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pedseg.domains.spec import DataSpec, DomainSpec
from pedseg.errors import DatasetError

SUFFIXES = (".nii.gz", ".nii", ".mha", ".nrrd")
_CHANNEL = re.compile(r"^(?P<base>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class Case:
    """One image (and its label map, when there is one) of a domain's dataset."""

    case_id: str
    image: Path
    label: Path | None


@dataclass(frozen=True)
class Layout:
    """What :func:`scan_layout` found: the cases and the label files that have no image."""

    root: Path
    cases: tuple[Case, ...]
    orphan_labels: tuple[tuple[str, Path], ...]


def split_suffix(name: str) -> tuple[str, str] | None:
    """``("case", ".nii.gz")`` for a supported file name, ``None`` otherwise (case-insensitive)."""
    lower = name.lower()
    for suffix in SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return None


def data_spec_of(spec: DomainSpec) -> DataSpec:
    """The domain's data location, or a :class:`DatasetError` saying how to give one."""
    if spec.data is None:
        raise DatasetError(
            f"domain {spec.name!r} has no data folder: set data.root in its descriptor "
            f"or pass --data {spec.name}=DIR"
        )
    return spec.data


def scan_layout(spec: DomainSpec, *, require_labels: bool = True) -> Layout:
    """Find every case of ``spec``'s dataset (see the module docstring for the rules)."""
    data = data_spec_of(spec)
    root = data.root.expanduser()
    if not root.is_dir():
        if data.given_as is not None:
            raise DatasetError(
                f"domain {spec.name!r}: {data.given_as}: folder {root} does not exist; pass the "
                f"folder holding {data.images}/ and {data.labels}/ as --data {spec.name}=DIR"
            )
        raise DatasetError(
            f"domain {spec.name!r}: data folder {root} does not exist; fix data.root in "
            f"{spec.source} or pass --data {spec.name}=DIR"
        )
    real_root = root.resolve()
    images_dir = root / data.images
    labels_dir = root / data.labels
    if not images_dir.is_dir():
        raise DatasetError(
            f"domain {spec.name!r}: image folder {images_dir} does not exist; put the images in "
            f"{data.images}/ under {root} (MSD / nnU-Net layout)"
        )
    has_labels = labels_dir.is_dir()
    if require_labels and not has_labels:
        raise DatasetError(
            f"domain {spec.name!r}: label folder {labels_dir} does not exist; put the label maps "
            f"in {data.labels}/ under {root} with the images' case names"
        )
    image_files = _volume_files(images_dir, real_root, spec.name)
    label_files = _volume_files(labels_dir, real_root, spec.name) if has_labels else {}
    if not image_files:
        raise DatasetError(
            f"domain {spec.name!r}: no images in {images_dir} (looked for "
            f"{', '.join(SUFFIXES)}); check data.root or --data {spec.name}=DIR"
        )
    images = _images_by_case(image_files, set(label_files), spec.name, images_dir)
    cases = tuple(
        Case(case_id=cid, image=images[cid], label=label_files.get(cid)) for cid in sorted(images)
    )
    orphans = tuple((cid, label_files[cid]) for cid in sorted(set(label_files) - set(images)))
    return Layout(root=root, cases=cases, orphan_labels=orphans)


def list_cases(spec: DomainSpec, *, require_labels: bool = True) -> list[Case]:
    """The cases of ``spec``'s dataset, sorted by case id.

    Raises :class:`DatasetError` when the domain has no data folder, a folder is missing (the label
    folder only when ``require_labels``), there are no images, an image has a second channel, two
    files give the same case, or a file's real path escapes ``data.root``.
    """
    return list(scan_layout(spec, require_labels=require_labels).cases)


def _volume_files(folder: Path, real_root: Path, domain: str) -> dict[str, Path]:
    """Supported, non-hidden files of ``folder`` by stem (name without suffix)."""
    out: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        parts = split_suffix(path.name)
        if parts is None:
            continue
        _check_inside(path, real_root, domain)
        stem = parts[0]
        if stem in out:
            raise DatasetError(
                f"domain {domain!r}: {out[stem].name} and {path.name} in {folder} give the same "
                "case; keep one of them"
            )
        out[stem] = path
    return out


def _check_inside(path: Path, real_root: Path, domain: str) -> None:
    real = path.resolve()
    if not real.is_relative_to(real_root):
        raise DatasetError(
            f"domain {domain!r}: {path} resolves to {real}, outside the data folder {real_root}; "
            "copy the file into the data folder instead of linking it"
        )


def _images_by_case(
    files: dict[str, Path], label_stems: Iterable[str], domain: str, folder: Path
) -> dict[str, Path]:
    """Map image stems to case ids, stripping the nnU-Net ``_0000`` channel suffix.

    A stem that exactly names a label is its own case id (MSD naming, even when it ends in four
    digits). Otherwise ``X_0000`` is case ``X``; ``X_0001`` (or any other channel) next to an
    ``X_0000`` is a second channel, which pedseg does not support.
    """
    labels = set(label_stems)
    out: dict[str, Path] = {}
    for stem, path in files.items():
        case_id = stem
        match = _CHANNEL.match(stem)
        if stem not in labels and match is not None:
            base, channel = match["base"], match["channel"]
            if channel == "0000":
                case_id = base
            elif f"{base}_0000" in files:
                raise DatasetError(
                    f"domain {domain!r}: {path.name} in {folder} is channel {int(channel)} of case "
                    f"{base!r}; pedseg reads single-channel images only: keep only the _0000 files"
                )
        if case_id in out:
            raise DatasetError(
                f"domain {domain!r}: {out[case_id].name} and {path.name} in {folder} both give "
                f"case {case_id!r}; keep one of them"
            )
        out[case_id] = path
    return out
