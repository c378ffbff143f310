"""The slice cache training reads: every slice of a domain, preprocessed once, memory-mapped.

A cache is a folder ``<cache_root>/<domain>-<short hash of (descriptor hash, image_size)>`` holding

* ``images.npy`` float32 (N, H, W): normalised slices resized to ``image_size`` (see
  :mod:`pedseg.data.preprocess`, the same functions inference uses);
* ``labels.npy`` uint8 (N, H, W) and ``fg.npy`` float32 (N,): each slice's foreground fraction, so a
  sampler may oversample slices with foreground (all slices are kept);
* ``manifest.json``: pedseg version, descriptor content hash, image size, per case its slice range,
  slice axis and source files (path relative to ``data.root``, size, mtime_ns, SHA-256).

A cache is reused while the pedseg version, descriptor hash, image size and list of cases are the
same and every source file has the recorded size and mtime. A file whose mtime changed (touched,
copied) is re-hashed: same content keeps the cache (its manifest is refreshed), other content
rebuilds it. Building is atomic: the cache is written in a hidden temporary folder renamed into
place, so a failed build leaves no cache folder. Arrays are written slice range by slice range, so
memory holds one volume at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pedseg import __version__
from pedseg.data.dataset import Case, list_cases
from pedseg.data.preprocess import prepare_volume
from pedseg.domains.registry import pedseg_home
from pedseg.domains.spec import DomainSpec, check_image_size
from pedseg.errors import DatasetError, VolumeError
from pedseg.io import check_pair, read_label, read_volume
from pedseg.io.atomic import make_folder, output_errors, write_text_atomic

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
MANIFEST = "manifest.json"
_F32, _U8 = np.dtype("<f4"), np.dtype("u1")
_ARRAYS: dict[str, np.dtype[Any]] = {"images": _F32, "labels": _U8, "fg": _F32}


@dataclass(frozen=True)
class CachedCase:
    """One case's slices in the cache: rows ``start:stop`` of the arrays."""

    case_id: str
    start: int
    stop: int
    axis: int = 2
    in_plane_shape: tuple[int, int] = (0, 0)

    @property
    def num_slices(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True, eq=False)
class SliceCache:
    """An opened, valid slice cache (arrays are read-only memory maps)."""

    path: Path
    domain: str
    images: np.ndarray
    labels: np.ndarray
    fg: np.ndarray
    cases: list[CachedCase]
    image_size: tuple[int, int]
    fingerprint: str
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def slices_of(self, case_ids: Iterable[str]) -> np.ndarray:
        """Slice indices (int64, in case order) of ``case_ids``; unknown ids raise DatasetError."""
        by_id = {c.case_id: c for c in self.cases}
        ranges: list[np.ndarray] = []
        for case_id in case_ids:
            if case_id not in by_id:
                raise DatasetError(
                    f"case {case_id!r} is not in the {self.domain!r} slice cache ({self.path}); "
                    f"known cases: {', '.join(sorted(by_id)) or 'none'}"
                )
            case = by_id[case_id]
            ranges.append(np.arange(case.start, case.stop, dtype=np.int64))
        return np.concatenate(ranges) if ranges else np.zeros(0, dtype=np.int64)


def default_cache_root() -> Path:
    return pedseg_home() / "cache"


def cache_dir(
    spec: DomainSpec, *, cache_root: Path | None = None, image_size: tuple[int, int] | None = None
) -> Path:
    """Where ``spec``'s cache for ``image_size`` lives."""
    size = tuple(image_size if image_size is not None else spec.image_size)
    key = f"{spec.content_hash()}:{size[0]}x{size[1]}"
    short = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
    root = cache_root if cache_root is not None else default_cache_root()
    return root / f"{spec.name}-{short}"


def build_cache(
    spec: DomainSpec,
    *,
    cache_root: Path | None = None,
    image_size: tuple[int, int] | None = None,
    cases: Sequence[Case] | None = None,
    force: bool = False,
) -> SliceCache:
    """Open ``spec``'s slice cache, building (or rebuilding) it when missing or stale.

    ``cases`` defaults to every case of the dataset; a cache holds exactly the cases it was built
    for, so build it once for all cases and select folds with :meth:`SliceCache.slices_of`.
    Unusable cases raise :class:`DatasetError` naming the case (``pedseg check`` reports them all).
    """
    size = _image_size(spec.image_size if image_size is None else image_size)
    target = cache_dir(spec, cache_root=cache_root, image_size=size)
    case_list = list(cases) if cases is not None else list_cases(spec)
    _check_cases(spec, case_list)
    data_root = spec.data.root if spec.data is not None else None
    header = _header(spec, size)
    if not force and target.is_dir():
        cached = _reuse(target, header, case_list, data_root)
        if cached is not None:
            logger.info("slice cache for %s is up to date: %s", spec.name, target)
            return cached
    logger.info("building the slice cache for %s (%d cases): %s", spec.name, len(case_list), target)
    make_folder(target.parent)
    with output_errors(target):
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        with output_errors(target):
            _write_cache(tmp, spec, size, case_list, header, data_root)
            _move_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return open_cache(target)


