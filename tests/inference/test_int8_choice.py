"""Backend choice between a domain's fp32 and int8 exports (``predict --backend``).

The rules only read the int8 file's metadata, so these tests stand the fp32 graph in for the int8
one (``ankle.int8.onnx`` = the fp32 export with int8 metadata): fast, and the graph itself is tested
in ``tests/export/test_quantize.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import onnx
import pytest

from pedseg.errors import ConfigError, ModelError
from pedseg.export.cpu import cpu_model
from pedseg.export.onnx import DIGEST_KEY, _seal, export_run, load_onnx_model
from pedseg.inference import int8_choice
from pedseg.inference.int8_choice import MIN_SPEEDUP, choose_int8
from pedseg.inference.predictor import open_predictor
from pedseg.runfolder.loading import load_run
from tests.cli.conftest import Result, one_line_error
from tests.conftest_runs import copy_run, phantom_dir, single_thread, tiny_run_dir

DOMAIN = "ankle"


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture
def run(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """A private copy of the tiny run with an fp32 export of ``ankle``."""
    folder = copy_run(tiny_run_dir(tmp_path_factory), tmp_path / "run")
    export_run(load_run(folder), domains=[DOMAIN])
    return folder


def fake_int8(
    run: Path,
    *,
    speedup: float = 2.0,
    cpu: str | None = None,
    passed: bool = True,
    sha256: str | None = None,
    dest: Path | None = None,
) -> Path:
    """``RUN/onnx/ankle.int8.onnx``: the fp32 graph carrying an int8 export's metadata."""
    model, meta = load_onnx_model(run / "onnx" / f"{DOMAIN}.onnx")
    del meta[DIGEST_KEY]  # resealed below
    meta.update(
        precision="int8",
        verification=json.dumps({"passed": passed}),
        speed=json.dumps(
            {
                "cpu": cpu_model() if cpu is None else cpu,
                "fp32_slices_per_s": 100.0,
                "int8_slices_per_s": 100.0 * speedup,
            }
        ),
    )
    if sha256 is not None:
        meta["model_sha256"] = sha256
    onnx.helper.set_model_props(model, meta)
    path = dest if dest is not None else run / "onnx" / f"{DOMAIN}.int8.onnx"
    path.write_bytes(_seal(model))
    return path


def backend_of(run: Path, **kwargs: object) -> str:
    return open_predictor(run, DOMAIN, device="cpu", **kwargs).backend.name  # type: ignore[arg-type]


def test_int8_is_chosen_when_verified_up_to_date_and_faster_here(run: Path) -> None:
    assert backend_of(run) == "onnx"  # no int8 export yet
    fake_int8(run)
    predictor = open_predictor(run, DOMAIN, device="cpu")
    assert predictor.backend.name == "onnx-int8"
    assert predictor.info.source == run / "onnx" / "ankle.int8.onnx"
    assert backend_of(run, backend="onnx") == "onnx"  # asked for: fp32
    assert backend_of(run, backend="torch") == "torch"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"speedup": MIN_SPEEDUP - 0.05}, "x fp32 on this CPU (< 1.1x)"),
        ({"cpu": "Some Other CPU 9000"}, "measured on 'Some Other CPU 9000'"),
        ({"passed": False}, "no passed accuracy verification"),
        ({"sha256": "0" * 64}, "exported from another model"),
    ],
)
def test_fp32_is_kept_otherwise(run: Path, change: dict[str, object], reason: str) -> None:
    path = fake_int8(run, **change)  # type: ignore[arg-type]
    choice = choose_int8(path, model_sha256=load_run(run).card.model_sha256, device="cpu")
    assert choice.path is None and reason in choice.reason
    assert backend_of(run) == "onnx"
    (run / "onnx" / f"{DOMAIN}.onnx").unlink()
    assert backend_of(run) == "torch"  # no fp32 export either: PyTorch, not the int8 graph


def test_int8_is_not_chosen_for_a_gpu(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = fake_int8(run)
    sha = load_run(run).card.model_sha256
    assert choose_int8(path, model_sha256=sha, device="cuda").path is None
    monkeypatch.setattr(int8_choice, "_runs_on_cpu", lambda device: False)
    assert "CPU only" in choose_int8(path, model_sha256=sha, device="auto").reason
    monkeypatch.setattr(int8_choice, "_runs_on_cpu", lambda device: True)
    assert choose_int8(path, model_sha256=sha, device="auto").path == path


def test_asking_for_onnx_int8(run: Path) -> None:
    with pytest.raises(ModelError, match=r"no int8 export of 'ankle' .*export-onnx --int8 first"):
        open_predictor(run, DOMAIN, backend="onnx-int8", device="cpu")
    fake_int8(run, speedup=0.5)  # slower, but asked for
    assert backend_of(run, backend="onnx-int8") == "onnx-int8"
    fake_int8(run, sha256="0" * 64)
    with pytest.raises(ModelError, match="exported from another model.*--int8 --overwrite"):
        open_predictor(run, DOMAIN, backend="onnx-int8", device="cpu")
    with pytest.raises(ConfigError, match="--backend must be one of onnx, onnx-int8, torch"):
        open_predictor(run, DOMAIN, backend="int8", device="cpu")


def test_onnx_folders_follow_the_same_rules(run: Path, tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / f"{DOMAIN}.onnx").write_bytes((run / "onnx" / f"{DOMAIN}.onnx").read_bytes())
    assert backend_of(folder) == "onnx"
    with pytest.raises(ModelError, match="no int8 export of 'ankle'"):
        open_predictor(folder, DOMAIN, backend="onnx-int8", device="cpu")
    int8 = fake_int8(run, speedup=1.0, dest=folder / f"{DOMAIN}.int8.onnx")
    assert backend_of(folder) == "onnx"  # not faster
    assert backend_of(folder, backend="onnx-int8") == "onnx-int8"
    fake_int8(run, dest=int8)
    assert backend_of(folder) == "onnx-int8"
    assert backend_of(int8) == "onnx-int8"  # the file itself
    with pytest.raises(ModelError, match="not an int8 export"):
        open_predictor(folder / f"{DOMAIN}.onnx", DOMAIN, backend="onnx-int8", device="cpu")


def test_predict_prints_the_backend_and_refuses_a_missing_int8(
    run: Path,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pedseg.cli import main

    def pedseg(*args: str) -> Result:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    image = sorted((phantom_dir(tmp_path_factory) / DOMAIN / "imagesTr").iterdir())[0]
    args = ["predict", str(image), "--domain", DOMAIN, "--model", str(run), "--device", "cpu"]
    line = one_line_error(pedseg(*args, "--backend", "onnx-int8", "--out", str(tmp_path / "a")))
    assert "no int8 export of 'ankle'" in line and "pedseg export-onnx --int8" in line
    fake_int8(run)
    result = pedseg(*args, "--out", str(tmp_path / "b"), "--quiet")
    assert result.code == 0, result.err
    assert "backend onnx-int8 on cpu" in result.out
