"""The slice cache: contents, reuse, invalidation and atomic building."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import pedseg.data.cache as cache_module
from pedseg.data.cache import MANIFEST, _NpyAppender, build_cache, cache_dir, open_cache
from pedseg.data.dataset import Case, list_cases
from pedseg.data.preprocess import SliceStack, prepare_volume
from pedseg.domains.spec import DataSpec, DomainSpec
from pedseg.errors import ConfigError, DatasetError, OutputError, VolumeError
from pedseg.io import Volume, read_label, read_volume
from tests.fs_faults import fail_writes, files_below

SIZE = (16, 16)


def _spec(root: Path, **changes: object) -> DomainSpec:
    spec = DomainSpec(
        name="toy",
        labels=((1, "a"), (2, "b")),
        normalization="zscore",
        image_size=SIZE,
        data=DataSpec(root=root),
    )
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


def _save(path: Path, array: np.ndarray, spacing: tuple[float, float, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([*spacing, 1.0])), path)


def _dataset(root: Path) -> Path:
    """Three cases; case c has its thick axis first (auto picks axis 0)."""
    rng = np.random.default_rng(0)
    for i, (case_id, shape, spacing) in enumerate(
        [
            ("a", (12, 10, 4), (1.0, 1.0, 3.0)),
            ("b", (12, 10, 5), (1.0, 1.0, 3.0)),
            ("c", (3, 10, 12), (3.0, 1.0, 1.0)),
        ]
    ):
        image = rng.normal(100 + 10 * i, 5, size=shape).astype(np.float32)
        label = np.zeros(shape, np.uint8)
        label[2:6, 2:6, 1:3] = 1
        label[1, 7:9, 1] = 2
        _save(root / "imagesTr" / f"{case_id}.nii.gz", image, spacing)
        _save(root / "labelsTr" / f"{case_id}.nii.gz", label, spacing)
    return root


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return _dataset(tmp_path / "data")


class _Counter:
    """Wraps prepare_volume to count calls (a rebuild calls it once per case)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        monkeypatch.setattr(cache_module, "prepare_volume", self)

    def __call__(
        self,
        volume: Volume,
        spec: DomainSpec,
        *,
        image_size: tuple[int, int] | None = None,
        label: Volume | None = None,
    ) -> SliceStack:
        self.calls += 1
        return prepare_volume(volume, spec, image_size=image_size, label=label)


def test_build_matches_prepare_volume(data: Path, tmp_path: Path) -> None:
    spec = _spec(data)
    cache = build_cache(spec, cache_root=tmp_path / "cache")
    assert cache.path == cache_dir(spec, cache_root=tmp_path / "cache")
    assert cache.path.name.startswith("toy-")
    assert isinstance(cache.images, np.memmap) and not cache.images.flags.writeable
    assert [(c.case_id, c.start, c.stop, c.axis) for c in cache.cases] == [
        ("a", 0, 4, 2),
        ("b", 4, 9, 2),
        ("c", 9, 12, 0),
    ]
    assert cache.images.shape == (12, *SIZE) and cache.images.dtype == np.float32
    assert cache.labels.shape == (12, *SIZE) and cache.labels.dtype == np.uint8
    for case, cached in zip(list_cases(spec), cache.cases, strict=True):
        assert case.label is not None
        stack = prepare_volume(read_volume(case.image), spec, label=read_label(case.label))
        assert stack.labels is not None
        np.testing.assert_array_equal(cache.images[cached.start : cached.stop], stack.images)
        np.testing.assert_array_equal(cache.labels[cached.start : cached.stop], stack.labels)
        assert cached.in_plane_shape == stack.in_plane_shape
    fg = (np.asarray(cache.labels) > 0).mean(axis=(1, 2))
    np.testing.assert_allclose(cache.fg, fg, rtol=1e-6)
    assert cache.fg[0] == 0.0 and cache.fg[1] > 0.0
    manifest = json.loads((cache.path / MANIFEST).read_text())
    assert manifest["descriptor_hash"] == spec.content_hash()
    assert manifest["image_size"] == list(SIZE)
    assert manifest["pedseg_version"]
    image_entry = manifest["cases"][0]["image"]
    assert image_entry["path"] == "imagesTr/a.nii.gz"
    assert image_entry["size"] == (data / "imagesTr/a.nii.gz").stat().st_size
    assert len(image_entry["sha256"]) == 64
    assert manifest["cases"][2]["axis"] == 0
    # only the cache folder; no temporary leftovers
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [cache.path.name]


