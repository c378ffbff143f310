"""Out-of-distribution evidence: each check flags its kind of wrong input and passes the right one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pedseg.data.synth import PhantomConfig, synth_dataset
from pedseg.domains.registry import DomainRegistry
from pedseg.domains.spec import DomainSpec
from pedseg.inference.ood import OodCheck, OodLimits
from pedseg.io import read_label, read_volume
from pedseg.io.volume import Volume
from pedseg.runfolder.acquisition import (
    AcquisitionProfile,
    AcquisitionSummary,
    intensity_histogram,
    js_divergence,
)
from pedseg.runfolder.profiles import DomainProfile

CONFIG = PhantomConfig(shape=(48, 48, 24), oblique_degrees=0.0)


@pytest.fixture(scope="module")
def ankle() -> DomainSpec:
    return DomainRegistry().get("ankle")


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Path]]:
    root = tmp_path_factory.mktemp("ood")
    synth_dataset(root / "train", domains=["ankle"], cases=5, seed=0, config=CONFIG)
    synth_dataset(root / "held", domains=["ankle"], cases=3, seed=100, config=CONFIG)
    images = sorted((root / "train" / "ankle" / "imagesTr").iterdir())
    held = sorted((root / "held" / "ankle" / "imagesTr").iterdir())
    return images, held


@pytest.fixture(scope="module")
def check(scans: tuple[list[Path], list[Path]], ankle: DomainSpec) -> OodCheck:
    summary = AcquisitionSummary(ankle)
    for image in scans[0]:
        label = image.parent.parent / "labelsTr" / image.name.replace("_0000", "")
        summary.add(read_volume(image), read_label(label))
    acquisition = summary.profile()
    assert acquisition is not None and acquisition.n_cases == 5
    profile = DomainProfile(
        name="ankle",
        centroid=np.ones(4, np.float32) / 2,
        origin=np.zeros(4, np.float32),
        mean=0.1,
        std=0.1,
        p95=0.2,
        p99=0.3,
        n_slices=10,
        acquisition=acquisition,
    )
    return OodCheck({"ankle": profile})


def _variant(
    volume: Volume, array: np.ndarray, spacing: tuple[float, float, float] | None = None
) -> Volume:
    out = volume.with_array(array)
    if spacing is not None:
        out = Volume(out.array, spacing, out.affine, out.source, out.path)
    return out


def test_held_out_scans_of_the_domain_pass(
    check: OodCheck, scans: tuple[list[Path], list[Path]], ankle: DomainSpec
) -> None:
    for path in scans[1]:
        verdict = check.assess(read_volume(path), ankle)
        assert not verdict.flagged, verdict.reasons


def test_each_kind_of_wrong_input_is_flagged(
    check: OodCheck, scans: tuple[list[Path], list[Path]], ankle: DomainSpec
) -> None:
    volume = read_volume(scans[1][0])
    data = np.asarray(volume.array, dtype=np.float32)
    rng = np.random.default_rng(0)
    cases = {
        "blank": (_variant(volume, np.zeros_like(data)), "blank:"),
        "noise": (
            _variant(volume, rng.normal(100, 30, data.shape).astype(np.float32)),
            "intensities:",
        ),
        "inverted": (_variant(volume, data.max() - data), "intensities:"),
        "thick slices": (_variant(volume, data, (0.4, 0.4, 6.0)), "geometry: spacing along z"),
        "small field of view": (
            _variant(volume, data, (0.1, 0.1, 1.2)),
            "geometry: extent along x",
        ),
    }
    for kind, (variant, reason) in cases.items():
        verdict = check.assess(variant, ankle)
        assert verdict.flagged, kind
        assert any(r.startswith(reason) for r in verdict.reasons), (kind, verdict.reasons)
        assert verdict.warning() is not None and verdict.to_dict()["flagged"]


def test_prediction_volume_and_embedding_evidence(
    check: OodCheck, scans: tuple[list[Path], list[Path]], ankle: DomainSpec
) -> None:
    volume = read_volume(scans[1][0])
    nothing = np.zeros(volume.shape, np.uint8)
    verdict = check.assess(volume, ankle, labels=nothing)
    assert verdict.flagged and verdict.reasons[0].startswith("prediction: 0.0 mL")
    label = read_label(scans[1][0].parent.parent / "labelsTr" / scans[1][0].name)
    assert not check.assess(volume, ankle, labels=np.asarray(label.array)).flagged
    recognition = {"ood": True, "domain": "ankle", "warning": "looks like none of them"}
    flagged = check.assess(volume, ankle, recognition=recognition)
    assert flagged.reasons == ("embedding: looks like none of them",)


def test_without_profiles_only_blank_scans_are_flagged(
    scans: tuple[list[Path], list[Path]], ankle: DomainSpec
) -> None:
    volume = read_volume(scans[1][0])
    assert not OodCheck().assess(volume, ankle).flagged
    assert OodCheck().assess(volume.with_array(np.full(volume.shape, 7.0)), ankle).flagged


def test_limits_are_the_documented_knobs(
    check: OodCheck, scans: tuple[list[Path], list[Path]], ankle: DomainSpec
) -> None:
    volume = read_volume(scans[1][0])
    thick = _variant(volume, np.asarray(volume.array), (0.4, 0.4, 6.0))
    loose = OodCheck(check.profiles, limits=OodLimits(spacing_factor=10.0, extent_factor=10.0))
    assert check.assess(thick, ankle).flagged and not loose.assess(thick, ankle).flagged


def test_acquisition_profile_json_round_trip(check: OodCheck) -> None:
    acquisition = check.profiles["ankle"].acquisition
    assert acquisition is not None
    again = AcquisitionProfile.from_json(acquisition.to_json())
    assert again.spacing_mm == acquisition.spacing_mm and again.label_ml == acquisition.label_ml
    assert js_divergence(np.asarray(again.histogram), np.asarray(acquisition.histogram)) < 1e-9


def test_js_divergence_bounds(scans: tuple[list[Path], list[Path]], ankle: DomainSpec) -> None:
    histogram = intensity_histogram(read_volume(scans[0][0]), ankle)
    assert histogram.sum() == pytest.approx(1.0)
    assert js_divergence(histogram, histogram) == pytest.approx(0.0, abs=1e-12)
    disjoint = js_divergence(np.array([1.0, 0.0]), np.array([0.0, 1.0]))
    assert disjoint == pytest.approx(1.0)


def test_a_scan_recognised_as_another_domain_than_the_given_one_is_flagged(
    check: OodCheck, scans: tuple[list[Path], list[Path]], ankle: DomainSpec
) -> None:
    volume = read_volume(scans[1][0])
    other = {
        "ood": False,
        "domain": "shoulder",
        "expected": "ankle",
        "warning": "looks like domain shoulder (90% of slices, distance 0.50), not ankle",
    }
    verdict = check.assess(volume, ankle, recognition=other)
    assert verdict.reasons == (f"embedding: {other['warning']}",)
    same = {**other, "domain": "ankle"}
    del same["warning"]
    assert not check.assess(volume, ankle, recognition=same).flagged
    recognised = {"ood": False, "domain": "shoulder"}  # no --domain: recognition chose it
    assert not check.assess(volume, ankle, recognition=recognised).flagged


def test_a_missing_label_is_flagged_though_the_total_volume_looks_right(
    check: OodCheck, scans: tuple[list[Path], list[Path]], ankle: DomainSpec
) -> None:
    volume = read_volume(scans[1][0])
    label = np.asarray(read_label(scans[1][0].parent.parent / "labelsTr" / scans[1][0].name).array)
    first, name = ankle.labels[0]
    second = ankle.labels[1][0]
    moved = np.where(label == first, second, label)  # the first label's voxels called the second
    verdict = check.assess(volume, ankle, labels=moved)
    assert verdict.flagged
    assert len(verdict.reasons) == 1  # the total is still in range: only the per-label check
    assert verdict.reasons[0].startswith("prediction: label volumes unlike the training scans'")
    assert f"{name} 0.0 mL" in verdict.reasons[0]
    assert verdict.checks["label_ml"][name] == 0.0
    assert "foreground_ml" in verdict.checks


def test_the_histogram_spread_is_leave_one_out(
    check: OodCheck, scans: tuple[list[Path], list[Path]], ankle: DomainSpec
) -> None:
    """Each training case against the mean of the others: how far a new scan of the kind falls."""
    histograms = [intensity_histogram(read_volume(image), ankle) for image in scans[0]]
    total = np.sum(histograms, axis=0)
    expected = max(js_divergence(h, (total - h) / (len(histograms) - 1)) for h in histograms)
    naive = max(js_divergence(h, total / len(histograms)) for h in histograms)
    acquisition = check.profiles["ankle"].acquisition
    assert acquisition is not None
    assert acquisition.histogram_spread == pytest.approx(expected, rel=1e-9)
    assert acquisition.histogram_spread > naive  # a case's own mean is nearer to it
