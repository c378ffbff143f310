"""Loading trained runs: per-domain segmenters that match the raw network, and every refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pedseg.errors import ModelError, UnknownNameError
from pedseg.models.build import ModelConfig, build_model
from pedseg.models.segmenter import DomainSegmenter
from pedseg.runfolder.loading import LoadedRun, load_run
from pedseg.runfolder.pointer import resolve_run, set_last_run
from tests.conftest_runs import copy_run

pytestmark = pytest.mark.usefixtures("one_thread")


def _raw_probabilities(run: Path, head: int, x: torch.Tensor) -> torch.Tensor:
    """Softmax of the stored network's head, rebuilt here from model.json and the weights."""
    card = json.loads((run / "model.json").read_text())
    net = build_model(ModelConfig.from_dict(card["model"]), num_classes=card["num_classes"])
    net.load_state_dict(load_file(str(run / "model.safetensors")))
    with torch.no_grad():
        return torch.softmax(net.eval().forward_domain(x, head), dim=1)


def _edit_card(run: Path, **changes: object) -> None:
    card = json.loads((run / "model.json").read_text())
    card.update(changes)
    (run / "model.json").write_text(json.dumps(card))


def test_dsl_run_gives_each_domain_its_own_segmenter(tiny_run: Path) -> None:
    run = load_run(tiny_run)
    assert isinstance(run, LoadedRun)
    assert run.domains == ("ankle", "shoulder") and run.path == tiny_run
    assert run.card.scheme == "dsl-contrastive"
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    for head, name in enumerate(run.domains):
        model = run.domain(name)
        assert model.spec.name == name and model.spec.data is None
        assert model.image_size == (32, 32)
        assert model.scheme == "dsl-contrastive" and model.arch == "unet"
        assert model.model_sha256 == run.card.model_sha256
        assert not model.module.training
        with torch.no_grad():
            probabilities = model.module(x)
        assert probabilities.shape == (3, model.spec.num_classes, 32, 32)
        torch.testing.assert_close(probabilities, _raw_probabilities(tiny_run, head, x))
        assert model.embed is not None
        z = model.embed(x)
        assert z.shape == (3, 16)  # base width 4, depth 3: 4 * 2**2
    # The domains use different batch norms and heads.
    with torch.no_grad():
        a = run.domain("ankle").module(x)[:, :3]
        s = run.domain("shoulder").module(x)
    assert not torch.allclose(a, s)


def test_joint_run_folds_other_domains_classes_into_background(tiny_joint_run: Path) -> None:
    run = load_run(tiny_joint_run)
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    union = _raw_probabilities(tiny_joint_run, 0, x)  # background, ankle 1-3, shoulder 4-5
    ankle = run.domain("ankle").module
    shoulder = run.domain("shoulder").module
    with torch.no_grad():
        pa, ps = ankle(x), shoulder(x)
    assert pa.shape == (2, 4, 32, 32) and ps.shape == (2, 3, 32, 32)
    torch.testing.assert_close(pa[:, 1:], union[:, 1:4])
    torch.testing.assert_close(pa[:, 0], union[:, 0] + union[:, 4] + union[:, 5])
    torch.testing.assert_close(ps[:, 1:], union[:, 4:6])
    torch.testing.assert_close(ps[:, 0], union[:, :4].sum(dim=1))
    torch.testing.assert_close(ps.sum(dim=1), torch.ones(2, 32, 32))


def test_baseline_run_loads_each_member(tiny_baseline_run: Path) -> None:
    run = load_run(tiny_baseline_run)
    assert run.card.kind == "baseline" and run.domains == ("ankle", "shoulder")
    shas = set()
    for name in run.domains:
        model = run.domain(name)
        member = tiny_baseline_run / "baseline" / name
        assert model.model_sha256 == json.loads((member / "model.json").read_text())["model_sha256"]
        shas.add(model.model_sha256)
        x = torch.randn(1, 1, 16, 16)
        with torch.no_grad():
            torch.testing.assert_close(model.module(x), _raw_probabilities(member, 0, x))
    assert len(shas) == 2


def test_unknown_domain_suggests_the_run_domains(tiny_run: Path) -> None:
    with pytest.raises(UnknownNameError, match=r"domain of this model 'ankel'.*'ankle'"):
        load_run(tiny_run).domain("ankel")


def test_resolve_run_uses_the_last_run_or_says_how_to_fix(tiny_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no trained model found.*--model"):
        resolve_run(None)
    set_last_run(tiny_run)
    assert resolve_run(None).root == tiny_run.resolve()
    assert load_run(None).domains == ("ankle", "shoulder")
    with pytest.raises(ModelError, match="no such run folder"):
        resolve_run(tmp_path / "missing")
    with pytest.raises(ModelError, match=r"not a run folder \(no model.json\)"):
        resolve_run(tmp_path)


def test_tampered_weights_are_refused(tiny_run: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    data = bytearray((run / "model.safetensors").read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    (run / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model.safetensors: SHA-256 .* does not match"):
        load_run(run)
    (run / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="model.safetensors: missing"):
        load_run(run)


def test_unknown_format_and_kind_are_refused(tiny_run: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    _edit_card(run, format=99)
    with pytest.raises(ModelError, match="unknown model format 99"):
        load_run(run)
    _edit_card(run, format=1, kind="ensemble")
    with pytest.raises(ModelError, match="unknown kind 'ensemble'"):
        load_run(run)
    (run / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="model.json: unreadable"):
        load_run(run)


def test_edited_descriptor_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    card = json.loads((run / "model.json").read_text())
    card["descriptors"]["ankle"]["labels"]["1"] = "heel"
    (run / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="descriptor of domain 'ankle' does not match"):
        load_run(run)


def test_mismatched_weights_and_architecture_are_refused(tiny_run: Path, tmp_path: Path) -> None:
    run = copy_run(tiny_run, tmp_path / "run")
    card = json.loads((run / "model.json").read_text())
    card["model"]["base_width"] = 8
    (run / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="cannot be loaded into the model of model.json"):
        load_run(run)


def test_baseline_member_outside_the_run_is_refused(
    tiny_baseline_run: Path, tmp_path: Path
) -> None:
    run = copy_run(tiny_baseline_run, tmp_path / "run")
    _edit_card(run, members={"ankle": "../elsewhere", "shoulder": "baseline/shoulder"})
    with pytest.raises(ModelError, match="members.ankle must be a relative folder inside the run"):
        load_run(run)


def test_segmenter_projection_is_a_partition() -> None:
    net = build_model(ModelConfig(base_width=2, depth=2, norm="bn"), num_classes=[6]).eval()
    segmenter = DomainSegmenter(net, head=0, classes=[4, 5])
    assert segmenter.num_classes == 3 and segmenter.size_multiple == 2
    assert segmenter.projection is not None
    weight = segmenter.projection[:, :, 0, 0]
    assert torch.equal(weight.sum(dim=0), torch.ones(6))  # every class goes to exactly one output
    assert weight[1, 4] == 1 and weight[2, 5] == 1 and weight[0, :4].sum() == 4
