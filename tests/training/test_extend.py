"""Adding a domain to a trained run: old domains bit-identical, only the new BN and head train."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pedseg.domains.registry import DomainRegistry
from pedseg.domains.spec import DomainSpec
from pedseg.errors import ConfigError, OutputExistsError
from pedseg.models.build import ModelConfig, build_model
from pedseg.models.dsbn import DomainBatchNorm2d
from pedseg.runfolder.card import ModelCard
from pedseg.runfolder.integrity import file_sha256
from pedseg.runfolder.loading import load_run
from pedseg.runfolder.pointer import last_run
from pedseg.training.base_run import check_dsbn, check_extendable
from pedseg.training.events import TrainEvent
from pedseg.training.extend import (
    ExtendConfig,
    extend_run,
    extension_mode,
    freeze_for_extension,
)
from tests.conftest_runs import copy_run, phantom_dir, single_thread


@pytest.fixture(autouse=True)
def _one_thread_no_plots(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr("pedseg.training.runner.plot_curves", lambda *a, **k: None)
    with single_thread():
        yield


@pytest.fixture
def knee(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> DomainSpec:
    """A new domain "knee": the ankle descriptor renamed, on the ankle phantoms."""
    ankle = DomainRegistry(home=tmp_path / "reg").get("ankle")
    spec = dataclasses.replace(ankle, name="knee", source="<test knee>")
    return spec.with_data_root(phantom_dir(tmp_path_factory) / "ankle")


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _config(**changes: object) -> ExtendConfig:
    values: dict[str, object] = {
        "epochs": 2,
        "batch_size": 4,
        "steps_per_epoch": 6,
        "lr": 1e-2,
        "device": "cpu",
    }
    values.update(changes)
    return ExtendConfig(**values)  # type: ignore[arg-type]


def test_extension_keeps_old_domains_bit_identical_and_trains_the_new_one(
    tiny_run: Path, knee: DomainSpec, tmp_path: Path
) -> None:
    base = copy_run(tiny_run, tmp_path / "base")
    before = _tree_digest(base)
    events: list[TrainEvent] = []
    result = extend_run(
        base, knee, config=_config(), cache_root=tmp_path / "cache", callback=events.append
    )
    out = tmp_path / "base-plus-knee"
    assert result.run_dir == out and last_run() == out.resolve()
    assert _tree_digest(base) == before  # the base run is never modified

    losses = [e.losses["ce"] for e in events if e.kind == "step"]
    assert len(losses) == 12
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses

    old, new = load_run(base), load_run(out)
    assert new.domains == ("ankle", "shoulder", "knee")
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for name in ("ankle", "shoulder"):
            assert torch.equal(old.domain(name).module(x), new.domain(name).module(x))
        probabilities = new.domain("knee").module(x)
    assert probabilities.shape == (3, 4, 32, 32)

    old_weights = load_file(str(base / "model.safetensors"))
    new_weights = load_file(str(out / "model.safetensors"))
    assert set(old_weights) < set(new_weights)
    for key, tensor in old_weights.items():
        assert torch.equal(tensor, new_weights[key]), key
    added = sorted(set(new_weights) - set(old_weights))
    assert "heads.heads.2.weight" in added
    assert all(".bns.2." in key or key.startswith("heads.heads.2.") for key in added)
    # The new BN started from the mean of the old two and then trained (affine and statistics).
    prefix = "encoders.0.norm1.bns"
    for name in ("weight", "running_mean"):
        mean = (old_weights[f"{prefix}.0.{name}"] + old_weights[f"{prefix}.1.{name}"]) / 2
        assert not torch.allclose(new_weights[f"{prefix}.2.{name}"], mean)

    card = json.loads((out / "model.json").read_text())
    base_card = json.loads((base / "model.json").read_text())
    assert card["kind"] == "model" and card["scheme"] == base_card["scheme"]
    assert card["domains"] == ["ankle", "shoulder", "knee"]
    assert card["num_classes"] == [*base_card["num_classes"], 4]
    assert card["descriptor_hashes"]["knee"] == knee.content_hash()
    assert card["label_mapping"]["knee"] == {
        "head": 2,
        "num_classes": 4,
        "classes": {"1": 1, "2": 2, "3": 3},
    }
    assert card["extended_from"] == {"model_sha256": base_card["model_sha256"], "domain": "knee"}
    assert card["training"]["base_model_sha256"] == base_card["model_sha256"]
    assert card["training"]["extension"]["domain"] == "knee"
    assert card["training"]["base"] == base_card["training"]
    assert card["model_sha256"] == file_sha256(out / "model.safetensors")
    assert str(tmp_path) not in (out / "model.json").read_text()  # no paths

    with (out / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert "val_dice/knee" in rows[0] and "val_dice/ankle" not in rows[0]
    assert (out / "checkpoints" / "latest" / "state.json").is_file()
    assert (out / "checkpoints" / "best" / "model.safetensors").is_file()


def test_freezing_leaves_only_the_new_bn_and_head_trainable() -> None:
    net = build_model(ModelConfig(base_width=4, depth=3), num_classes=[4, 3])
    index = net.add_domain(3, init="mean")
    trainable = freeze_for_extension(net, index)
    names = [name for name, p in net.named_parameters() if p.requires_grad]
    assert names and all(".bns.2." in n or n.startswith("heads.heads.2.") for n in names)
    layers = [m for m in net.modules() if isinstance(m, DomainBatchNorm2d)]
    assert len(names) == 2 * len(layers) + 2
    assert {id(p) for p in trainable} == {id(p) for p in net.parameters() if p.requires_grad}

    extension_mode(net, index)
    assert not net.training
    for layer in layers:
        assert [bn.training for bn in layer.bns] == [False, False, True]
    old_stats = {k: v.clone() for k, v in net.state_dict().items() if ".bns.2." not in k}
    out = net(torch.randn(4, 1, 16, 16), [(index, 4)])
    out.logits[0].sum().backward()
    for key, value in net.state_dict().items():
        if key in old_stats:
            assert torch.equal(value, old_stats[key]), key
    assert all(p.grad is None for p in net.parameters() if not p.requires_grad)
    assert all(p.grad is not None for p in trainable)


def test_refuses_an_existing_output_folder(
    tiny_run: Path, knee: DomainSpec, tmp_path: Path
) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="taken"):
        extend_run(tiny_run, knee, config=_config(), out=out, cache_root=tmp_path / "cache")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_refuses_a_domain_the_model_already_has(tiny_run: Path, tmp_path: Path) -> None:
    ankle = DomainRegistry(home=tmp_path / "reg").get("ankle")
    with pytest.raises(ConfigError, match="'ankle' is already in this model"):
        extend_run(tiny_run, ankle, config=_config(), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _card(kind: str, scheme: str, norm: str | None) -> ModelCard:
    model = None if norm is None else ModelConfig(norm=norm)
    return ModelCard(kind=kind, scheme=scheme, domains=("a",), training={}, model=model)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("card", "reason"),
    [
        (_card("model", "joint", "bn"), "joint"),
        (_card("baseline", "baseline", None), "baseline"),
        (_card("model", "future", "dsbn"), "only dsl"),
    ],
)
def test_only_dsbn_schemes_can_be_extended(card: ModelCard, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        check_dsbn(card, Path("RUN"), action="add a domain to")
    check_extendable(_card("model", "dsl", "dsbn"), Path("RUN"), "b")


def test_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        ExtendConfig(batch_size=1)
    with pytest.raises(ConfigError, match="lr"):
        ExtendConfig(lr=0.0)
    assert "val_cases" not in ExtendConfig(val_cases=("case_1",)).to_dict()
