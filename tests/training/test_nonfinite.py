"""A non-finite loss or weight stops the run; the checkpoints keep the last finite epoch."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

import pedseg.training.step as step_module
from pedseg.domains.spec import DomainSpec
from pedseg.errors import TrainingError
from pedseg.training.config import TrainConfig
from pedseg.training.events import TrainEvent
from pedseg.training.loop import train

ConfigFactory = Callable[..., TrainConfig]


def _snapshot_after_epoch(
    out: Path, epoch: int, store: dict[str, bytes]
) -> Callable[[TrainEvent], None]:
    def callback(event: TrainEvent) -> None:
        if event.kind == "epoch_end" and event.epoch == epoch:
            for name in ("latest", "best"):
                store[name] = (out / "checkpoints" / name / "model.safetensors").read_bytes()
            store["model"] = (out / "model.safetensors").read_bytes()

    return callback


def _assert_untouched(out: Path, store: dict[str, bytes], epoch: int) -> None:
    for name in ("latest", "best"):
        assert (out / "checkpoints" / name / "model.safetensors").read_bytes() == store[name]
    assert (out / "model.safetensors").read_bytes() == store["model"]
    state = json.loads((out / "checkpoints" / "latest" / "state.json").read_text())
    assert state["epoch"] == epoch


@pytest.mark.usefixtures("no_plots")
def test_nan_loss_stops_with_epoch_and_step(
    specs: list[DomainSpec],
    tiny_config: ConfigFactory,
    cache_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = step_module.multi_domain_cross_entropy
    calls = {"n": 0}

    def poisoned(*args: Any, **kwargs: Any) -> Tensor:
        calls["n"] += 1
        loss = original(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 6 else loss  # epoch 3, step 2

    monkeypatch.setattr(step_module, "multi_domain_cross_entropy", poisoned)
    out = tmp_path / "run"
    store: dict[str, bytes] = {}
    config = tiny_config(epochs=4, steps_per_epoch=2)
    with pytest.raises(
        TrainingError, match=r"non-finite loss at epoch 3, step 2 \(global step 6\)"
    ):
        train(
            config,
            specs,
            out=out,
            cache_root=cache_root,
            callback=_snapshot_after_epoch(out, 2, store),
        )
    _assert_untouched(out, store, epoch=2)


@pytest.mark.usefixtures("no_plots")
def test_non_finite_weights_are_never_saved(
    specs: list[DomainSpec],
    tiny_config: ConfigFactory,
    cache_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = torch.optim.Adam.step
    calls = {"n": 0}

    def step(self: torch.optim.Adam, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:  # the last step of epoch 2: the loss never sees it
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    out = tmp_path / "run"
    store: dict[str, bytes] = {}
    config = tiny_config(epochs=3, steps_per_epoch=2)
    with pytest.raises(TrainingError, match="non-finite weights .* after epoch 2"):
        train(
            config,
            specs,
            out=out,
            cache_root=cache_root,
            callback=_snapshot_after_epoch(out, 1, store),
        )
    _assert_untouched(out, store, epoch=1)
