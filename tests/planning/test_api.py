"""plan_run: fingerprints + device + cached timer + plan in one call (timings injected)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pedseg.data.fingerprint import fingerprint_path
from pedseg.data.synth import PhantomConfig, synth_dataset
from pedseg.domains.registry import DomainRegistry
from pedseg.errors import DeviceError
from pedseg.planning.api import plan_run
from pedseg.training.timing import StepSpec, StepTimeCache, StepTiming


def _fake(spec: StepSpec) -> float:
    return 0.01 + 2e-9 * spec.relative_cost()


def test_plan_run_fingerprints_times_and_plans(tmp_path: Path) -> None:
    synth_dataset(
        tmp_path / "data",
        domains=("ankle", "shoulder"),
        cases=3,
        config=PhantomConfig((48, 48, 16)),
    )
    registry = DomainRegistry(home=tmp_path / "reg")
    specs = [registry.get(n).with_data_root(tmp_path / "data" / n) for n in ("ankle", "shoulder")]
    times = StepTimeCache(tmp_path / "times.json")
    measured: list[StepSpec] = []

    def measure(spec: StepSpec) -> float:
        measured.append(spec)
        return _fake(spec)

    outcome = plan_run(
        specs,
        budget_s=1800.0,
        device="cpu",
        cache_root=tmp_path / "cache",
        times=times,
        measure=measure,
        overrides={"base_width": 8},
    )
    assert outcome.plan.domains == ("ankle", "shoulder") and outcome.plan.base_width == 8
    assert [fp.domain for fp in outcome.fingerprints] == ["ankle", "shoulder"]
    assert list(outcome.measured) == measured and measured
    assert all(s.num_classes == (4, 3) for s in measured)
    assert outcome.times_file == times.path and times.path.is_file()
    assert fingerprint_path(specs[0], cache_root=tmp_path / "cache").is_file()
    again = plan_run(
        specs,
        budget_s=1800.0,
        device="cpu",
        cache_root=tmp_path / "cache",
        times=times,
        measure=measure,
        overrides={"base_width": 8},
    )
    assert again.plan == outcome.plan and again.measured == ()


def test_plan_run_on_a_missing_gpu_is_a_device_error(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        plan_run([], budget_s=60.0, device="cuda", measure=_fake)


def test_times_measured_beside_other_jobs_are_a_plan_reason(tmp_path: Path) -> None:
    synth_dataset(
        tmp_path / "data", domains=("ankle",), cases=3, config=PhantomConfig((48, 48, 16))
    )
    spec = (
        DomainRegistry(home=tmp_path / "reg")
        .get("ankle")
        .with_data_root(tmp_path / "data" / "ankle")
    )
    common = {"budget_s": 1800.0, "device": "cpu", "cache_root": tmp_path / "cache"}
    busy = plan_run(
        [spec],
        times=StepTimeCache(tmp_path / "busy.json"),
        measure=lambda s: StepTiming(_fake(s), 0.5),
        **common,  # type: ignore[arg-type]
    )
    reasons = dict(busy.plan.reasons)
    assert "other processes took up to 50 % of the CPUs" in reasons["timing"]
    quiet = plan_run(
        [spec],
        times=StepTimeCache(tmp_path / "quiet.json"),
        measure=lambda s: StepTiming(_fake(s), 0.01),
        **common,  # type: ignore[arg-type]
    )
    assert "timing" not in dict(quiet.plan.reasons)