def open_cache(path: Path) -> SliceCache:
    """Open a cache folder without checking its sources; a corrupt cache raises DatasetError."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        size = (int(manifest["image_size"][0]), int(manifest["image_size"][1]))
        cases = [_cached_case(c) for c in manifest["cases"]]
        n = int(manifest["num_slices"])
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in _ARRAYS}
        domain = str(manifest["domain"])
        fingerprint = str(manifest["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise DatasetError(
            f"slice cache {path} is unreadable ({exc}); delete the folder and it will be rebuilt"
        ) from exc
    shapes = {"images": (n, *size), "labels": (n, *size), "fg": (n,)}
    for name, dtype in _ARRAYS.items():
        array = arrays[name]
        if array.shape != shapes[name] or array.dtype != dtype:
            raise DatasetError(
                f"slice cache {path}: {name}.npy is {array.dtype} {array.shape}, expected {dtype} "
                f"{shapes[name]}; delete the folder and it will be rebuilt"
            )
    if cases and (cases[0].start != 0 or cases[-1].stop != n):
        raise DatasetError(f"slice cache {path}: case ranges do not cover the arrays; delete it")
    images, labels, fg = arrays["images"], arrays["labels"], arrays["fg"]
    return SliceCache(path, domain, images, labels, fg, cases, size, fingerprint, manifest)


def _image_size(size: Sequence[int]) -> tuple[int, int]:
    return check_image_size(tuple(int(v) if isinstance(v, np.integer) else v for v in size))


def _cached_case(entry: dict[str, Any]) -> CachedCase:
    rows, cols = entry["in_plane_shape"]
    start, stop, axis = int(entry["start"]), int(entry["stop"]), int(entry["axis"])
    return CachedCase(str(entry["case_id"]), start, stop, axis, (int(rows), int(cols)))


def file_sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _header(spec: DomainSpec, size: tuple[int, int]) -> dict[str, Any]:
    """What must match for a cache to be reused (besides its cases and files)."""
    return {
        "format": CACHE_FORMAT,
        "pedseg_version": __version__,
        "domain": spec.name,
        "descriptor_hash": spec.content_hash(),
        "image_size": [int(size[0]), int(size[1])],
    }


def _check_cases(spec: DomainSpec, cases: Sequence[Case]) -> None:
    if not cases:
        raise DatasetError(f"domain {spec.name!r}: no cases to cache")
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise DatasetError(f"domain {spec.name!r}: case {case.case_id!r} is given twice")
        seen.add(case.case_id)
        if case.label is None:
            labels = spec.data.labels if spec.data is not None else "labelsTr"
            raise DatasetError(
                f"domain {spec.name!r}, case {case.case_id!r}: no label file "
                f"({labels}/{case.case_id}.nii.gz); run `pedseg check {spec.name}`"
            )


def relative_source(path: Path, root: Path | None) -> str:
    if root is not None:
        with contextlib.suppress(ValueError):
            return path.relative_to(root).as_posix()
    return str(path)


def source_record(path: Path, root: Path | None) -> dict[str, Any]:
    """What identifies a source file: path relative to ``root``, size, mtime_ns and SHA-256."""
    stat, rel = path.stat(), relative_source(path, root)
    source = {"path": rel, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return source | {"sha256": file_sha256(path)}


def _reuse(
    target: Path, header: dict[str, Any], cases: Sequence[Case], root: Path | None
) -> SliceCache | None:
    """The cache at ``target`` if it is valid for these cases and files, else ``None``."""
    try:
        cache = open_cache(target)
        manifest = cache.manifest
        if any(manifest.get(key) != value for key, value in header.items()):
            return None
        state = sources_state(cases, manifest["cases"], root)
    except (DatasetError, KeyError, TypeError) as exc:
        logger.info("slice cache %s is unusable, rebuilding: %s", target, exc)
        return None
    if state == "changed":
        return None
    if state == "touched":  # same content, new mtime: remember it (best effort)
        with contextlib.suppress(OSError):
            write_text_atomic(target / MANIFEST, json.dumps(manifest, indent=1))
    return cache


def sources_state(
    cases: Sequence[Case], records: Sequence[dict[str, Any]], root: Path | None
) -> str:
    """Whether ``records`` (a cache's or fingerprint's ``case_id`` / ``image`` / ``label`` entries,
    in order) still describe ``cases``: ``same``, ``touched`` (some file has a new mtime but the
    same content; its record is updated) or ``changed`` (other cases, paths or content)."""
    found = [(r["case_id"], r["image"]["path"], r["label"]["path"]) for r in records]
    wanted = [
        (c.case_id, relative_source(c.image, root), relative_source(c.label or c.image, root))
        for c in cases
    ]
    if found != wanted:
        return "changed"
    files = [(c.image, r["image"]) for c, r in zip(cases, records, strict=True)]
    files += [(c.label or c.image, r["label"]) for c, r in zip(cases, records, strict=True)]
    states = {source_state(path, record) for path, record in files}
    return "changed" if "changed" in states else "touched" if "touched" in states else "same"


def source_state(path: Path, record: dict[str, Any]) -> str:
    """``same``, ``touched`` (new mtime, same content; ``record`` is updated) or ``changed``."""
    try:
        stat = path.stat()
    except OSError:
        return "changed"
    if stat.st_size != record["size"]:
        return "changed"
    if stat.st_mtime_ns == record["mtime_ns"]:
        return "same"
    if file_sha256(path) != record["sha256"]:
        return "changed"
    record["mtime_ns"] = stat.st_mtime_ns
    return "touched"


def _write_cache(
    folder: Path,
    spec: DomainSpec,
    size: tuple[int, int],
    cases: Sequence[Case],
    header: dict[str, Any],
    root: Path | None,
) -> None:
    records: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tails: dict[str, tuple[int, ...]] = {"images": size, "labels": size, "fg": ()}
        writers = {
            name: stack.enter_context(_NpyAppender(folder / f"{name}.npy", dtype, tails[name]))
            for name, dtype in _ARRAYS.items()
        }
        start = 0
        for case in cases:
            if case.label is None:  # guarded by _check_cases
                raise DatasetError(f"domain {spec.name!r}, case {case.case_id!r}: no label file")
            image_src, label_src = source_record(case.image, root), source_record(case.label, root)
            try:
                image = read_volume(case.image)
                label = read_label(case.label, allowed={0, *spec.label_ids})
                check_pair(image, label)
                stacked = prepare_volume(image, spec, image_size=size, label=label)
            except VolumeError as exc:
                raise DatasetError(
                    f"domain {spec.name!r}, case {case.case_id!r}: {exc}; run "
                    f"`pedseg check {spec.name}` for a report of every case"
                ) from exc
            if stacked.labels is None:  # a label was given, so prepare_volume returns labels
                raise DatasetError(f"domain {spec.name!r}, case {case.case_id!r}: labels missing")
            fg = (stacked.labels > 0).mean(axis=(1, 2), dtype=np.float64).astype(np.float32)
            writers["images"].append(stacked.images)
            writers["labels"].append(stacked.labels)
            writers["fg"].append(fg)
            stop = start + stacked.num_slices
            record: dict[str, Any] = {"case_id": case.case_id, "start": start, "stop": stop}
            record.update(axis=stacked.axis, in_plane_shape=list(stacked.in_plane_shape))
            record.update(shape=list(image.shape), spacing=[float(v) for v in image.spacing])
            records.append(record | {"image": image_src, "label": label_src})
            start = stop
    manifest = dict(header)
    manifest.update(
        normalization=spec.normalization,
        slice_axis=spec.slice_axis,
        num_slices=start,
        fingerprint=_fingerprint(header, records),
        cases=records,
    )
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=1))


def _fingerprint(header: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """Identity of the cached content: header and every file's hash (not paths or mtimes)."""
    payload = {
        "header": header,
        "files": [[r["case_id"], r["image"]["sha256"], r["label"]["sha256"]] for r in records],
    }
    text = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _move_into_place(tmp: Path, target: Path) -> None:
    """Rename the finished ``tmp`` folder to ``target``, replacing a stale one."""
    old: Path | None = None
    if target.exists():
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        target.rename(old)
    try:
        tmp.rename(target)
    except OSError as exc:
        if not target.is_dir():
            raise DatasetError(f"cannot create the slice cache {target}: {exc}") from exc
        open_cache(target)  # another process finished the same cache first: keep theirs
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


