"""``pedseg add-domain --to-model``, ``pedseg train --from --freeze-shared`` and ``pedseg adapt-bn``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pedseg.domains.registry import DomainRegistry
from tests.cli.conftest import Runner, one_line_error
from tests.conftest_runs import phantom_dir, single_thread

KNEE_YAML = """\
schema_version: 1
name: knee
description: test knee (the ankle phantoms under another name)
labels: {1: calcaneus, 2: talus, 3: tibia}
normalization: zscore
slice_axis: auto
image_size: [32, 32]
"""
FAST = ("--epochs", "1", "--batch-size", "4", "--steps-per-epoch", "2", "--device", "cpu")


@pytest.fixture(scope="module")
def ankle_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return phantom_dir(tmp_path_factory) / "ankle"


@pytest.fixture(autouse=True)
def _one_thread_no_plots(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr("pedseg.training.runner.plot_curves", lambda *a, **k: None)
    with single_thread():
        yield


@pytest.fixture
def knee_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "knee.yaml"
    path.write_text(KNEE_YAML)
    return path


def test_add_domain_to_model(
    pedseg: Runner, tiny_run: Path, knee_yaml: Path, ankle_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "plus"
    result = pedseg(
        "add-domain",
        str(knee_yaml),
        "--to-model",
        str(tiny_run),
        "--data",
        f"knee={ankle_data}",
        "--out",
        str(out),
        *FAST,
    )
    assert result.code == 0, result.err
    assert "registered domain 'knee'" in result.out and "added domain 'knee'" in result.out
    assert "epoch 1/1" in result.err
    assert "knee" in DomainRegistry().names()
    card = json.loads((out / "model.json").read_text())
    assert card["domains"] == ["ankle", "shoulder", "knee"]
    # Registered already with the same content: a second model can be extended without --force.
    again = pedseg(
        "add-domain",
        str(knee_yaml),
        "--to-model",
        str(tiny_run),
        "--data",
        f"knee={ankle_data}",
        "--out",
        str(tmp_path / "plus2"),
        *FAST,
    )
    assert again.code == 0, again.err
    # The output folder is never overwritten.
    error = one_line_error(
        pedseg(
            "add-domain",
            str(knee_yaml),
            "--to-model",
            str(tiny_run),
            "--data",
            f"knee={ankle_data}",
            "--out",
            str(out),
            *FAST,
        )
    )
    assert "already exists" in error


def test_add_domain_to_a_joint_model_is_refused_before_registering(
    pedseg: Runner, tiny_joint_run: Path, knee_yaml: Path, tmp_path: Path
) -> None:
    error = one_line_error(
        pedseg("add-domain", str(knee_yaml), "--to-model", str(tiny_joint_run), *FAST)
    )
    assert "joint" in error and "dsl" in error
    assert "knee" not in DomainRegistry().names()


def test_add_domain_already_in_the_model(pedseg: Runner, tiny_run: Path, tmp_path: Path) -> None:
    path = tmp_path / "ankle.yaml"
    path.write_text(KNEE_YAML.replace("name: knee", "name: ankle"))
    error = one_line_error(pedseg("add-domain", str(path), "--to-model", str(tiny_run)))
    assert "'ankle' is already in this model" in error


def test_train_from_run(
    pedseg: Runner, tiny_run: Path, knee_yaml: Path, ankle_data: Path, tmp_path: Path
) -> None:
    assert pedseg("add-domain", str(knee_yaml)).code == 0
    error = one_line_error(pedseg("train", "--domains", "knee", "--from", str(tiny_run)))
    assert "not supported yet" in error and "--freeze-shared" in error
    error = one_line_error(
        pedseg(
            "train",
            "--domains",
            "knee",
            "--from",
            str(tiny_run),
            "--freeze-shared",
            "--scheme",
            "joint",
        )
    )
    assert "--scheme" in error
    error = one_line_error(
        pedseg("train", "--domains", "knee", "shoulder", "--from", str(tiny_run), "--freeze-shared")
    )
    assert "one new domain" in error
    out = tmp_path / "trained"
    result = pedseg(
        "train",
        "--domains",
        "knee",
        "--from",
        str(tiny_run),
        "--freeze-shared",
        "--data",
        f"knee={ankle_data}",
        "--out",
        str(out),
        "--lr",
        "0.001",
        *FAST,
    )
    assert result.code == 0, result.err
    card = json.loads((out / "model.json").read_text())
    assert card["extended_from"]["domain"] == "knee"
    assert card["training"]["extension"]["lr"] == 0.001


def test_adapt_bn(pedseg: Runner, tiny_run: Path, ankle_data: Path, tmp_path: Path) -> None:
    scans = sorted(str(p) for p in (ankle_data / "imagesTr").iterdir())
    out = tmp_path / "adapted"
    args = ("adapt-bn", "--model", str(tiny_run), "--domain", "ankle", "--device", "cpu")
    result = pedseg(*args, "--out", str(out), "--batch-size", "8", *scans)
    assert result.code == 0, result.err
    assert "3 scan(s) (48 slices)" in result.out
    assert json.loads((out / "model.json").read_text())["adapted"]["n_slices"] == 48
    assert "already exists" in one_line_error(pedseg(*args, "--out", str(out), *scans))
    missing = one_line_error(pedseg(*args, "--out", str(tmp_path / "x"), str(tmp_path / "no.nii")))
    assert "no.nii" in missing and "does not exist" in missing


def test_adapt_bn_errors(
    pedseg: Runner, tiny_run: Path, tiny_joint_run: Path, ankle_data: Path, tmp_path: Path
) -> None:
    scan = str(next((ankle_data / "imagesTr").iterdir()))
    error = one_line_error(
        pedseg(
            "adapt-bn",
            "--model",
            str(tiny_run),
            "--domain",
            "knee",
            "-o",
            str(tmp_path / "a"),
            scan,
        )
    )
    assert "unknown domain of this model 'knee'" in error
    error = one_line_error(
        pedseg("adapt-bn", "--model", str(tiny_joint_run), "--domain", "ankle", scan)
    )
    assert "joint" in error
    error = one_line_error(
        pedseg("adapt-bn", "--model", str(tmp_path / "nowhere"), "--domain", "ankle", scan)
    )
    assert "no such run folder" in error
