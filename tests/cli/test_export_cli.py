"""``pedseg export-onnx``: a thin command over pedseg.export.onnx; one-line errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pedseg.export.onnx import read_onnx_metadata
from pedseg.runfolder.pointer import set_last_run
from tests.cli.conftest import Runner, one_line_error
from tests.conftest_runs import copy_run, single_thread, tiny_run_dir


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture
def run(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """A private copy of the session's tiny dsl-contrastive run."""
    return copy_run(tiny_run_dir(tmp_path_factory), tmp_path / "run")


def test_exports_every_domain_into_run_onnx(pedseg: Runner, run: Path) -> None:
    result = pedseg("export-onnx", "--model", str(run))
    assert result.code == 0, result.err
    for name in ("ankle", "shoulder"):
        assert read_onnx_metadata(run / "onnx" / f"{name}.onnx")["domain"] == name
        assert name in result.out
    assert "max |diff|" in result.out and "exported 2 domain(s) (fp32)" in result.out


def test_domains_out_fp16_and_the_last_run(pedseg: Runner, run: Path, tmp_path: Path) -> None:
    set_last_run(run)
    out = tmp_path / "exports"
    result = pedseg("export-onnx", "--domains", "shoulder", "--out", str(out), "--fp16")
    assert result.code == 0, result.err
    assert [p.name for p in out.iterdir()] == ["shoulder.onnx"]
    assert read_onnx_metadata(out / "shoulder.onnx")["precision"] == "fp16"
    result = pedseg("export-onnx", "--domains", "ankle", "shoulder", "--out", str(out))
    assert result.code == 1
    assert "shoulder.onnx: already exists; pass --overwrite" in one_line_error(result)
    assert not (out / "ankle.onnx").exists()
    result = pedseg("export-onnx", "-d", "ankle", "shoulder", "-o", str(out), "--overwrite")
    assert result.code == 0, result.err
    assert read_onnx_metadata(out / "shoulder.onnx")["precision"] == "fp32"
    assert sorted(p.name for p in out.iterdir()) == ["ankle.onnx", "shoulder.onnx"]


def test_missing_run_is_a_one_line_error(pedseg: Runner, tmp_path: Path) -> None:
    line = one_line_error(pedseg("export-onnx"))
    assert "no trained model found" in line and "--model" in line
    line = one_line_error(pedseg("export-onnx", "--model", str(tmp_path / "nope")))
    assert "no such run folder" in line


def test_unknown_domain_is_a_one_line_error(pedseg: Runner, run: Path) -> None:
    line = one_line_error(pedseg("export-onnx", "--model", str(run), "--domains", "knee"))
    assert "unknown domain of this model 'knee'" in line
    assert not (run / "onnx").exists()


def test_int8_exports_verified_graphs_next_to_fp32(
    pedseg: Runner, run: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.conftest_runs import phantom_dir

    data = phantom_dir(tmp_path_factory) / "shoulder"
    args = ("export-onnx", "--model", str(run), "-d", "shoulder", "--int8")
    line = one_line_error(pedseg(*args, "--fp16"))
    assert "--int8 and --fp16 exclude each other" in line
    line = one_line_error(pedseg(*args, "--data", f"ankle={data}"))
    assert "--data names domain 'ankle' which is not exported" in line
    result = pedseg(*args, "--data", f"shoulder={data}", "--calibration-slices", "12")
    assert result.code == 0, result.err
    assert [p.name for p in (run / "onnx").iterdir()] == ["shoulder.int8.onnx"]
    meta = read_onnx_metadata(run / "onnx" / "shoulder.int8.onnx")
    assert meta["precision"] == "int8" and '"slices": 12' in meta["calibration"]
    assert "agreement" in result.out and "exported 1 int8 domain(s)" in result.out
    line = one_line_error(pedseg(*args, "--data", f"shoulder={data}"))
    assert "shoulder.int8.onnx: already exists; pass --overwrite" in line
    line = one_line_error(pedseg(*args, "--data", f"shoulder={data}", "--calibration", "kl"))
    assert "--calibration must be one of minmax, entropy, percentile" in line
