"""Phantom domains: determinism, labels, intensities, geometry, files and errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from pedseg.data.synth import (
    PHANTOM_DOMAINS,
    PHANTOM_LABELS,
    PhantomConfig,
    case_name,
    synth_case,
    synth_dataset,
)
from pedseg.domains.builtin import builtin_domains_dir
from pedseg.domains.registry import load_descriptor
from pedseg.errors import ConfigError, OutputExistsError, UnknownNameError

TINY = PhantomConfig(shape=(48, 48, 16))


def _same(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> bool:
    return all(x.dtype == y.dtype and x.tobytes() == y.tobytes() for x, y in zip(a, b, strict=True))


def _canonical(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Reference reorientation to RAS+ (nibabel's as_closest_canonical semantics)."""
    return np.asarray(nib.orientations.apply_orientation(array, nib.io_orientation(affine)))


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"shape": (8, 8, 8)}, r"shape must be three integers >= 16.*got \(8, 8, 8\)"),
        ({"shape": (32, 32)}, "shape must be three integers"),
        ({"shape": (32.0, 32, 32)}, "shape must be three integers"),
        ({"shape": (True, 32, 32)}, "shape must be three integers"),
        ({"spacing": (0.4, 0.4, 0.0)}, r"spacing must be three numbers in \(0, 100\]"),
        ({"spacing": (0.4, float("nan"), 1.2)}, "spacing must be three numbers"),
        ({"spacing": (1.2, 0.4, 0.4)}, r"spacing\[2\] \(slice thickness\) must be the largest"),
        ({"noise": -0.1}, r"noise must be in \[0, 0.5\], got -0.1"),
        ({"bias": 1.5}, r"bias must be in \[0, 1\], got 1.5"),
        ({"oblique_degrees": 45.0}, r"oblique_degrees must be in \[0, 30\], got 45.0"),
    ],
)
def test_bad_config_is_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PhantomConfig(**changes)  # type: ignore[arg-type]


def test_config_normalises_types() -> None:
    config = PhantomConfig(shape=(np.int64(32), 32, 16), spacing=(1, 1, 2))  # type: ignore[arg-type]
    assert config.shape == (32, 32, 16) and all(type(n) is int for n in config.shape)
    assert config.spacing == (1.0, 1.0, 2.0)


def test_labels_match_the_builtin_descriptors() -> None:
    assert set(PHANTOM_DOMAINS) == set(PHANTOM_LABELS)
    for domain in PHANTOM_DOMAINS:
        spec = load_descriptor(builtin_domains_dir() / f"{domain}.yaml")
        assert spec.labels == PHANTOM_LABELS[domain]


# --- determinism -----------------------------------------------------------------------------


@pytest.mark.parametrize("domain", PHANTOM_DOMAINS)
def test_same_arguments_give_identical_bytes(domain: str) -> None:
    first = synth_case(domain, seed=7, index=2, config=TINY)
    second = synth_case(domain, seed=7, index=2, config=TINY)
    assert _same(first, second)


def test_seed_index_and_domain_change_the_case() -> None:
    base = synth_case("ankle", seed=0, index=0, config=TINY)
    assert not np.array_equal(base[0], synth_case("ankle", seed=1, index=0, config=TINY)[0])
    assert not np.array_equal(base[0], synth_case("ankle", seed=0, index=1, config=TINY)[0])
    assert not np.array_equal(base[1], synth_case("shoulder", seed=0, index=0, config=TINY)[1])


def test_a_case_does_not_depend_on_what_was_generated_before() -> None:
    alone = synth_case("shoulder", seed=3, index=4, config=TINY)
    for index in range(3):
        synth_case("ankle", seed=3, index=index, config=TINY)
        synth_case("shoulder", seed=3, index=index, config=TINY)
    np.random.seed(123)  # the global numpy state must not matter either
    assert _same(alone, synth_case("shoulder", seed=3, index=4, config=TINY))


