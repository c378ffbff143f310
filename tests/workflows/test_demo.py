"""``pedseg demo`` end to end at its smoke-test size: every stage writes what it promises."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pedseg.errors import ConfigError, OutputExistsError
from pedseg.workflows.demo import DemoConfig, run_demo
from tests.cli.conftest import Runner, one_line_error
from tests.conftest_runs import single_thread


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch, single_thread():
        # Module scope runs before the autouse per-test PEDSEG_HOME: isolate it here too.
        patch.setenv("PEDSEG_HOME", str(tmp_path_factory.mktemp("demo_home")))
        run_demo(out, config=DemoConfig.quick())
    return out


def test_demo_writes_every_stage(demo_dir: Path) -> None:
    for domain, n_labels in (("ankle", 3), ("shoulder", 2)):
        assert len(list((demo_dir / "data" / domain / "imagesTr").glob("*.nii.gz"))) == 3
        assert (demo_dir / "run" / "onnx" / f"{domain}.onnx").is_file()
        assert (demo_dir / "predictions" / domain / f"{domain}_000.nii.gz").is_file()
        report = json.loads(
            (demo_dir / "predictions" / domain / f"{domain}_000.json").read_text("utf-8")
        )
        assert report["backend"] == "onnx"
        summary = json.loads((demo_dir / "evaluation" / domain / "summary.json").read_text("utf-8"))
        assert summary["n_cases"] == 1 and len(summary["labels"]) == n_labels
    card = json.loads((demo_dir / "run" / "model.json").read_text("utf-8"))
    assert card["scheme"] == "dsl-contrastive"
    assert "case" not in json.dumps(card["training"]).lower() or "val_cases" not in card["training"]


def test_heldout_phantoms_differ_from_training(demo_dir: Path) -> None:
    train = (demo_dir / "data" / "ankle" / "imagesTr" / "ankle_000.nii.gz").read_bytes()
    held = (demo_dir / "heldout" / "ankle" / "imagesTr" / "ankle_000.nii.gz").read_bytes()
    assert train != held


def test_demo_refuses_a_used_folder(demo_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(OutputExistsError, match="--overwrite"):
        run_demo(demo_dir, config=DemoConfig.quick())
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(OutputExistsError, match="did not write"):
        run_demo(foreign, config=DemoConfig.quick(), overwrite=True)
    assert (foreign / "thesis.tex").read_text() == "precious"
    (foreign / "data").mkdir()  # a user's own data folder, no demo marker: never deleted
    (foreign / "thesis.tex").unlink()
    with pytest.raises(OutputExistsError, match="no demo marker"):
        run_demo(foreign, config=DemoConfig.quick(), overwrite=True)
    assert (foreign / "data").is_dir()


def test_demo_overwrite_replaces_an_earlier_demo(demo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    shutil.copytree(demo_dir, out)
    (out / "predictions" / "stale.txt").write_text("old")
    with single_thread():
        result = run_demo(out, config=DemoConfig.quick(), overwrite=True)
    assert not (out / "predictions" / "stale.txt").exists()
    assert set(result.dice) == {"ankle", "shoulder"}


def test_demo_config_validation() -> None:
    with pytest.raises(ConfigError, match="train_cases must be >= 3"):
        DemoConfig(train_cases=2)


def test_demo_cli_refuses_existing(pedseg: Runner, demo_dir: Path) -> None:
    assert "--overwrite" in one_line_error(pedseg("demo", "--quick", "--out", str(demo_dir)))
