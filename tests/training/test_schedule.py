"""The learning-rate schedules: values at known steps, shapes, exact resume, the config fields."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from pedseg.errors import ConfigError
from pedseg.training.config import RESUMABLE_CHANGES, TrainConfig, resumable_changes
from pedseg.training.schedule import Schedule, apply_lr, lr_factor, run_steps, schedule_of


def test_constant_is_the_paper_default() -> None:
    config = TrainConfig(domains=("a",))
    schedule = schedule_of(config)
    assert schedule == Schedule(kind="constant", lr=1e-4)
    assert [schedule.lr_at(s, 50) for s in (0, 1, 25, 49)] == [1e-4] * 4


def test_cosine_values_at_known_steps() -> None:
    schedule = Schedule(kind="cosine", lr=1.0, min_lr_ratio=0.0)
    assert schedule.lr_at(0, 100) == 1.0
    assert schedule.lr_at(50, 100) == pytest.approx(0.5, abs=1e-12)
    assert schedule.lr_at(25, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert schedule.lr_at(99, 100) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.99)))
    floor = Schedule(kind="cosine", lr=2.0, min_lr_ratio=0.1)
    assert floor.lr_at(50, 100) == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))
    assert floor.lr_at(99, 100) > 0.2  # approaches the floor, never below it


def test_poly_is_nnunets() -> None:
    schedule = Schedule(kind="poly", lr=1e-2, power=0.9)
    for step in (0, 10, 500, 999):
        assert schedule.lr_at(step, 1000) == pytest.approx(1e-2 * (1 - step / 1000) ** 0.9)


@pytest.mark.parametrize("kind", ["cosine", "poly"])
def test_decay_is_monotone_after_warmup(kind: str) -> None:
    schedule = Schedule(kind=kind, lr=1e-3, warmup_steps=20, min_lr_ratio=0.01)
    rates = [schedule.lr_at(s, 300) for s in range(300)]
    decay = rates[20:]
    assert decay[0] == pytest.approx(1e-3)
    assert all(b < a for a, b in itertools.pairwise(decay))
    assert min(rates) >= 1e-5 * (1 - 1e-12)


def test_warmup_is_linear_and_reaches_the_rate() -> None:
    schedule = Schedule(kind="cosine", lr=1.0, warmup_steps=4)
    assert [schedule.lr_at(s, 100) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    constant = Schedule(kind="constant", lr=1.0, warmup_steps=3)
    assert [constant.lr_at(s, 10) for s in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1, 1])


def test_warmup_longer_than_the_run_is_all_warmup() -> None:
    assert [lr_factor(s, 3, kind="cosine", warmup_steps=10) for s in range(3)] == pytest.approx(
        [0.25, 0.5, 0.75]
    )


@pytest.mark.parametrize(
    ("step", "total", "match"),
    [(-1, 10, "step must be"), (10, 10, "step must be"), (0, 0, "total steps")],
)
def test_out_of_range_steps_are_refused(step: int, total: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        lr_factor(step, total, kind="cosine")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"kind": "step"}, "schedule must be one of constant, cosine, poly"),
        ({"warmup_steps": -1}, "warmup_steps must be >= 0"),
        ({"min_lr_ratio": 1.5}, "min_lr_ratio must be in"),
        ({"power": 0.0}, "poly_power"),
        ({"lr": 0.0}, "lr must be"),
    ],
)
def test_bad_schedules_are_refused(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Schedule(**changes)  # type: ignore[arg-type]


def _run(config: TrainConfig, total: int, *, resume_at: int | None) -> list[float]:
    """The rates an optimizer used, restarting it (new optimizer, lr from config) at resume_at."""
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([weight], lr=config.lr)
    used: list[float] = []
    for step in range(total):
        if step == resume_at:
            state = optimizer.state_dict()
            optimizer = torch.optim.Adam([weight], lr=config.lr)
            optimizer.load_state_dict(state)
        apply_lr(optimizer, config, step, total)
        used.append(float(optimizer.param_groups[0]["lr"]))
        optimizer.zero_grad()
        (weight**2).sum().backward()
        optimizer.step()
    return used


@pytest.mark.parametrize("kind", ["constant", "cosine", "poly"])
def test_resumed_rates_equal_uninterrupted_ones_exactly(kind: str) -> None:
    config = TrainConfig(
        domains=("a",), schedule=kind, lr=1e-3, warmup_steps=5, min_lr_ratio=0.05, epochs=4
    )
    total = run_steps(config, steps_per_epoch=10)
    assert total == 40
    straight = _run(config, total, resume_at=None)
    for point in (3, 10, 27):
        assert _run(config, total, resume_at=point) == straight  # bit-identical floats


def test_config_round_trips_the_schedule_and_reads_old_dicts() -> None:
    config = TrainConfig(
        domains=("a", "b"), schedule="poly", warmup_steps=7, min_lr_ratio=0.1, poly_power=2.0
    )
    assert TrainConfig.from_dict(config.to_dict()) == config
    old = TrainConfig(domains=("a",)).to_dict()
    for key in ("schedule", "warmup_steps", "min_lr_ratio", "poly_power"):
        del old[key]
    restored = TrainConfig.from_dict(old)
    assert (restored.schedule, restored.warmup_steps, restored.min_lr_ratio) == ("constant", 0, 0.0)
    assert restored == TrainConfig(domains=("a",))


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"schedule": "linear"}, "schedule must be one of constant, cosine, poly, got 'linear'"),
        ({"warmup_steps": 1.5}, "warmup_steps must be an integer"),
        ({"min_lr_ratio": -0.1}, r"min_lr_ratio must be in \[0, 1\]"),
        ({"poly_power": 0}, r"poly_power must be in \(0, inf\]"),
    ],
)
def test_config_validates_the_schedule(changes: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig(domains=("a",), **changes)  # type: ignore[arg-type]


def test_a_resume_may_not_change_the_schedule_or_a_decaying_runs_epochs() -> None:
    assert not {"schedule", "warmup_steps", "min_lr_ratio", "poly_power"} & RESUMABLE_CHANGES
    constant = TrainConfig(domains=("a",), epochs=3)
    assert (
        constant.differences(
            TrainConfig(domains=("a",), epochs=5), ignore=resumable_changes(constant)
        )
        == []
    )
    cosine = TrainConfig(domains=("a",), epochs=3, schedule="cosine")
    longer = TrainConfig(domains=("a",), epochs=5, schedule="cosine")
    assert cosine.differences(longer, ignore=resumable_changes(cosine)) == ["epochs was 3, now 5"]
    warmer = TrainConfig(domains=("a",), epochs=3, schedule="cosine", warmup_steps=9)
    assert cosine.differences(warmer, ignore=resumable_changes(cosine)) == [
        "warmup_steps was 0, now 9"
    ]