def test_noise_and_bias_are_configurable() -> None:
    clean = PhantomConfig(shape=(48, 48, 16), noise=0.0, bias=0.0)
    noisy = synth_case("ankle", seed=0, index=0, config=TINY)[0]
    plain = synth_case("ankle", seed=0, index=0, config=clean)[0]
    air_noisy = np.percentile(noisy, 5)
    assert np.percentile(plain, 5) == 0 < air_noisy  # Rician floor only with noise
    # Same anatomy: labels do not depend on the acquisition settings.
    assert np.array_equal(
        synth_case("ankle", seed=0, index=0, config=TINY)[1],
        synth_case("ankle", seed=0, index=0, config=clean)[1],
    )


# --- content ---------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", PHANTOM_DOMAINS)
def test_every_label_present_once_and_nothing_else(domain: str) -> None:
    ids = [i for i, _ in PHANTOM_LABELS[domain]]
    for index in range(4):
        image, label, _ = synth_case(domain, seed=11, index=index, config=TINY)
        assert label.dtype == np.uint8 and label.shape == image.shape
        assert set(np.unique(label).tolist()) == {0, *ids}
        for i in ids:
            # One smooth bone: a single 26-connected component of reasonable size.
            components = ndimage.label(label == i, structure=np.ones((3, 3, 3)))[1]
            assert components == 1, f"{domain} case {index}: label {i} has {components} parts"
            assert (label == i).sum() > 100


@pytest.mark.parametrize("domain", PHANTOM_DOMAINS)
def test_image_looks_like_t1_bone(domain: str) -> None:
    image, label, _ = synth_case(domain, seed=5, index=0, config=TINY)
    assert image.dtype == np.int16
    assert image.min() >= 0 and 200 < image.max() < np.iinfo(np.int16).max
    background = image[label == 0].astype(np.float64)
    for i, _ in PHANTOM_LABELS[domain]:
        bone = label == i
        rim = bone & ~ndimage.binary_erosion(bone)
        core = ndimage.binary_erosion(bone, iterations=2)
        outside = ndimage.binary_dilation(bone, iterations=2) & ~ndimage.binary_dilation(bone)
        if core.sum() < 50:  # the thin scapula at this size is nearly all cortex
            continue
        # Dark cortical rim around bright fatty marrow, and a visible edge to the surroundings.
        assert image[core].mean() > 1.5 * image[rim].mean()
        assert abs(image[outside].mean() - image[rim].mean()) > 0.1 * background.std()


def _canonical_case(domain: str, index: int, config: PhantomConfig) -> tuple[np.ndarray, ...]:
    image, label, affine = synth_case(domain, seed=11, index=index, config=config)
    return _canonical(image, affine).astype(np.float64), _canonical(label, affine)


def _ring_level(image: np.ndarray, label: np.ndarray, bone: int) -> float:
    """Median intensity of the in-plane 1-voxel ring just outside ``bone``, relative to the median
    soft tissue (mostly muscle)."""
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    outside = ndimage.binary_dilation(label == bone, in_plane) & (label == 0)
    soft = np.median(image[(label == 0) & (image > 0.05 * image.max())])
    return float(np.median(image[outside]) / soft)


def test_talus_is_ringed_by_cartilage_unlike_its_neighbours() -> None:
    # The talus is mostly articular surface: in every axial slice an intermediate-signal cartilage
    # ring lies just outside its cortex, a 2D cue the calcaneus and the tibia do not have (without
    # it the lower talus and the upper calcaneus look alike slice by slice and a 2D model confuses
    # them).
    clean = PhantomConfig(shape=(48, 48, 16), noise=0.0, bias=0.0)
    for index in range(4):
        image, label = _canonical_case("ankle", index, clean)
        calcaneus, talus, tibia = (_ring_level(image, label, bone) for bone in (1, 2, 3))
        assert talus > max(calcaneus, tibia) + 0.05, (index, calcaneus, talus, tibia)


