"""Checkpoints: exact round trip of model, optimizer and RNG states; atomic folders; no pickle."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from pedseg.errors import IntegrityError, ModelError, TrainingError
from pedseg.models.build import ModelConfig, build_model
from pedseg.runfolder.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from pedseg.training.losses import multi_domain_cross_entropy


def _setup(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = build_model(ModelConfig(base_width=4, depth=3), num_classes=[3, 2])
    return model, torch.optim.Adam(model.parameters(), lr=1e-2)


def _step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((4, 1, 16, 16), generator=gen)
    targets = [
        torch.randint(0, 3, (2, 16, 16), generator=gen),
        torch.randint(0, 2, (2, 16, 16), generator=gen),
    ]
    out = model(x, [(0, 2), (1, 2)])
    loss = multi_domain_cross_entropy(out.logits, targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def test_round_trip_continues_identically(tmp_path: Path) -> None:
    model, optimizer = _setup(0)
    for i in range(3):
        _step(model, optimizer, i)
    save_checkpoint(tmp_path / "latest", model=model, optimizer=optimizer, state={"epoch": 3})
    files = sorted(p.name for p in (tmp_path / "latest").iterdir())
    assert files == ["model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"]

    restored_model, restored_optimizer = _setup(1)  # different initial weights
    state = load_checkpoint(tmp_path / "latest", model=restored_model, optimizer=restored_optimizer)
    assert state["epoch"] == 3 and state["optimizer"]["class"] == "Adam"
    assert _step(model, optimizer, 9) == _step(restored_model, restored_optimizer, 9)
    for a, b in zip(model.state_dict().values(), restored_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_rng_states_round_trip() -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    plain, tensors = rng_state()
    json.dumps(plain)  # plain types only
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(7)
    np.random.seed(7)
    torch.manual_seed(7)
    restore_rng(plain, tensors)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2])


def test_atomic_replacement_and_recovery(tmp_path: Path) -> None:
    model, optimizer = _setup(0)
    folder = tmp_path / "checkpoints" / "latest"
    assert find_checkpoint(folder) is None
    save_checkpoint(folder, model=model, optimizer=optimizer, state={"epoch": 1})
    save_checkpoint(folder, model=model, optimizer=optimizer, state={"epoch": 2})
    assert sorted(p.name for p in folder.parent.iterdir()) == ["latest"]  # no leftovers
    assert json.loads((folder / "state.json").read_text())["epoch"] == 2
    # a crash between "move the old aside" and "rename the new in" leaves only the old copy
    folder.replace(folder.parent / ".latest.old")
    found = find_checkpoint(folder)
    assert found == folder.parent / ".latest.old"
    assert load_checkpoint(found, model=model)["epoch"] == 2


def test_unreadable_checkpoints(tmp_path: Path) -> None:
    model, optimizer = _setup(0)
    folder = tmp_path / "latest"
    save_checkpoint(folder, model=model, optimizer=optimizer, state={"epoch": 1})
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="does not match .*state.json"):
        load_checkpoint(folder, model=model, optimizer=optimizer)
    (folder / "state.json").write_text("{broken")
    with pytest.raises(TrainingError, match="unreadable"):
        load_checkpoint(folder, model=model)
    (folder / "state.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(TrainingError, match="unknown format"):
        load_checkpoint(folder, model=model)


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "rng.safetensors"])
def test_a_flipped_byte_is_refused_naming_the_file(tmp_path: Path, name: str) -> None:
    model, optimizer = _setup(0)
    folder = tmp_path / "latest"
    save_checkpoint(folder, model=model, optimizer=optimizer, state={"epoch": 1})
    data = bytearray((folder / name).read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, deep inside the tensor data: still loadable
    (folder / name).write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"{name}: SHA-256 .* does not match"):
        load_checkpoint(folder, model=model, optimizer=optimizer)


def test_a_checkpoint_without_hashes_is_not_resumed_from(tmp_path: Path) -> None:
    model, optimizer = _setup(0)
    folder = tmp_path / "latest"
    save_checkpoint(folder, model=model, optimizer=optimizer, state={"epoch": 1})
    state = json.loads((folder / "state.json").read_text())
    del state["sha256"]
    (folder / "state.json").write_text(json.dumps(state))
    with pytest.raises(IntegrityError, match="records no SHA-256"):
        load_checkpoint(folder, model=model, optimizer=optimizer)
