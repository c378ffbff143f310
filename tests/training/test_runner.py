"""The epoch runner: the schedule applied step by step, a budget that fits the epochs, resumes."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pedseg.domains.spec import DomainSpec
from pedseg.runfolder.card import read_card
from pedseg.training.config import TrainConfig
from pedseg.training.events import TrainEvent, TrainResult
from pedseg.training.loop import train
from pedseg.training.runner import BUDGET_RESERVE, Budget
from pedseg.training.schedule import schedule_of
from tests.conftest_runs import single_thread

pytestmark = pytest.mark.usefixtures("no_plots")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


class Ticks:
    """A fake clock: every reading is one second after the previous one."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def _stop_after_two(event: TrainEvent) -> None:
    """A training callback that interrupts the run after its second epoch (a kill)."""
    if event.kind == "epoch_end" and event.epoch == 2:
        raise KeyboardInterrupt


def test_budget_fit_arithmetic() -> None:
    budget = Budget(seconds=100.0, started=0.0, clock=lambda: 10.0)
    assert budget.remaining() == pytest.approx(100 * (1 - BUDGET_RESERVE) - 10)
    assert budget.fit(6.0, done=1) == 1 + math.floor(budget.remaining() / 6.0)
    late = Budget(seconds=100.0, started=0.0, clock=lambda: 500.0)
    assert late.fit(6.0, done=1) == 1  # over budget already: stop after the epoch done


def test_the_schedule_is_applied_every_step(
    tiny_config: Callable[..., TrainConfig],
    specs: list[DomainSpec],
    cache_root: Path,
    tmp_path: Path,
) -> None:
    config = tiny_config(epochs=3, schedule="cosine", warmup_steps=2, min_lr_ratio=0.01)
    result = train(config, specs, out=tmp_path / "run", cache_root=cache_root)
    schedule, total = schedule_of(config), 3 * 3
    for row in result.history:  # the rate of each epoch's last step
        assert float(row["lr"]) == pytest.approx(schedule.lr_at(int(row["step"]) - 1, total))
    assert float(result.history[-1]["lr"]) < 0.1 * config.lr  # decayed by the end


def test_a_budget_fits_the_epochs_and_the_schedule_completes(
    tiny_config: Callable[..., TrainConfig],
    specs: list[DomainSpec],
    cache_root: Path,
    tmp_path: Path,
) -> None:
    config = tiny_config(epochs=20, schedule="cosine", min_lr_ratio=0.01)
    clock = Ticks()  # every epoch takes the same number of ticks
    budget = Budget(seconds=100.0, started=0.0, clock=clock)
    events: list[TrainEvent] = []
    result = train(
        config,
        specs,
        out=tmp_path / "run",
        cache_root=cache_root,
        budget=budget,
        clock=clock,
        callback=events.append,
    )
    pace = float(result.history[1]["seconds"])
    expected = result.epochs
    assert 1 < expected < 20 and expected == len(result.history)
    used = clock.now  # the run ends on time: within its budget, not more than an epoch early
    assert 100.0 * (1 - BUDGET_RESERVE) - 2 * pace <= used <= 100.0 * 1.1
    last = result.history[-1]
    total = expected * 3
    assert int(last["step"]) == total
    assert float(last["lr"]) == pytest.approx(schedule_of(config).lr_at(total - 1, total))
    ends = [e for e in events if e.kind == "epoch_end"]
    assert ends[-1].epochs == expected and len(ends) == expected  # the display follows the fit
    card = read_card(tmp_path / "run")  # the card says what ran, and what was planned
    assert card.training["epochs"] == expected and card.training["planned_epochs"] == 20


def test_a_resumed_budget_run_keeps_its_fitted_epochs(
    tiny_config: Callable[..., TrainConfig],
    specs: list[DomainSpec],
    cache_root: Path,
    tmp_path: Path,
) -> None:
    config = tiny_config(epochs=20, schedule="cosine", min_lr_ratio=0.01)

    def timed() -> tuple[Budget, Ticks]:
        clock = Ticks()
        return Budget(seconds=100.0, started=0.0, clock=clock), clock

    budget, clock = timed()
    whole = train(
        config, specs, out=tmp_path / "whole", cache_root=cache_root, budget=budget, clock=clock
    )

    out = tmp_path / "resumed"
    budget, clock = timed()
    with pytest.raises(KeyboardInterrupt):
        train(
            config,
            specs,
            out=out,
            cache_root=cache_root,
            budget=budget,
            clock=clock,
            callback=_stop_after_two,
        )
    state = json.loads((out / "checkpoints" / "latest" / "state.json").read_text())
    fitted = state["fitted_epochs"]
    again = train(config, specs, out=out, cache_root=cache_root, resume=True, clock=Ticks())
    assert again.epochs == fitted  # the horizon recorded at the interruption is kept
    for ours, theirs in zip(again.history[:2], whole.history[:2], strict=True):
        assert (ours["lr"], ours["loss_total"]) == (theirs["lr"], theirs["loss_total"])


