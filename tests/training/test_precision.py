"""Precision by measurement: the fastest of fp32/bf16 x NCHW/channels_last on a CPU, cached, kept
by a resume; explicit settings as given."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from pedseg.domains.spec import DomainSpec
from pedseg.training.config import TrainConfig
from pedseg.training.loop import train
from pedseg.training.precision import Precision, choose_precision
from pedseg.training.timing import StepSpec, StepTimeCache


def _fake(
    times: dict[tuple[str, bool], float], calls: list[int]
) -> Callable[..., dict[StepSpec, float]]:
    def measure(specs: Sequence[StepSpec]) -> dict[StepSpec, float]:
        calls.append(len(specs))
        return {s: times[(s.precision, s.channels_last)] for s in specs}

    return measure


def test_auto_takes_the_fastest_and_caches_it(tmp_path: Path) -> None:
    config = TrainConfig(
        domains=("a", "b"), image_size=(32, 32), base_width=4, depth=3, batch_size=8
    )
    times = {("fp32", False): 3.0, ("fp32", True): 2.5, ("bf16", False): 1.0, ("bf16", True): 1.2}
    calls: list[int] = []
    cache = StepTimeCache(tmp_path / "times.json")
    cpu = torch.device("cpu")
    kwargs = {"num_classes": (4, 3), "image_size": (32, 32), "times": cache}
    chosen = choose_precision(config, cpu, measure=_fake(times, calls), **kwargs)
    assert chosen == Precision(torch.bfloat16, False) and calls == [4]
    again = choose_precision(config, cpu, measure=_fake(times, calls), **kwargs)
    assert again == chosen and calls == [4]  # answered from the cache
    slow_bf16 = {**times, ("bf16", False): 9.0, ("bf16", True): 9.0}  # a CPU without bf16 units
    other = StepTimeCache(tmp_path / "other.json")
    fp32 = choose_precision(
        config,
        cpu,
        measure=_fake(slow_bf16, calls),
        num_classes=(4, 3),
        image_size=(32, 32),
        times=other,
    )
    assert fp32 == Precision(None, True)  # never slower than fp32


def test_explicit_settings_are_not_measured(tmp_path: Path) -> None:
    calls: list[int] = []
    config = TrainConfig(
        domains=("a",),
        image_size=(32, 32),
        base_width=4,
        depth=3,
        batch_size=8,
        amp="off",
        channels_last=False,
    )
    chosen = choose_precision(
        config,
        torch.device("cpu"),
        measure=_fake({}, calls),
        num_classes=(4,),
        image_size=(32, 32),
        times=StepTimeCache(tmp_path / "t.json"),
    )
    assert chosen == Precision(None, False) and calls == []
    half = TrainConfig(domains=("a",), image_size=(32, 32), amp="bf16", channels_last=True)
    assert choose_precision(
        half,
        torch.device("cpu"),
        measure=_fake({}, calls),
        num_classes=(4,),
        image_size=(32, 32),
        times=StepTimeCache(tmp_path / "u.json"),
    ) == Precision(torch.bfloat16, True)


@pytest.mark.usefixtures("no_plots")
def test_a_run_records_its_measured_precision(
    specs: list[DomainSpec],
    tiny_config: Callable[..., TrainConfig],
    cache_root: Path,
    tmp_path: Path,
) -> None:
    config = tiny_config(amp="auto", channels_last=None, epochs=1)
    train(config, specs, out=tmp_path / "run", cache_root=cache_root)
    state = json.loads((tmp_path / "run" / "checkpoints" / "latest" / "state.json").read_text())
    assert state["precision"]["amp"] in ("fp32", "bf16")
    assert isinstance(state["precision"]["channels_last"], bool)


def test_times_cached_under_contention_are_measured_again(tmp_path: Path) -> None:
    config = TrainConfig(
        domains=("a", "b"), image_size=(32, 32), base_width=4, depth=3, batch_size=8
    )
    times = {("fp32", False): 3.0, ("fp32", True): 2.5, ("bf16", False): 1.0, ("bf16", True): 1.2}
    cache = StepTimeCache(tmp_path / "times.json")
    cpu = torch.device("cpu")
    kwargs = {"num_classes": (4, 3), "image_size": (32, 32), "times": cache}
    calls: list[int] = []
    choose_precision(config, cpu, measure=_fake(times, calls), **kwargs)
    raw = json.loads(cache.path.read_text())
    bf16 = [k for k in raw["entries"] if k.endswith("|bf16|nchw")]
    raw["entries"][bf16[0]].update(seconds=4.0, others_cpu=0.5)  # measured beside another job
    cache.path.write_text(json.dumps(raw))
    again = choose_precision(config, cpu, measure=_fake(times, calls), **kwargs)
    assert calls == [4, 1]  # only the contended one, measured again
    assert again == Precision(torch.bfloat16, False)
    fresh = json.loads(cache.path.read_text())["entries"][bf16[0]]
    assert fresh["seconds"] == 1.0