def test_calcaneus_is_the_long_bone_below_and_behind_the_talus() -> None:
    for index in range(4):
        _, label = _canonical_case("ankle", index, TINY)
        extent = {}
        for bone in (1, 2):
            _, ys, zs = np.nonzero(label == bone)
            extent[bone] = (ys.min(), ys.max(), zs.min(), zs.max())
        calcaneus, talus = extent[1], extent[2]
        # Longer front to back, reaching further back (the heel) and further down.
        assert calcaneus[1] - calcaneus[0] > 1.4 * (talus[1] - talus[0])
        assert calcaneus[0] < talus[0] and calcaneus[2] < talus[2]
        # The tuberosity rises behind the talus: some axial slices hold both bones.
        assert calcaneus[3] >= talus[2]


def test_domains_differ_globally() -> None:
    def dark_fraction(domain: str) -> float:
        image = synth_case(domain, seed=0, index=0, config=TINY)[0].astype(np.float64)
        return float((image < 0.1 * np.percentile(image, 99)).mean())

    # The ankle is a limb in air; the shoulder fills most of the field of view.
    assert dark_fraction("ankle") > dark_fraction("shoulder") + 0.15


# --- geometry --------------------------------------------------------------------------------


def test_affines_are_valid_permuted_and_sometimes_oblique() -> None:
    permuted = oblique = 0
    for index in range(6):
        image, _, affine = synth_case("ankle", seed=2, index=index, config=TINY)
        linear = affine[:3, :3]
        spacing = np.linalg.norm(linear, axis=0)
        direction = linear / spacing
        np.testing.assert_allclose(direction.T @ direction, np.eye(3), atol=1e-9)
        assert abs(np.linalg.det(direction)) == pytest.approx(1.0)
        # On-disk spacing is the config spacing in the on-disk axis order.
        canonical_axis = np.argmax(np.abs(direction), axis=0)
        np.testing.assert_allclose(spacing, np.asarray(TINY.spacing)[canonical_axis], rtol=1e-9)
        assert image.shape == tuple(np.asarray(TINY.shape)[canonical_axis])
        permuted += int(not np.array_equal(canonical_axis, [0, 1, 2]))
        oblique += int(np.count_nonzero(np.abs(linear) > 1e-6) > 3)
        assert (np.count_nonzero(np.abs(linear) > 1e-6) > 3) == (index % 2 == 1)
    assert permuted > 0 and oblique == 3


def test_no_oblique_when_disabled() -> None:
    config = PhantomConfig(shape=(48, 48, 16), oblique_degrees=0.0)
    for index in range(4):
        affine = synth_case("shoulder", seed=0, index=index, config=config)[2]
        assert np.count_nonzero(np.abs(affine[:3, :3]) > 1e-9) == 3


def test_canonical_arrays_are_the_same_across_orientations() -> None:
    # The anatomy is generated in canonical order: reorienting gives the config's shape, the thick
    # axis last, whatever the per-case on-disk permutation.
    for index in range(4):
        image, label, affine = synth_case("ankle", seed=9, index=index, config=TINY)
        canon = _canonical(label, affine)
        assert canon.shape == TINY.shape
        assert _canonical(image, affine).shape == TINY.shape


# --- files -----------------------------------------------------------------------------------