class SlowingTicks(Ticks):
    """A fake clock that gets four times slower after ``after`` readings (a job took the cores)."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.readings = after, 0

    def __call__(self) -> float:
        self.readings += 1
        self.now += 1.0 if self.readings <= self.after else 4.0
        return self.now


def test_a_budget_run_that_slows_down_late_still_ends_on_time(
    tiny_config: Callable[..., TrainConfig],
    specs: list[DomainSpec],
    cache_root: Path,
    tmp_path: Path,
) -> None:
    config = tiny_config(epochs=20, schedule="cosine", min_lr_ratio=0.01)

    def within_200_ticks(out: Path, clock: Ticks) -> TrainResult:
        budget = Budget(seconds=200.0, started=0.0, clock=clock)
        return train(config, specs, out=out, cache_root=cache_root, budget=budget, clock=clock)

    steady = Ticks()
    within_200_ticks(tmp_path / "steady", steady)
    clock = SlowingTicks(after=int(steady.now * 0.6))  # slows down in the second half
    result = within_200_ticks(tmp_path / "run", clock)
    assert clock.now <= 200.0 * 1.1  # without the late refit: 2.55x the budget
    last = result.history[-1]
    total = result.epochs * 3
    assert int(last["step"]) == total  # the (shortened) schedule completed
    assert float(last["lr"]) == pytest.approx(schedule_of(config).lr_at(total - 1, total))


class SwitchedTicks(Ticks):
    """A fake clock whose readings advance by ``step`` (set while the run goes on)."""

    step = 1.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_one_slow_early_epoch_does_not_cut_the_run_short(
    tiny_config: Callable[..., TrainConfig],
    specs: list[DomainSpec],
    cache_root: Path,
    tmp_path: Path,
) -> None:
    """Epoch 2 twelve times slower (another job for a while): the fit at its pace would leave
    three more epochs; the run goes back to the steady pace and uses its budget."""
    config = tiny_config(epochs=20, schedule="cosine", min_lr_ratio=0.01)
    clock = SwitchedTicks()

    def slow_second_epoch(event: TrainEvent) -> None:
        if event.kind == "epoch_end":
            clock.step = 12.0 if event.epoch == 1 else 1.0

    budget = Budget(seconds=600.0, started=0.0, clock=clock)
    result = train(
        config,
        specs,
        out=tmp_path / "run",
        cache_root=cache_root,
        budget=budget,
        clock=clock,
        callback=slow_second_epoch,
    )
    times = [float(row["seconds"]) for row in result.history]
    assert times[1] > 5 * times[2]  # the slow epoch happened
    pace = max(times[2:])
    assert 600.0 * (1 - BUDGET_RESERVE) - 2 * pace <= clock.now <= 600.0 * 1.1
    last = result.history[-1]
    assert int(last["step"]) == result.epochs * 3  # the schedule completed


def _falling_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation Dice that falls every epoch: the best epoch is the first, the final the last."""
    import pedseg.training.runner as runner

    scores = iter([0.9, 0.6, 0.3, 0.2, 0.1])

    def validate(*args: object, **kwargs: object) -> dict[str, float]:
        return {"val_dice": next(scores)}

    monkeypatch.setattr(runner, "validate", validate)


@pytest.mark.parametrize(
    ("keep", "checkpoint", "epoch"), [("final", "latest", 3), ("best", "best", 1)]
)
def test_the_run_keeps_the_weights_it_was_told_to(
    keep: str,
    checkpoint: str,
    epoch: int,
    tiny_config: Callable[..., TrainConfig],
    specs: list[DomainSpec],
    cache_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from safetensors.torch import load_file

    _falling_validation(monkeypatch)
    out = tmp_path / "run"
    result = train(tiny_config(epochs=3, keep=keep), specs, out=out, cache_root=cache_root)
    card = read_card(out)
    assert (result.best_epoch, card.best_epoch, card.best_metric) == (1, 1, pytest.approx(0.9))
    assert (result.weights_epoch, card.weights_epoch) == (epoch, epoch)
    expected = {1: 0.9, 3: 0.3}[epoch]
    assert result.weights_metric == card.weights_metric == pytest.approx(expected)
    weights = load_file(str(out / "model.safetensors"))
    kept = load_file(str(out / "checkpoints" / checkpoint / "model.safetensors"))
    other = load_file(
        str(
            out
            / "checkpoints"
            / ("best" if checkpoint == "latest" else "latest")
            / "model.safetensors"
        )
    )
    assert all(weights[k].equal(kept[k]) for k in weights)
    assert not all(weights[k].equal(other[k]) for k in weights)
    assert card.training["keep"] == keep


def test_a_resumed_run_may_change_which_weights_it_keeps(
    tiny_config: Callable[..., TrainConfig],
    specs: list[DomainSpec],
    cache_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from safetensors.torch import load_file

    _falling_validation(monkeypatch)  # best = epoch 1

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(
            tiny_config(epochs=3, keep="best"),
            specs,
            out=out,
            cache_root=cache_root,
            callback=_stop_after_two,
        )
    assert read_card(out).weights_epoch == 1
    result = train(
        tiny_config(epochs=3, keep="final"), specs, out=out, cache_root=cache_root, resume=True
    )
    card = read_card(out)
    assert (result.best_epoch, result.weights_epoch, card.weights_epoch) == (1, 3, 3)
    assert card.training["keep"] == "final"
    weights = load_file(str(out / "model.safetensors"))
    latest = load_file(str(out / "checkpoints" / "latest" / "model.safetensors"))
    assert all(weights[k].equal(latest[k]) for k in weights)
