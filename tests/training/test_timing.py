"""Step-time measurement (with an injected clock), the per-machine cache and the cached timer."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch

from pedseg.errors import ConfigError
from pedseg.training.timing import (
    CachedTimer,
    Machine,
    StepSpec,
    StepTimeCache,
    StepTiming,
    detect_machine,
    measure_step,
)

TINY = StepSpec(image_size=16, base_width=2, depth=2, batch_size=4, num_classes=(3, 2))
MACHINE = Machine(device="cpu", name="Test CPU", cores=2, threads=2, torch_version="2.x")


def test_measurement_takes_the_median_of_the_timed_steps() -> None:
    # Two readings per step: warm-up 0 -> 9 (9 s, ignored), then 1 s, 4 s, 2 s: median 2 s.
    ticks = iter([0.0, 9.0, 10.0, 11.0, 20.0, 24.0, 30.0, 32.0])
    seconds = measure_step(TINY, warmup=1, steps=3, clock=lambda: next(ticks)).seconds
    assert seconds == 2.0
    with pytest.raises(StopIteration):
        next(ticks)  # exactly two clock readings per step


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_measurement_runs_every_scheme_and_precision(precision: str) -> None:
    counter = iter(range(100))
    for scheme in ("dsl-contrastive", "dsl", "joint"):
        spec = StepSpec(
            image_size=16,
            base_width=2,
            depth=2,
            batch_size=4,
            num_classes=(3, 2),
            scheme=scheme,
            precision=precision,
            channels_last=True,
        )
        timing = measure_step(spec, warmup=0, steps=1, clock=lambda: next(counter))
        assert timing.seconds == 1.0


@pytest.mark.slow
def test_a_real_measurement_is_positive_and_finite() -> None:
    seconds = measure_step(TINY, warmup=1, steps=2).seconds
    assert 0 < seconds < 10 and math.isfinite(seconds)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"image_size": 18, "depth": 3}, "multiple of 2\\*\\*\\(depth - 1\\) = 4"),
        ({"batch_size": 3}, "batch_size must be >= 2 per domain"),
        ({"precision": "fp16"}, "precision must be fp32 or bf16"),
        ({"num_classes": (1,)}, "num_classes must be integers >= 2"),
        ({"scheme": "baseline"}, "scheme must be one of"),
    ],
)
def test_specs_are_validated(changes: dict[str, object], match: str) -> None:
    values = {**TINY.to_dict(), **changes}
    with pytest.raises(ConfigError, match=match):
        StepSpec(**values)  # type: ignore[arg-type]


def test_spec_keys_name_everything_that_costs_time() -> None:
    assert TINY.key() == "unet|dsl-contrastive|dice-ce|16|w2|d2|b4|c3-2|fp32|nchw"
    assert StepSpec.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY
    keys = {
        StepSpec(**{**TINY.to_dict(), name: value}).key()  # type: ignore[arg-type]
        for name, value in [
            ("image_size", 32),
            ("base_width", 4),
            ("batch_size", 8),
            ("precision", "bf16"),
            ("channels_last", True),
            ("seg_loss", "ce"),
        ]
    }
    assert len(keys) == 6 and TINY.key() not in keys


def test_detect_machine_describes_this_cpu() -> None:
    machine = detect_machine("cpu")
    assert machine.device == "cpu" and machine.name
    assert machine.threads == torch.get_num_threads() and machine.cores >= 1
    assert machine.torch_version == torch.__version__
    with pytest.raises(ConfigError, match="device must be cpu"):
        detect_machine("tpu")


def test_cache_round_trip_per_machine(tmp_path: Path) -> None:
    cache = StepTimeCache(tmp_path / "times.json")
    assert cache.get(MACHINE, TINY) is None
    cache.put(MACHINE, TINY, 0.25)
    assert StepTimeCache(tmp_path / "times.json").get(MACHINE, TINY) == 0.25
    other = Machine(device="cpu", name="Test CPU", cores=2, threads=1, torch_version="2.x")
    assert cache.get(other, TINY) is None
    raw = json.loads((tmp_path / "times.json").read_text())
    assert raw["format"] == 1 and len(raw["entries"]) == 1
    with pytest.raises(ConfigError, match="must be > 0"):
        cache.put(MACHINE, TINY, 0.0)


def test_default_cache_lives_in_pedseg_home(isolated_home: Path) -> None:
    assert StepTimeCache().path == isolated_home / "step_times.json"


@pytest.mark.parametrize("damage", ["{broken", '{"format": 7, "entries": {}}', "[]"])
def test_a_damaged_cache_is_ignored_then_rewritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    path = tmp_path / "times.json"
    path.write_text(damage)
    cache = StepTimeCache(path)
    with caplog.at_level(logging.WARNING):
        assert cache.get(MACHINE, TINY) is None
    assert "ignoring the damaged step-time cache" in caplog.text
    cache.put(MACHINE, TINY, 1.5)
    assert cache.get(MACHINE, TINY) == 1.5
    assert json.loads(path.read_text())["format"] == 1


def test_a_damaged_entry_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = StepTimeCache(tmp_path / "times.json")
    cache.put(MACHINE, TINY, 1.0)
    raw = json.loads(cache.path.read_text())
    for entry in raw["entries"].values():
        entry["seconds"] = "fast"
    cache.path.write_text(json.dumps(raw))
    with caplog.at_level(logging.WARNING):
        assert cache.get(MACHINE, TINY) is None
    assert "damaged entry" in caplog.text


def test_cached_timer_measures_once(tmp_path: Path) -> None:
    calls: list[StepSpec] = []

    def fake(spec: StepSpec) -> float:
        calls.append(spec)
        return 0.5

    cache = StepTimeCache(tmp_path / "times.json")
    timer = CachedTimer(machine=MACHINE, cache=cache, measure=fake)
    assert timer(TINY) == 0.5 and timer(TINY) == 0.5
    assert calls == [TINY] and timer.measured == [TINY]
    again = CachedTimer(machine=MACHINE, cache=cache, measure=fake)
    assert again(TINY) == 0.5 and again.measured == [] and len(calls) == 1


def test_the_cache_records_the_other_processes_share(tmp_path: Path) -> None:
    cache = StepTimeCache(tmp_path / "times.json")
    cache.put(MACHINE, TINY, 0.4, others=0.5)
    entry = StepTimeCache(tmp_path / "times.json").entry(MACHINE, TINY)
    assert entry == StepTiming(0.4, 0.5) and entry.contended
    raw = json.loads(cache.path.read_text())
    for item in raw["entries"].values():
        del item["others_cpu"]  # an entry written before the share was recorded
    cache.path.write_text(json.dumps(raw))
    assert cache.entry(MACHINE, TINY) == StepTiming(0.4, None)


def test_a_time_cached_under_contention_is_measured_again(tmp_path: Path) -> None:
    cache = StepTimeCache(tmp_path / "times.json")
    cache.put(MACHINE, TINY, 0.9, others=0.5)  # measured beside another training
    calls: list[StepSpec] = []

    def quiet(spec: StepSpec) -> StepTiming:
        calls.append(spec)
        return StepTiming(0.4, 0.02)

    timer = CachedTimer(machine=MACHINE, cache=cache, measure=quiet)
    assert timer(TINY) == 0.4 and calls == [TINY] and timer.contended == []
    assert cache.entry(MACHINE, TINY) == StepTiming(0.4, 0.02)
    assert CachedTimer(machine=MACHINE, cache=cache, measure=quiet)(TINY) == 0.4
    assert len(calls) == 1  # the quiet time is trusted


def test_when_both_are_contended_the_faster_is_kept_and_listed(tmp_path: Path) -> None:
    cache = StepTimeCache(tmp_path / "times.json")
    cache.put(MACHINE, TINY, 0.7, others=0.4)
    timer = CachedTimer(machine=MACHINE, cache=cache, measure=lambda spec: StepTiming(0.9, 0.6))
    assert timer(TINY) == 0.7
    assert timer.contended == [(TINY, 0.4)] and timer.measured == [TINY]
    assert cache.entry(MACHINE, TINY) == StepTiming(0.7, 0.4)
    faster = CachedTimer(machine=MACHINE, cache=cache, measure=lambda spec: StepTiming(0.6, 0.3))
    assert faster(TINY) == 0.6 and faster.contended == [(TINY, 0.3)]


def test_real_measurement_reports_the_share() -> None:
    timing = measure_step(TINY, warmup=1, steps=2)
    assert timing.seconds > 0
    assert timing.others is None or 0.0 <= timing.others <= 1.0