def test_slices_of(data: Path, tmp_path: Path) -> None:
    cache = build_cache(_spec(data), cache_root=tmp_path / "cache")
    np.testing.assert_array_equal(cache.slices_of(["c", "a"]), [9, 10, 11, 0, 1, 2, 3])
    assert cache.slices_of([]).shape == (0,)
    with pytest.raises(DatasetError, match="case 'zz' is not in"):
        cache.slices_of(["zz"])
    assert len(cache) == 12


def test_reuse_without_rebuild(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = build_cache(_spec(data), cache_root=tmp_path / "cache")
    counter = _Counter(monkeypatch)
    second = build_cache(_spec(data), cache_root=tmp_path / "cache")
    assert counter.calls == 0
    assert second.path == first.path and second.fingerprint == first.fingerprint
    build_cache(_spec(data), cache_root=tmp_path / "cache", force=True)
    assert counter.calls == 3


def test_touched_file_is_rehashed_not_rebuilt(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_cache(_spec(data), cache_root=tmp_path / "cache")
    path = data / "labelsTr/b.nii.gz"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    counter = _Counter(monkeypatch)
    again = build_cache(_spec(data), cache_root=tmp_path / "cache")
    assert counter.calls == 0
    assert again.fingerprint == first.fingerprint
    manifest = json.loads((again.path / MANIFEST).read_text())
    assert manifest["cases"][1]["label"]["mtime_ns"] == path.stat().st_mtime_ns


def test_changed_content_rebuilds(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_cache(_spec(data), cache_root=tmp_path / "cache")
    old = np.asarray(first.images[:4]).copy()
    path = data / "imagesTr/a.nii.gz"
    stat = path.stat()
    image = read_volume(path).array * 2.0 + 5.0 * np.random.default_rng(9).random((12, 10, 4))
    _save(path, image.astype(np.float32), (1.0, 1.0, 3.0))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    counter = _Counter(monkeypatch)
    again = build_cache(_spec(data), cache_root=tmp_path / "cache")
    assert counter.calls == 3
    assert again.path == first.path and again.fingerprint != first.fingerprint
    assert not np.allclose(np.asarray(again.images[:4]), old)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [again.path.name]


def test_descriptor_or_size_change_uses_a_new_cache(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_cache(_spec(data), cache_root=tmp_path / "cache")
    counter = _Counter(monkeypatch)
    other = build_cache(_spec(data, normalization="minmax"), cache_root=tmp_path / "cache")
    assert counter.calls == 3 and other.path != first.path
    assert float(np.asarray(other.images).min()) >= 0.0
    bigger = build_cache(_spec(data), cache_root=tmp_path / "cache", image_size=(24, 20))
    assert counter.calls == 6 and bigger.images.shape == (12, 24, 20)
    assert bigger.path != first.path


def test_stale_manifest_fields_rebuild(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_cache(_spec(data), cache_root=tmp_path / "cache")
    manifest = json.loads((first.path / MANIFEST).read_text())
    manifest["pedseg_version"] = "0.0.0"
    (first.path / MANIFEST).write_text(json.dumps(manifest))
    counter = _Counter(monkeypatch)
    build_cache(_spec(data), cache_root=tmp_path / "cache")
    assert counter.calls == 3


def test_different_case_list_rebuilds(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(data)
    subset = build_cache(spec, cache_root=tmp_path / "cache", cases=list_cases(spec)[:2])
    assert [c.case_id for c in subset.cases] == ["a", "b"]
    counter = _Counter(monkeypatch)
    full = build_cache(spec, cache_root=tmp_path / "cache")
    assert counter.calls == 3 and len(full.cases) == 3


def test_corrupt_cache_is_rebuilt(data: Path, tmp_path: Path) -> None:
    first = build_cache(_spec(data), cache_root=tmp_path / "cache")
    (first.path / "labels.npy").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="unreadable"):
        open_cache(first.path)
    again = build_cache(_spec(data), cache_root=tmp_path / "cache")
    assert again.labels.shape == (12, *SIZE)


def test_failure_mid_build_leaves_nothing(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def failing(volume: Volume, spec: DomainSpec, **kwargs: object) -> SliceStack:
        calls.append(1)
        if len(calls) == 2:
            raise VolumeError(volume.path, "simulated failure")
        return prepare_volume(volume, spec, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cache_module, "prepare_volume", failing)
    with pytest.raises(DatasetError, match=r"case 'b'.*simulated failure.*pedseg check toy"):
        build_cache(_spec(data), cache_root=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_failure_keeps_previous_cache_folder_untouched(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = build_cache(_spec(data), cache_root=tmp_path / "cache")
    before = (first.path / MANIFEST).read_text()
    monkeypatch.setattr(cache_module, "prepare_volume", _raise)
    with pytest.raises(DatasetError):
        build_cache(_spec(data), cache_root=tmp_path / "cache", force=True)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.path.name]
    assert (first.path / MANIFEST).read_text() == before


def _raise(volume: Volume, spec: DomainSpec, **kwargs: object) -> SliceStack:
    raise VolumeError(volume.path, "boom")


def test_unusable_cases_name_the_case(data: Path, tmp_path: Path) -> None:
    (data / "labelsTr/c.nii.gz").unlink()
    with pytest.raises(DatasetError, match=r"case 'c': no label file.*pedseg check toy"):
        build_cache(_spec(data), cache_root=tmp_path / "cache")
    (data / "imagesTr/c.nii.gz").write_text("junk")
    _save(data / "labelsTr/c.nii.gz", np.zeros((3, 10, 12), np.uint8), (3.0, 1.0, 1.0))
    with pytest.raises(DatasetError, match=r"case 'c'.*imagesTr/c.nii.gz"):
        build_cache(_spec(data), cache_root=tmp_path / "cache")
    label = np.zeros((12, 10, 4), np.uint8)
    label[0, 0, 0] = 9
    _save(data / "labelsTr/a.nii.gz", label, (1.0, 1.0, 3.0))
    with pytest.raises(DatasetError, match=r"case 'a'.*not declared"):
        build_cache(_spec(data), cache_root=tmp_path / "cache")
    with pytest.raises(DatasetError, match="no cases"):
        build_cache(_spec(data), cache_root=tmp_path / "cache", cases=[])
    dup = [Case("a", data / "imagesTr/a.nii.gz", data / "labelsTr/a.nii.gz")] * 2
    with pytest.raises(DatasetError, match="given twice"):
        build_cache(_spec(data), cache_root=tmp_path / "cache", cases=dup)
    assert not (tmp_path / "cache").exists() or list((tmp_path / "cache").iterdir()) == []


def test_default_cache_root_is_under_pedseg_home(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PEDSEG_HOME", str(tmp_path / "home"))
    cache = build_cache(_spec(data))
    assert cache.path.parent == tmp_path / "home" / "cache"


def test_npy_appender_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    blocks = [np.arange(i * 6, dtype=np.float32).reshape(i, 2, 3) for i in (2, 0, 5)]
    with _NpyAppender(path, np.dtype("<f4"), (2, 3)) as writer:
        for block in blocks:
            writer.append(block)
    np.testing.assert_array_equal(np.load(path), np.concatenate(blocks))
    with (
        pytest.raises(ValueError, match="does not end in"),
        _NpyAppender(tmp_path / "y.npy", np.dtype("<f4"), (2, 3)) as writer,
    ):
        writer.append(np.zeros((1, 3, 2), np.float32))


def test_bad_image_size_is_a_config_error(data: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"image_size must be two integers in \[16, 4096\]"):
        build_cache(_spec(data), cache_root=tmp_path / "cache", image_size=(8, 16))


def test_disk_full_while_building_is_one_error_and_leaves_nothing(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    spec = _spec(data)
    fail_writes(monkeypatch, root, code=errno.ENOSPC, ops=("open",))
    with pytest.raises(OutputError, match=r"toy-\w+: cannot be written: No space left on device"):
        build_cache(spec, cache_root=root)
    monkeypatch.undo()
    assert files_below(root) == []
