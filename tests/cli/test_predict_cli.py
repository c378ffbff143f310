"""``pedseg predict``: run and ONNX models, backends, devices, one-line errors, manifest, refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from pedseg.domains.registry import DomainRegistry
from pedseg.inference.backends import gpu_present
from pedseg.inference.batch import MANIFEST_NAME
from pedseg.runfolder.pointer import set_last_run
from tests.cli.conftest import Runner, one_line_error
from tests.conftest_runs import copy_run, phantom_dir, single_thread, tiny_run_dir
from tests.inference.test_predictor import ThresholdNet, phantom, store, toy_spec

NO_GPU = not torch.cuda.is_available() and not gpu_present()


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PEDSEG_NUM_THREADS", "1")
    with single_thread():
        yield


@pytest.fixture(scope="module")
def onnx_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``toy.onnx``: the threshold network, exported with pedseg metadata."""
    from pedseg.export.onnx import export_domain
    from pedseg.runfolder.loading import DomainModel

    folder = tmp_path_factory.mktemp("onnx_dir")
    model = DomainModel(
        spec=toy_spec(),
        image_size=(16, 16),
        module=ThresholdNet().eval(),
        model_sha256="cd" * 32,
        scheme="test",
        embed=None,
    )
    export_domain(model, folder / "toy.onnx")
    return folder


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for k, name in enumerate(("a", "b")):
        store(folder / f"{name}.nii.gz", phantom(seed=k), perm=(1, 2, 0), flips=(-1, 1, 1))
    return folder