class _NpyAppender:
    """Write a ``.npy`` file whose first dimension grows as blocks are appended.

    The header is written for length 0 and rewritten in place on a clean exit; numpy pads version
    1.0 headers to 64 bytes with room for a longer shape, so its length does not change.
    """

    def __init__(self, path: Path, dtype: np.dtype[Any], tail: tuple[int, ...]) -> None:
        self.dtype, self.tail, self.count = dtype, tuple(int(v) for v in tail), 0
        self._fh: BinaryIO = path.open("wb")
        self._header_len = self._write_header()

    def __enter__(self) -> _NpyAppender:
        return self

    def append(self, block: np.ndarray) -> None:
        if tuple(block.shape[1:]) != self.tail:
            raise ValueError(f"block shape {block.shape} does not end in {self.tail}")
        self._fh.write(np.ascontiguousarray(block, dtype=self.dtype).tobytes())
        self.count += int(block.shape[0])

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        with self._fh:
            if exc_type is None:
                self._fh.seek(0)
                if self._write_header() != self._header_len:
                    raise RuntimeError(f"{self._fh.name}: npy header length changed")
                self._fh.flush()
                os.fsync(self._fh.fileno())

    def _write_header(self) -> int:
        """Write the header at the current position (the file's start); return its length."""
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.count, *self.tail),
        }
        np.lib.format.write_array_header_1_0(self._fh, header)
        return self._fh.tell()
