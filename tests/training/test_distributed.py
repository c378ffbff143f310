"""DDP: environment detection, and a real two-process Gloo run on the CPU."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from pedseg.domains.spec import DomainSpec
from pedseg.errors import TrainingError
from pedseg.training.config import TrainConfig
from pedseg.training.distributed import DistInfo, detect

ConfigFactory = Callable[..., TrainConfig]


def test_detect_reads_torchrun_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert detect() == DistInfo(rank=0, world_size=1, local_rank=0)
    assert not detect().enabled and detect().is_main
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = detect()
    assert (info.rank, info.world_size, info.local_rank) == (3, 4, 1)
    assert info.enabled and not info.is_main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(TrainingError, match="inconsistent distributed environment"):
        detect()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(TrainingError, match="RANK must be an integer"):
        detect()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(
    rank: int,
    world: int,
    port: int,
    config: TrainConfig,
    specs: list[DomainSpec],
    out: Path,
    cache_root: Path,
    home: Path,
) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": str(world),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "PEDSEG_HOME": str(home),
            "PEDSEG_NUM_THREADS": "1",
        }
    )
    from pedseg.training.loop import train

    steps: list[float] = []
    result = train(
        config,
        specs,
        out=out,
        cache_root=cache_root,
        callback=lambda e: steps.append(e.losses["total"]) if e.kind == "step" else None,
    )
    marker = out.parent / f"rank{rank}.json"
    marker.write_text(json.dumps({"epochs": result.epochs, "steps": steps}))


def test_two_gloo_processes_train_and_rank0_writes_once(
    specs: list[DomainSpec],
    tiny_config: ConfigFactory,
    cache_root: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    config = tiny_config(epochs=1, steps_per_epoch=2, batch_size=8, image_size=(32, 32))
    mp.spawn(
        _worker,
        args=(2, _free_port(), config, specs, out, cache_root, tmp_path / "home"),
        nprocs=2,
        join=True,
    )
    markers = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [m["epochs"] for m in markers] == [1, 1]
    assert len(markers[0]["steps"]) == 2 and markers[1]["steps"] == []  # events on rank 0 only
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints",
        "curves.png",
        "domains.json",
        "domains.safetensors",
        "metrics.csv",
        "model.json",
        "model.safetensors",
    ]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best", "latest"]
    state = json.loads((out / "checkpoints" / "latest" / "state.json").read_text())
    assert state["world_size"] == 2 and state["global_step"] == 2
    assert (tmp_path / "home" / "last_run").read_text().strip() == str(out.resolve())
