"""Dataset fingerprints: phantom data checked with second libraries, caching, strict JSON, real data."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import pedseg.data.fingerprint as fp_module
from pedseg.data.dataset import list_cases
from pedseg.data.fingerprint import (
    Fingerprint,
    compute_fingerprint,
    dataset_fingerprint,
    fingerprint_path,
)
from pedseg.data.preprocess import prepare_volume
from pedseg.data.synth import PhantomConfig, synth_dataset
from pedseg.domains.registry import DomainRegistry
from pedseg.domains.spec import DomainSpec
from pedseg.errors import PlanError
from pedseg.io import read_label, read_volume


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("phantoms")
    synth_dataset(root, domains=("ankle",), cases=3, seed=1, config=PhantomConfig((48, 48, 16)))
    return root


@pytest.fixture
def ankle(phantoms: Path, tmp_path: Path) -> DomainSpec:
    return DomainRegistry(home=tmp_path / "reg").get("ankle").with_data_root(phantoms / "ankle")


@pytest.fixture
def own_copy(ankle: DomainSpec, tmp_path: Path) -> DomainSpec:
    """The ankle phantoms copied, so a test may change files."""
    root = tmp_path / "copy"
    for case in list_cases(ankle):
        for src, sub in ((case.image, "imagesTr"), (case.label, "labelsTr")):
            assert src is not None
            (root / sub).mkdir(parents=True, exist_ok=True)
            (root / sub / src.name).write_bytes(src.read_bytes())
    return ankle.with_data_root(root)


def test_fingerprint_of_phantoms(ankle: DomainSpec) -> None:
    fp = compute_fingerprint(ankle)
    assert fp.domain == "ankle" and fp.num_cases == 3
    assert fp.slices_per_case == (16.0, 16.0, 16.0) and fp.total_slices == 48
    assert sorted(fp.spacing_median) == pytest.approx([0.4, 0.4, 1.2])
    assert fp.in_plane_median == (48.0, 48.0)
    assert [entry.name for entry in fp.labels] == ["calcaneus", "talus", "tibia"]
    low, mid, high = fp.foreground_intensity
    assert low < mid < high
    for entry in fp.labels:
        assert entry.cases == 3
        assert 0 < entry.min_extent_fraction < 1
        assert entry.cross_section_px(128) == pytest.approx(entry.min_extent_fraction * 128)
        assert len(entry.components) == 3 and min(entry.major_components) >= 1


def test_voxels_and_components_match_nibabel_and_scipy(ankle: DomainSpec) -> None:
    fp = compute_fingerprint(ankle)
    cases = list_cases(ankle)
    for entry in fp.labels:
        counts, components = [], []
        for case in cases:
            assert case.label is not None
            raw = np.asarray(nib.load(case.label).dataobj) == entry.label_id
            counts.append(int(raw.sum()))
            components.append(ndimage.label(raw, structure=np.ones((3, 3, 3)))[1])
        assert entry.voxels_median == float(np.median(counts))
        assert entry.components == tuple(components)
        spacing = np.prod(fp.spacing_median)
        assert entry.volume_mm3_median == pytest.approx(np.median(counts) * spacing)


def test_cross_section_is_what_the_network_sees(ankle: DomainSpec) -> None:
    """fraction x S matches the label's box sides in slices resized to S (within a pixel).

    At 64² every label of the phantoms is still at least 3 px across. (At 32² the talus's thinnest
    slices, 1.7 px, vanish under nearest-neighbour resizing: the fingerprint still counts them,
    which is what tells the planner that 32² is too small, but they are missing from the resized
    slices this test measures.)"""
    fp = compute_fingerprint(ankle)
    size = 64
    sides: dict[int, list[int]] = {e.label_id: [] for e in fp.labels}
    for case in list_cases(ankle):
        assert case.label is not None
        stack = prepare_volume(
            read_volume(case.image), ankle, image_size=(size, size), label=read_label(case.label)
        )
        assert stack.labels is not None
        for label_id, found in sides.items():
            for plane in stack.labels:
                rows, cols = np.nonzero(plane == label_id)
                if rows.size:
                    found.append(min(np.ptp(rows) + 1, np.ptp(cols) + 1))
    for entry in fp.labels:
        resized = float(np.percentile(sides[entry.label_id], 5))
        assert entry.cross_section_px(size) == pytest.approx(resized, abs=1.0)


def test_json_round_trip(ankle: DomainSpec) -> None:
    fp = compute_fingerprint(ankle)
    text = json.dumps(fp.to_dict())
    assert Fingerprint.from_dict(json.loads(text)) == fp


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.update(extra=1), "unknown key 'extra'"),
        (lambda d: d.pop("num_cases"), "misses key 'num_cases'"),
        (lambda d: d.update(num_cases="3"), "num_cases must be an integer"),
        (lambda d: d.update(format=9), "format must be 2"),
        (lambda d: d["labels"][1].update(min_extent_fraction=2.0), "labels[1].min_extent_fraction"),
        (lambda d: d.update(spacing_median=[1, 2]), "spacing_median must hold 3 numbers"),
    ],
)
def test_strict_reading_names_the_field(ankle: DomainSpec, change: object, field: str) -> None:
    raw = compute_fingerprint(ankle).to_dict()
    change(raw)  # type: ignore[operator]
    with pytest.raises(PlanError) as info:
        Fingerprint.from_dict(raw, source="fp.json")
    message = str(info.value)
    assert message.startswith("fp.json") and field in message and "\n" not in message


def test_cached_beside_the_slice_cache_and_reused(
    own_copy: DomainSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    first = dataset_fingerprint(own_copy, cache_root=root)
    path = fingerprint_path(own_copy, cache_root=root)
    assert path.parent == root and path.name.startswith("ankle-")
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary left
    monkeypatch.setattr(fp_module, "compute_fingerprint", _refuse)
    assert dataset_fingerprint(own_copy, cache_root=root) == first
    case = list_cases(own_copy)[0]
    os.utime(case.image, ns=(1, 1))  # touched, same content: still reused
    assert dataset_fingerprint(own_copy, cache_root=root) == first
    record = json.loads(path.read_text())["sources"][0]["image"]
    assert record["mtime_ns"] == 1  # and the new mtime is remembered


def test_changed_labels_are_recomputed(own_copy: DomainSpec, tmp_path: Path) -> None:
    root = tmp_path / "cache"
    first = dataset_fingerprint(own_copy, cache_root=root)
    label = list_cases(own_copy)[0].label
    assert label is not None
    image = nib.load(label)
    data = np.asarray(image.dataobj).copy()
    data[data == 2] = 0  # talus removed from case 0
    nib.save(nib.Nifti1Image(data, image.affine, image.header), label)
    second = dataset_fingerprint(own_copy, cache_root=root)
    assert second.content_key != first.content_key
    assert second.label("talus").cases == 2


def test_a_damaged_cache_file_is_recomputed_with_a_warning(
    own_copy: DomainSpec, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "cache"
    first = dataset_fingerprint(own_copy, cache_root=root)
    path = fingerprint_path(own_copy, cache_root=root)
    raw = json.loads(path.read_text())
    raw["fingerprint"]["num_cases"] = -1
    path.write_text(json.dumps(raw))
    with caplog.at_level(logging.WARNING):
        assert _same(dataset_fingerprint(own_copy, cache_root=root), first)
    assert "num_cases must be >= 1" in caplog.text
    path.write_text("{not json")
    assert _same(dataset_fingerprint(own_copy, cache_root=root), first)
    assert json.loads(path.read_text())["fingerprint"]["num_cases"] == 3


def _same(a: Fingerprint, b: Fingerprint) -> bool:
    """Equal but for the time the computation took."""
    return dataclasses.replace(a, build_seconds=0.0) == dataclasses.replace(b, build_seconds=0.0)


def _refuse(*args: object, **kwargs: object) -> Fingerprint:
    raise AssertionError("the fingerprint was recomputed")


@pytest.mark.realdata
def test_real_pelvis_and_spine(shared_data: Path, tmp_path: Path) -> None:
    registry = DomainRegistry(home=tmp_path / "reg")
    pelvis = registry.get("pelvis").with_data_root(shared_data / "pelvis")
    spine = registry.get("spine").with_data_root(shared_data / "spine")
    fp = compute_fingerprint(pelvis, cases=list_cases(pelvis)[:3])
    assert fp.num_cases == 3 and fp.in_plane_median == (384.0, 384.0)
    assert max(fp.spacing_median) == pytest.approx(5.2, abs=0.3)
    femur = fp.label("femur")
    assert femur.major_components == (2, 2, 2)  # bilateral: keep the 2 largest
    assert femur.cross_section_px(96) < femur.cross_section_px(256)
    fs = compute_fingerprint(spine, cases=list_cases(spine)[:3])
    assert fs.slices_per_case == (77.0, 77.0, 77.0) and fs.in_plane_median == (224.0, 224.0)
    assert [e.name for e in fs.labels] == ["L1", "L2", "L3", "L4", "L5"]
    assert all(e.major_components == (1, 1, 1) for e in fs.labels)  # one vertebral body each
