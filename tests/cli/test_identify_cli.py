"""``pedseg identify`` and ``pedseg predict`` without / with the wrong ``--domain``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pedseg.runfolder.profiles import OOD_THRESHOLD
from tests.cli.conftest import Runner, one_line_error
from tests.conftest_runs import single_thread
from tests.inference.test_recognition import DOMAINS, held_out, recognition_run


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PEDSEG_NUM_THREADS", "1")
    with single_thread():
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return recognition_run(tmp_path_factory)


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    return held_out(tmp_path_factory)


def test_identify_prints_a_table_and_writes_json(
    pedseg: Runner, run: Path, scans: dict[str, list[Path]], tmp_path: Path
) -> None:
    paths = [str(p) for d in DOMAINS for p in scans[d]]
    report = tmp_path / "ids.json"
    result = pedseg("identify", *paths, "--model", str(run), "--json", str(report))
    assert result.code == 0, result.err
    assert "ankle_000" in result.out and "shoulder_001" in result.out and "OOD" in result.out
    data = json.loads(report.read_text())
    assert data["domains"] == list(DOMAINS) and data["threshold"] == OOD_THRESHOLD
    assert {s["scan"]: s["domain"] for s in data["scans"]} == {
        p.name.removesuffix(".nii.gz"): d for d in DOMAINS for p in scans[d]
    }
    again = pedseg("identify", paths[0], "--model", str(run), "--json", str(report))
    assert "already exists" in one_line_error(again)
    # A threshold of ~0 flags every scan (its median distance is > 0); the JSON records it.
    strict = tmp_path / "strict.json"
    flagged = pedseg(
        "identify", *paths, "--model", str(run), "--json", str(strict), "--ood-threshold", "1e-6"
    )
    assert flagged.code == 0, flagged.err
    data = json.loads(strict.read_text())
    assert data["threshold"] == 1e-6 and all(s["ood"] for s in data["scans"])
    bad = pedseg("identify", paths[0], "--model", str(run), "--ood-threshold", "0")
    assert "threshold must be a positive number" in one_line_error(bad)


def test_predict_without_domain_recognises_each_scan(
    pedseg: Runner, run: Path, scans: dict[str, list[Path]], tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for path in (scans["ankle"][0], scans["shoulder"][0]):
        shutil.copy(path, inputs / path.name)
    out = tmp_path / "out"
    result = pedseg("predict", str(inputs), "--model", str(run), "-o", str(out), "-q")
    assert result.code == 0, result.err
    assert "ankle_000: domain ankle" in result.out and "2 cases predicted" in result.out
    for name, domain in (("ankle_000", "ankle"), ("shoulder_000", "shoulder")):
        report = json.loads((out / f"{name}.json").read_text())
        assert report["domain"] == domain and report["recognition"]["domain"] == domain
        assert "warning" not in report["recognition"] and "recognition" in report["timings_s"]
    manifest = json.loads((out / "pedseg-predict.json").read_text())
    assert {k: v["domain"] for k, v in manifest["cases"].items()} == {
        "ankle_000": "ankle",
        "shoulder_000": "shoulder",
    }


def test_predict_with_the_wrong_domain_warns(
    pedseg: Runner, run: Path, scans: dict[str, list[Path]], tmp_path: Path
) -> None:
    scan = scans["shoulder"][0]
    out = tmp_path / "seg.nii.gz"
    result = pedseg("predict", str(scan), "--domain", "ankle", "--model", str(run), "-o", str(out))
    assert result.code == 0, result.err
    assert "warning: shoulder_000: looks like domain shoulder" in result.out
    entry = json.loads((tmp_path / "seg.json").read_text())["recognition"]
    assert entry["expected"] == "ankle" and entry["domain"] == "shoulder"
    # With its own domain and a threshold of ~0 the same scan is reported as like none.
    strict = tmp_path / "strict.nii.gz"
    args = ("--domain", "shoulder", "--model", str(run), "-o", str(strict))
    result = pedseg("predict", str(scan), *args, "--ood-threshold", "1e-6")
    assert result.code == 0, result.err
    assert "warning: shoulder_000: looks out of distribution: embedding: looks like none of " in (
        result.out
    )
    verdict = json.loads((tmp_path / "strict.json").read_text())["ood"]
    assert verdict["flagged"] and verdict["reasons"][0].startswith("embedding: looks like none")


def test_recognition_needs_a_run_with_profiles(
    pedseg: Runner, run: Path, scans: dict[str, list[Path]], tmp_path: Path
) -> None:
    old = shutil.copytree(run, tmp_path / "old")
    (old / "domains.safetensors").unlink()
    scan = str(scans["ankle"][0])
    for command in ("predict", "identify"):
        result = pedseg(
            command,
            scan,
            "--model",
            str(old),
            "-o" if command == "predict" else "--device",
            str(tmp_path / "o") if command == "predict" else "cpu",
        )
        assert "trained before" in one_line_error(result) and "--domain" in result.err
    onnx = tmp_path / "onnx"
    onnx.mkdir()
    (onnx / "ankle.onnx").write_bytes(b"")
    result = pedseg("predict", scan, "--model", str(onnx), "-o", str(tmp_path / "o"))
    assert "ONNX exports carry no embedding" in one_line_error(result)
    # with --domain, a run without profiles still predicts (no recognition entry)
    result = pedseg(
        "predict", scan, "-d", "ankle", "--model", str(old), "-o", str(tmp_path / "s.nii.gz")
    )
    assert result.code == 0, result.err
    assert "recognition" not in json.loads((tmp_path / "s.json").read_text())


def test_two_domains_are_planned_once_into_one_place(
    pedseg: Runner, run: Path, scans: dict[str, list[Path]], tmp_path: Path
) -> None:
    """Two scans of two domains, no --domain: one plan, one manifest, each scan read once."""
    paths = [str(scans["ankle"][0]), str(scans["shoulder"][0])]
    # a label-map name for two inputs is refused before any work (it used to write the first
    # group's result as that file, then fail the second with "already exists")
    single = tmp_path / "seg.nii.gz"
    result = pedseg("predict", *paths, "--model", str(run), "-o", str(single))
    assert "names one label map but 2 inputs" in one_line_error(result)
    assert not single.exists() and list(tmp_path.iterdir()) == []
    out = tmp_path / "out"
    result = pedseg("predict", *paths, "--model", str(run), "-o", str(out), "-q")
    assert result.code == 0, result.err
    assert "2 cases predicted" in result.out
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [
        "ankle_000.nii.gz",
        "shoulder_000.nii.gz",
    ]
    manifest = json.loads((out / "pedseg-predict.json").read_text())
    assert {k: v["domain"] for k, v in manifest["cases"].items()} == {
        "ankle_000": "ankle",
        "shoulder_000": "shoulder",
    }
    again = pedseg("predict", *paths, "--model", str(run), "-o", str(out), "--continue", "-q")
    assert again.code == 0 and "2 already done" in again.out


def test_damaged_profiles_and_failed_recognition_are_warnings(
    pedseg: Runner, run: Path, scans: dict[str, list[Path]], tmp_path: Path
) -> None:
    damaged = shutil.copytree(run, tmp_path / "damaged")
    profiles = damaged / "domains.safetensors"
    data = bytearray(profiles.read_bytes())
    data[-1] ^= 0xFF
    profiles.write_bytes(bytes(data))
    scan = str(scans["ankle"][0])
    args = ("--model", str(damaged), "-o", str(tmp_path / "s.nii.gz"))
    result = pedseg("predict", scan, "-d", "ankle", *args)
    assert result.code == 0, result.err
    assert "warning: domain checks are off" in result.out and "does not match" in result.out
    # without --domain the damaged profile is an error naming the file
    result = pedseg("predict", scan, "--model", str(damaged), "-o", str(tmp_path / "t.nii.gz"))
    assert "domains.safetensors" in one_line_error(result) and "does not match" in result.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_cpu_fallback_holds_for_recognition_too(
    pedseg: Runner, run: Path, scans: dict[str, list[Path]], tmp_path: Path
) -> None:
    """--device cuda --allow-cpu-fallback without a GPU: recognition and the network both run on
    the CPU (recognition used to fail with "no CUDA GPU is available")."""
    paths = [str(scans["ankle"][0]), str(scans["shoulder"][0])]
    out = tmp_path / "out"
    args = ("predict", *paths, "--model", str(run), "-o", str(out), "--device", "cuda")
    refused = pedseg(*args)
    assert "--allow-cpu-fallback" in one_line_error(refused)
    result = pedseg(*args, "--allow-cpu-fallback", "-q")
    assert result.code == 0, result.err
    assert "2 cases predicted" in result.out and "on cpu" in result.out
    with_domain = pedseg(
        "predict",
        paths[0],
        "-d",
        "ankle",
        "--model",
        str(run),
        "-o",
        str(tmp_path / "s.nii.gz"),
        "--device",
        "cuda",
        "--allow-cpu-fallback",
    )
    assert with_domain.code == 0, with_domain.err
    assert "recognition" in json.loads((tmp_path / "s.json").read_text())


def test_refuse_ood_records_the_case_failed_and_writes_nothing(
    pedseg: Runner, run: Path, scans: dict[str, list[Path]], tmp_path: Path
) -> None:
    import nibabel as nib
    import numpy as np

    source = nib.load(scans["ankle"][0])
    inputs = tmp_path / "in"
    inputs.mkdir()
    blank = np.zeros(source.shape, dtype=np.int16)
    nib.save(nib.Nifti1Image(blank, source.affine), inputs / "blank.nii.gz")
    shutil.copy(scans["ankle"][0], inputs / scans["ankle"][0].name)
    out = tmp_path / "out"
    args = ("predict", str(inputs), "-d", "ankle", "--model", str(run), "-o", str(out), "-q")
    flagged = pedseg(*args)
    assert flagged.code == 0, flagged.err
    assert "warning: blank: looks out of distribution: blank:" in flagged.out
    report = json.loads((out / "blank.json").read_text())
    assert report["ood"]["flagged"] and report["ood"]["reasons"][0].startswith("blank:")
    refused_out = tmp_path / "refused"
    refused = pedseg(*args[:-3], "-o", str(refused_out), "--refuse-ood", "-q")
    assert refused.code == 1 and "refused as out of distribution" in refused.err
    assert not (refused_out / "blank.nii.gz").exists() and not (refused_out / "blank.json").exists()
    manifest = json.loads((refused_out / "pedseg-predict.json").read_text())
    assert manifest["cases"]["blank"]["status"] == "failed"
    assert "blank:" in manifest["cases"]["blank"]["reason"]


def test_trained_profiles_hold_the_acquisition_summary(run: Path) -> None:
    from pedseg.runfolder.index import index_run
    from pedseg.runfolder.profiles import load_profiles

    profiles = load_profiles(index_run(run))
    for name in DOMAINS:
        acquisition = profiles[name].acquisition
        assert acquisition is not None and acquisition.n_cases >= 2
        assert acquisition.foreground_ml[1] > 0 and set(acquisition.label_ml)
