"""Label chains (serial anatomy) found in training labels: which series qualify, strict reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from pedseg.data.dataset import list_cases
from pedseg.data.fingerprint import Fingerprint, compute_fingerprint
from pedseg.data.label_chain import LabelChain, detect_chain
from pedseg.data.synth import PhantomConfig, synth_dataset
from pedseg.domains.registry import DomainRegistry
from pedseg.errors import PlanError

LABELS = [(1, "L1"), (2, "L2"), (3, "L3"), (4, "L4"), (5, "L5")]
Facts = dict[int, tuple[tuple[float, float, float], tuple[float, float, float], float]]


def _spine_case(
    *, start: float = 30.0, gap: float = 36.0, sign: int = 1, jitter: float = 0.0
) -> Facts:
    """Five vertebral bodies along axis 0 (``sign`` -1: L1 at the high end), 25 mm high."""
    out: Facts = {}
    for k, (label_id, _) in enumerate(LABELS):
        wobble = jitter if k % 2 else -jitter
        position = start + sign * (k * gap + wobble)
        out[label_id] = ((position, 110.0 + 3 * k, 40.0), (25.0, 40.0, 30.0), 30_000.0 + 1000 * k)
    return out


def test_vertebrae_along_one_axis_form_a_chain() -> None:
    cases = [_spine_case(start=30 + 5 * i, gap=34 + i, jitter=2.0) for i in range(4)]
    chain = detect_chain(cases, LABELS)
    assert chain is not None
    assert chain.labels == ("L1", "L2", "L3", "L4", "L5") and chain.axis == 0
    assert chain.gap_mm == pytest.approx(35.5, abs=1.0)
    assert chain.extent_mm == 25.0 and chain.volume_mm3 == pytest.approx(32_000.0)
    assert chain.min_unit_mm3 == pytest.approx(0.25 * 30_000.0)
    assert "L1/L2/L3/L4/L5" in chain.reason and "4 training cases" in chain.reason


def test_a_chain_running_the_other_way_is_stored_in_increasing_order() -> None:
    chain = detect_chain([_spine_case(start=250, sign=-1) for _ in range(3)], LABELS)
    assert chain is not None and chain.labels == ("L5", "L4", "L3", "L2", "L1")


@pytest.mark.parametrize(
    "spoil",
    [
        "order",  # one case has L2 and L3 swapped
        "gap",  # one gap three times the others
        "volume",  # one member much larger than the others
        "missing",  # too few members present in every case
        "overlap",  # members longer than twice the gap: nested, not serial
        "shape",  # one member twice as wide as the others
    ],
)
def test_what_is_not_a_chain(spoil: str) -> None:
    cases = [_spine_case() for _ in range(3)]
    bad = cases[1]
    if spoil == "order":
        bad[2], bad[3] = bad[3], bad[2]
    elif spoil == "gap":
        for label_id in (4, 5):
            (x, y, z), box, volume = bad[label_id]
            bad[label_id] = ((x + 80.0, y, z), box, volume)
    elif spoil == "volume":
        for case in cases:
            centre, box, _ = case[3]
            case[3] = (centre, box, 200_000.0)
    elif spoil == "missing":
        for label_id in (3, 4, 5):
            del bad[label_id]
    elif spoil == "shape":
        for case in cases:
            centre, (h, w, d), volume = case[2]
            case[2] = (centre, (h, 2.5 * w, d), volume)
    else:
        for case in cases:
            for label_id, (centre, _, volume) in case.items():
                case[label_id] = (centre, (80.0, 40.0, 30.0), volume)
    assert detect_chain(cases, LABELS) is None


def test_nothing_to_detect() -> None:
    assert detect_chain([], LABELS) is None
    assert detect_chain([_spine_case()], LABELS[:3]) is None  # fewer than 4 labels


def test_round_trip_and_strict_reading() -> None:
    chain = detect_chain([_spine_case(), _spine_case(gap=38)], LABELS)
    assert chain is not None
    names = [n for _, n in LABELS]
    assert LabelChain.from_dict(chain.to_dict(), source="x", names=names) == chain
    for change, message in [
        ({"labels": ["L1", "L1", "L2", "L3"]}, "distinct label names"),
        ({"labels": ["L1", "L2", "L3", "T12"]}, "'T12' is not a label"),
        ({"axis": 3}, "must be 0, 1 or 2"),
        ({"gap_mm": 0}, "gap_mm"),
        ({"colour": 1}, "colour"),
    ]:
        with pytest.raises(PlanError, match=message) as info:
            LabelChain.from_dict({**chain.to_dict(), **change}, source="card.json", names=names)
        assert str(info.value).startswith("card.json") and "\n" not in str(info.value)


def test_the_phantom_ankle_has_no_chain_and_the_fingerprint_keeps_that(tmp_path: Path) -> None:
    synth_dataset(tmp_path, domains=("ankle",), cases=3, seed=1, config=PhantomConfig((48, 48, 16)))
    ankle = DomainRegistry(home=tmp_path / "reg").get("ankle").with_data_root(tmp_path / "ankle")
    fp = compute_fingerprint(ankle)
    assert fp.label_chain is None  # calcaneus / talus / tibia are not a series
    assert Fingerprint.from_dict(fp.to_dict()).label_chain is None


@pytest.mark.realdata
def test_real_lumbar_vertebrae_form_a_chain_and_pelvic_bones_do_not(
    shared_data: Path, tmp_path: Path
) -> None:
    registry = DomainRegistry(home=tmp_path / "reg")
    spine = registry.get("spine").with_data_root(shared_data / "spine")
    pelvis = registry.get("pelvis").with_data_root(shared_data / "pelvis")
    fs = compute_fingerprint(spine, cases=list_cases(spine)[:6])
    assert fs.label_chain is not None
    assert fs.label_chain.labels == ("L1", "L2", "L3", "L4", "L5")  # L1 at the low index
    assert fs.label_chain.axis == 0 and 30.0 < fs.label_chain.gap_mm < 42.0
    assert Fingerprint.from_dict(fs.to_dict()).label_chain == fs.label_chain
    assert compute_fingerprint(pelvis, cases=list_cases(pelvis)[:4]).label_chain is None
