"""Resuming continues exactly: 2 epochs + resume + 2 epochs == 4 epochs, bit for bit; changes refused."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pedseg.domains.spec import DomainSpec
from pedseg.errors import TrainingError
from pedseg.training.config import TrainConfig
from pedseg.training.events import TrainEvent
from pedseg.training.loop import train

ConfigFactory = Callable[..., TrainConfig]


def _losses(events: list[TrainEvent]) -> list[tuple[float, float, float]]:
    return [
        (e.losses["ce"], e.losses["contrastive"], e.losses["total"])
        for e in events
        if e.kind == "step"
    ]


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _loss_columns(path: Path) -> list[tuple[str, ...]]:
    with path.open() as fh:
        return [
            (r["epoch"], r["step"], r["loss_ce"], r["loss_contrastive"], r["loss_total"])
            for r in csv.DictReader(fh)
        ]


@pytest.mark.usefixtures("no_plots")
def test_resume_is_bit_identical(
    specs: list[DomainSpec], tiny_config: ConfigFactory, cache_root: Path, tmp_path: Path
) -> None:
    config = tiny_config(epochs=4, steps_per_epoch=2)
    straight: list[TrainEvent] = []
    train(config, specs, out=tmp_path / "straight", cache_root=cache_root, callback=straight.append)

    split: list[TrainEvent] = []
    first = dataclasses.replace(config, epochs=2)
    train(first, specs, out=tmp_path / "split", cache_root=cache_root, callback=split.append)
    assert len(_losses(split)) == 4
    result = train(
        config,
        specs,
        out=tmp_path / "split",
        cache_root=cache_root,
        resume=True,
        callback=split.append,
    )
    assert result.epochs == 4
    assert _losses(split) == _losses(straight)  # exact float equality, step by step
    for name in ("model.safetensors", "optimizer.safetensors"):
        _assert_same(
            _tensors(tmp_path / "straight" / "checkpoints" / "latest" / name),
            _tensors(tmp_path / "split" / "checkpoints" / "latest" / name),
        )
    _assert_same(
        _tensors(tmp_path / "straight" / "model.safetensors"),
        _tensors(tmp_path / "split" / "model.safetensors"),
    )
    assert _loss_columns(tmp_path / "straight" / "metrics.csv") == _loss_columns(
        tmp_path / "split" / "metrics.csv"
    )
    # resuming a finished run trains nothing more
    again: list[TrainEvent] = []
    train(
        config,
        specs,
        out=tmp_path / "split",
        cache_root=cache_root,
        resume=True,
        callback=again.append,
    )
    assert _losses(again) == []


@pytest.mark.usefixtures("no_plots")
def test_prefetch_workers_do_not_change_results(
    specs: list[DomainSpec], tiny_config: ConfigFactory, cache_root: Path, tmp_path: Path
) -> None:
    runs: list[list[TrainEvent]] = [[], []]
    for workers, events in zip((0, 2), runs, strict=True):
        config = tiny_config(epochs=1, steps_per_epoch=3, num_workers=workers)
        train(
            config,
            specs,
            out=tmp_path / f"w{workers}",
            cache_root=cache_root,
            callback=events.append,
        )
    assert _losses(runs[0]) == _losses(runs[1])


@pytest.mark.usefixtures("no_plots")
def test_resume_refuses_changes(
    specs: list[DomainSpec], tiny_config: ConfigFactory, cache_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    config = tiny_config(epochs=1, steps_per_epoch=1)
    train(config, specs, out=out, cache_root=cache_root)
    before = (out / "checkpoints" / "latest" / "state.json").read_text()
    changed = dataclasses.replace(config, epochs=2, lr=1e-3)
    with pytest.raises(TrainingError, match=r"cannot resume .*run: lr was 0\.003, now 0\.001"):
        train(changed, specs, out=out, cache_root=cache_root, resume=True)
    relabelled = dataclasses.replace(specs[1], labels=((1, "humerus"), (2, "glenoid")))
    with pytest.raises(TrainingError, match="domain 'shoulder' descriptor changed \\(labels was"):
        train(
            dataclasses.replace(config, epochs=2),
            [specs[0], relabelled],
            out=out,
            cache_root=cache_root,
            resume=True,
        )
    assert (out / "checkpoints" / "latest" / "state.json").read_text() == before