def test_dataset_is_written_in_msd_layout_and_reads_back(tmp_path: Path) -> None:
    from pedseg.io import check_pair, read_label, read_volume

    written = synth_dataset(tmp_path, domains=("ankle", "shoulder"), cases=2, seed=4, config=TINY)
    assert all(path.is_file() for path in written)
    assert len(written) == 2 * (2 * 2 + 1)
    for domain in ("ankle", "shoulder"):
        folder = tmp_path / domain
        meta = json.loads((folder / "dataset.json").read_text())
        assert meta["numTraining"] == 2 and meta["tensorImageSize"] == "3D"
        assert meta["labels"] == {
            "0": "background",
            **{str(i): n for i, n in PHANTOM_LABELS[domain]},
        }
        allowed = [0, *(i for i, _ in PHANTOM_LABELS[domain])]
        for index, entry in enumerate(meta["training"]):
            assert entry["image"] == f"./imagesTr/{case_name(domain, index)}"
            image = read_volume(folder / entry["image"])
            label = read_label(folder / entry["label"], allowed=allowed)
            check_pair(image, label)
            disk_image, disk_label, affine = synth_case(domain, seed=4, index=index, config=TINY)
            assert np.array_equal(image.array, _canonical(disk_image, affine))
            assert np.array_equal(label.array, _canonical(disk_label, affine))
            # `slice_axis: auto` picks the largest spacing: the 1.2 mm axis, last after reorienting.
            assert int(np.argmax(image.spacing)) == 2
            np.testing.assert_allclose(image.spacing, TINY.spacing, rtol=1e-5)
            on_disk = nib.load(folder / entry["image"])
            np.testing.assert_allclose(on_disk.affine, affine, atol=1e-5)
            assert np.array_equal(np.asanyarray(on_disk.dataobj), disk_image)


def test_existing_folder_is_refused_unless_overwrite(tmp_path: Path) -> None:
    synth_dataset(tmp_path, domains=("ankle",), cases=2, config=TINY)
    before = (tmp_path / "ankle" / "imagesTr" / case_name("ankle", 0)).read_bytes()
    with pytest.raises(OutputExistsError, match="ankle: already exists"):
        synth_dataset(tmp_path, domains=("shoulder", "ankle"), cases=1, seed=1, config=TINY)
    assert not (tmp_path / "shoulder").exists()  # nothing written before the refusal
    assert (tmp_path / "ankle" / "imagesTr" / case_name("ankle", 0)).read_bytes() == before
    synth_dataset(tmp_path, domains=("ankle",), cases=1, seed=1, config=TINY, overwrite=True)
    assert not (tmp_path / "ankle" / "imagesTr" / case_name("ankle", 1)).exists()  # stale removed
    assert json.loads((tmp_path / "ankle" / "dataset.json").read_text())["numTraining"] == 1
    assert (tmp_path / "ankle" / "imagesTr" / case_name("ankle", 0)).read_bytes() != before


def test_empty_existing_folder_is_fine(tmp_path: Path) -> None:
    (tmp_path / "shoulder").mkdir()
    synth_dataset(tmp_path, domains=("shoulder",), cases=1, config=TINY)
    assert (tmp_path / "shoulder" / "labelsTr" / case_name("shoulder", 0)).is_file()


def test_unknown_domain_suggests_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(UnknownNameError, match="unknown phantom domain 'ankel'.*'ankle'"):
        synth_case("ankel", seed=0, index=0, config=TINY)
    with pytest.raises(UnknownNameError, match="knee"):
        synth_dataset(tmp_path, domains=("ankle", "knee"), config=TINY)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cases": 0}, "cases must be an integer >= 1, got 0"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"domains": ()}, "domains must name at least one"),
        ({"domains": ("ankle", "ankle")}, "domains must not repeat a name"),
    ],
)
def test_bad_dataset_arguments(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        synth_dataset(tmp_path, config=TINY, **kwargs)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_bad_case_arguments() -> None:
    with pytest.raises(ConfigError, match="index must be an integer >= 0, got -1"):
        synth_case("ankle", seed=0, index=-1, config=TINY)
    with pytest.raises(ConfigError, match="seed must be an integer >= 0, got 1.5"):
        synth_case("ankle", seed=1.5, index=0, config=TINY)  # type: ignore[arg-type]


@pytest.mark.slow
def test_default_size_dataset_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    written = synth_dataset(tmp_path, cases=8)
    elapsed = time.perf_counter() - start
    assert len(written) == 2 * (8 * 2 + 1)
    assert elapsed < 20.0, f"8 cases x 2 domains at 128x128x48 took {elapsed:.1f} s"
