"""The training loop on phantom domains: every scheme learns; the run folder holds what it should."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, DeviceError, OutputExistsError, TrainingError
from pedseg.models.build import ModelConfig, build_model
from pedseg.runfolder.integrity import file_sha256
from pedseg.runfolder.pointer import last_run
from pedseg.training.config import TrainConfig
from pedseg.training.events import TrainEvent
from pedseg.training.loop import train
from pedseg.training.prepare import label_mappings, split_cases

ConfigFactory = Callable[..., TrainConfig]


def _falls(losses: list[float]) -> bool:
    return float(np.mean(losses[-3:])) < float(np.mean(losses[:3]))


@pytest.mark.usefixtures("no_plots")
@pytest.mark.parametrize("scheme", ["dsl-contrastive", "dsl", "joint", "baseline"])
def test_each_scheme_trains_and_its_loss_falls(
    scheme: str,
    specs: list[DomainSpec],
    tiny_config: ConfigFactory,
    cache_root: Path,
    tmp_path: Path,
) -> None:
    events: list[TrainEvent] = []
    config = tiny_config(scheme=scheme, steps_per_epoch=6)
    result = train(
        config, specs, out=tmp_path / "run", cache_root=cache_root, callback=events.append
    )
    models = ["ankle", "shoulder"] if scheme == "baseline" else [None]
    for model in models:
        steps = [e for e in events if e.kind == "step" and e.model == model]
        assert len(steps) == 12
        assert _falls([e.losses["total"] for e in steps]), [e.losses["total"] for e in steps]
        contrastive = [e.losses["contrastive"] for e in steps]
        assert (max(contrastive) > 0) == (scheme == "dsl-contrastive")
    kinds = [e.kind for e in events if e.model == models[0]]
    assert kinds[:2] == ["run_start", "epoch_start"] and kinds[-1] == "run_end"
    assert 0.0 <= result.best_metric <= 1.0
    card = json.loads((tmp_path / "run" / "model.json").read_text())
    assert card["scheme"] == scheme
    if scheme == "baseline":
        assert card["kind"] == "baseline"
        assert card["members"] == {"ankle": "baseline/ankle", "shoulder": "baseline/shoulder"}
        member = json.loads((tmp_path / "run" / "baseline" / "ankle" / "model.json").read_text())
        assert member["domains"] == ["ankle"] and member["num_classes"] == [4]
        assert set(result.members) == {"ankle", "shoulder"}
    elif scheme == "joint":
        assert card["model"]["norm"] == "bn" and card["num_classes"] == [6]
        assert card["label_mapping"]["shoulder"]["classes"] == {"1": 4, "2": 5}
    else:
        assert card["model"]["norm"] == "dsbn" and card["num_classes"] == [4, 3]
        assert card["label_mapping"]["shoulder"] == {
            "head": 1,
            "num_classes": 3,
            "classes": {"1": 1, "2": 2},
        }
    assert last_run() == (tmp_path / "run").resolve()


def test_run_folder_artifacts(
    specs: list[DomainSpec], tiny_config: ConfigFactory, cache_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    config = tiny_config(epochs=2, steps_per_epoch=2)
    result = train(config, specs, out=out, cache_root=cache_root)
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints",
        "curves.png",
        "domains.json",
        "domains.safetensors",
        "metrics.csv",
        "model.json",
        "model.safetensors",
    ]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("latest", "best"):
        files = sorted(p.name for p in (out / "checkpoints" / name).iterdir())
        assert files == [
            "model.safetensors",
            "optimizer.safetensors",
            "rng.safetensors",
            "state.json",
        ]
    text = (out / "model.json").read_text()
    card = json.loads(text)
    assert "ankle_0" not in text and "shoulder_0" not in text  # no case ids
    assert str(tmp_path.parent) not in text  # no paths
    assert "val_cases" not in card["training"]
    assert card["model_sha256"] == file_sha256(out / "model.safetensors")
    assert card["domains"] == ["ankle", "shoulder"]
    assert card["descriptor_hashes"]["ankle"] == specs[0].content_hash()
    expected = json.loads(json.dumps(specs[0].to_dict(include_data=False)))
    assert card["descriptors"]["ankle"] == expected
    assert card["best_epoch"] == result.best_epoch
    assert TrainConfig.from_dict(card["training"]) == config
    # the weights are the best epoch's and load into the described model
    model = build_model(ModelConfig.from_dict(card["model"]), num_classes=card["num_classes"])
    weights = load_file(str(out / "model.safetensors"))
    model.load_state_dict(weights)
    best = load_file(str(out / "checkpoints" / "best" / "model.safetensors"))
    assert all(torch.equal(weights[k], best[k]) for k in weights)
    state = json.loads((out / "checkpoints" / "latest" / "state.json").read_text())
    assert state["epoch"] == 2 and state["global_step"] == 4
    assert all(len(ids) == 1 for ids in state["val_cases"].values())
    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert [int(r["step"]) for r in rows] == [2, 4]
    for column in ("loss_ce", "loss_contrastive", "loss_total", "val_dice", "lr", "slices_per_s"):
        assert all(np.isfinite(float(r[column])) for r in rows)
    assert "val_dice/ankle/talus" in rows[0] and "val_dice/shoulder" in rows[0]
    assert float(rows[0]["lr"]) == pytest.approx(3e-3)


def test_refusals(
    specs: list[DomainSpec], tiny_config: ConfigFactory, cache_root: Path, tmp_path: Path
) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="pass --resume"):
        train(tiny_config(), specs, out=busy, cache_root=cache_root)
    with pytest.raises(ConfigError, match="no descriptor was given for domain 'shoulder'"):
        train(tiny_config(), specs[:1], out=tmp_path / "a", cache_root=cache_root)
    with pytest.raises(TrainingError, match="cannot resume .* no checkpoint"):
        train(tiny_config(), specs, out=tmp_path / "b", cache_root=cache_root, resume=True)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            train(tiny_config(device="cuda"), specs, out=tmp_path / "c", cache_root=cache_root)
    assert (busy / "notes.txt").read_text() == "mine"


def test_validation_split_is_deterministic() -> None:
    ids = [f"case_{i:02d}" for i in range(10)]
    train_a, val_a = split_cases(ids, domain="ankle", seed=0, val_fraction=0.2)
    train_b, val_b = split_cases(list(reversed(ids)), domain="ankle", seed=0, val_fraction=0.2)
    assert (train_a, val_a) == (train_b, val_b)
    assert len(val_a) == 2 and sorted(train_a + val_a) == ids
    seeds = {split_cases(ids, domain="ankle", seed=s, val_fraction=0.2)[1] for s in range(6)}
    assert len(seeds) > 1
    assert len(split_cases(ids[:3], domain="x", seed=0, val_fraction=0.0)[1]) == 1  # at least one
    assert split_cases(ids, domain="x", seed=0, val_fraction=0.5, explicit=["case_03"])[1] == (
        "case_03",
    )
    with pytest.raises(ConfigError, match="unknown case 'nope'"):
        split_cases(ids, domain="x", seed=0, val_fraction=0.2, explicit=["nope"])
    with pytest.raises(TrainingError, match="domain 'x' has 1 case"):
        split_cases(ids[:1], domain="x", seed=0, val_fraction=0.2)


def test_joint_label_mapping_is_disjoint(specs: list[DomainSpec]) -> None:
    joint = label_mappings(specs, scheme="joint")
    assert [m.classes for m in joint] == [{1: 1, 2: 2, 3: 3}, {1: 4, 2: 5}]
    assert joint[1].prediction_lut().tolist() == [0, 0, 0, 0, 1, 2]
    assert joint[1].target_lut()[:3].tolist() == [0, 4, 5]
    separate = label_mappings(specs, scheme="dsl")
    assert [(m.head, m.num_classes) for m in separate] == [(0, 4), (1, 3)]


@pytest.mark.gpu
@pytest.mark.usefixtures("no_plots")
def test_trains_on_gpu_with_mixed_precision_and_channels_last(
    specs: list[DomainSpec], tiny_config: ConfigFactory, cache_root: Path, tmp_path: Path
) -> None:
    events: list[TrainEvent] = []
    config = tiny_config(device="cuda", amp="auto", epochs=1, steps_per_epoch=2)
    train(config, specs, out=tmp_path / "run", cache_root=cache_root, callback=events.append)
    losses = [e.losses["total"] for e in events if e.kind == "step"]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert (tmp_path / "run" / "model.safetensors").is_file()