def test_folder_with_an_onnx_export(
    pedseg: Runner, onnx_dir: Path, inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = pedseg(
        "predict", str(inputs), "--domain", "toy", "--model", str(onnx_dir), "-o", str(out)
    )
    assert result.code == 0, result.err
    assert "backend onnx on cpu" in result.out and "2 cases predicted" in result.out
    for name in ("a", "b"):
        source, seg = nib.load(inputs / f"{name}.nii.gz"), nib.load(out / f"{name}.nii.gz")
        assert seg.shape == source.shape and np.array_equal(seg.affine, source.affine)
        raw = np.asarray(source.dataobj)
        assert np.array_equal(np.asarray(seg.dataobj), (raw > raw.mean()).astype(np.uint8))
        report = json.loads((out / f"{name}.json").read_text())
        assert report["backend"] == "onnx" and report["model_sha256"] == "cd" * 32
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert {k: v["status"] for k, v in manifest["cases"].items()} == {"a": "done", "b": "done"}


def test_tta_runs_through_the_onnx_export_and_is_reported(
    pedseg: Runner, onnx_dir: Path, inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ("predict", str(inputs), "--domain", "toy", "--model", str(onnx_dir), "--tta")
    result = pedseg(*args, "-o", str(out))
    assert result.code == 0, result.err
    assert "TTA flip-width" in result.out
    for name in ("a", "b"):  # the threshold network is flip-equivariant: same labels as without
        source, seg = nib.load(inputs / f"{name}.nii.gz"), nib.load(out / f"{name}.nii.gz")
        raw = np.asarray(source.dataobj)
        assert np.array_equal(np.asarray(seg.dataobj), (raw > raw.mean()).astype(np.uint8))
        assert json.loads((out / f"{name}.json").read_text())["tta"] == "flip-width"


@pytest.mark.skipif(not NO_GPU, reason="checks the CPU-only behaviour")
def test_cuda_on_a_cpu_machine(
    pedseg: Runner, onnx_dir: Path, inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["predict", str(inputs / "a.nii.gz"), "-d", "toy", "-m", str(onnx_dir), "-o", str(out)]
    line = one_line_error(pedseg(*args, "--device", "cuda"))
    assert "--device cuda" in line and "--allow-cpu-fallback" in line
    assert not out.exists()
    result = pedseg(*args, "--device", "cuda", "--allow-cpu-fallback")
    assert result.code == 0, result.err
    assert "backend onnx on cpu" in result.out
    assert json.loads((out / "a.json").read_text())["device"] == "cpu"


def test_bad_input_file_is_one_line_and_writes_nothing(
    pedseg: Runner, onnx_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.nii.gz"
    data = np.zeros((8, 8, 4), dtype=np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), bad)
    out = tmp_path / "res" / "seg.nii.gz"
    result = pedseg("predict", str(bad), "-d", "toy", "-m", str(onnx_dir), "-o", str(out), "-q")
    line = one_line_error(result)
    assert "bad.nii.gz" in line
    assert not out.parent.exists()


def test_refuses_overwrite_then_continue_and_overwrite(
    pedseg: Runner, onnx_dir: Path, inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["predict", str(inputs), "-d", "toy", "-m", str(onnx_dir), "-o", str(out)]
    assert pedseg(*args).code == 0
    stamp = (out / "a.nii.gz").stat().st_mtime_ns
    line = one_line_error(pedseg(*args))
    assert "already exists" in line and "--overwrite" in line and "--continue" in line
    result = pedseg(*args, "--continue")
    assert result.code == 0 and "2 already done" in result.out
    assert (out / "a.nii.gz").stat().st_mtime_ns == stamp
    assert pedseg(*args, "--overwrite").code == 0
    assert (out / "a.nii.gz").stat().st_mtime_ns != stamp


def test_refusals(pedseg: Runner, onnx_dir: Path, inputs: Path, tmp_path: Path) -> None:
    base = ["-d", "toy", "-m", str(onnx_dir)]
    line = one_line_error(pedseg("predict", str(inputs), *base, "-o", str(inputs / "seg")))
    assert "inside the input folder" in line
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.nii.gz").write_bytes((inputs / "a.nii.gz").read_bytes())
    line = one_line_error(
        pedseg("predict", str(inputs), str(other), *base, "-o", str(tmp_path / "o"))
    )
    assert "both map to the output name 'a'" in line
    line = one_line_error(pedseg("predict", str(inputs), "-d", "nope", "-m", str(onnx_dir)))
    assert "unknown domain" in line and "toy" in line
    line = one_line_error(pedseg("predict", str(inputs), *base, "--backend", "torch"))
    assert "onnxruntime only" in line
    line = one_line_error(pedseg("predict", str(inputs), *base, "--device", "gpu"))
    assert "--device must be" in line
    assert not (tmp_path / "o").exists() and not Path("predictions").exists()


def test_trained_run_torch_then_onnx(
    pedseg: Runner, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from pedseg.export.onnx import export_run
    from pedseg.runfolder.loading import load_run

    run = copy_run(tiny_run_dir(tmp_path_factory), tmp_path / "run")
    set_last_run(run)  # --model defaults to the last run
    images = phantom_dir(tmp_path_factory) / "ankle" / "imagesTr"
    case = sorted(images.iterdir())[0]
    torch_out, onnx_out = tmp_path / "torch", tmp_path / "onnx"
    line = one_line_error(pedseg("predict", str(images), "-d", "ankle", "--backend", "onnx"))
    assert "pedseg export-onnx" in line
    result = pedseg(
        "predict", str(case), "-d", "ankle", "-o", str(torch_out), "--save-probabilities"
    )
    assert result.code == 0, result.err
    assert "backend torch on cpu" in result.out
    export_run(load_run(run), domains=["ankle"])
    result = pedseg(
        "predict", str(case), "-d", "ankle", "-o", str(onnx_out), "--save-probabilities"
    )
    assert result.code == 0, result.err
    assert "backend onnx on cpu" in result.out  # the export is used by default
    name = case.name.removesuffix(".nii.gz")
    a = np.asarray(nib.load(torch_out / f"{name}_probabilities.nii.gz").dataobj)
    b = np.asarray(nib.load(onnx_out / f"{name}_probabilities.nii.gz").dataobj)
    classes = DomainRegistry().get("ankle").num_classes
    assert a.shape == (*nib.load(case).shape, classes) and classes > 2
    assert np.abs(a - b).max() < 1e-4
    reports = [json.loads((o / f"{name}.json").read_text()) for o in (torch_out, onnx_out)]
    assert reports[0]["model_sha256"] == reports[1]["model_sha256"]
    assert [r["backend"] for r in reports] == ["torch", "onnx"]


def test_a_damaged_onnx_export_is_refused(
    pedseg: Runner, onnx_dir: Path, inputs: Path, tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    data = bytearray((onnx_dir / "toy.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (damaged / "toy.onnx").write_bytes(bytes(data))
    out = tmp_path / "out"
    result = pedseg("predict", str(inputs), "-d", "toy", "--model", str(damaged), "-o", str(out))
    message = one_line_error(result)
    assert "toy.onnx: content SHA-256" in message and "export it again" in message
    assert not out.exists() or not list(out.glob("*.nii.gz"))
