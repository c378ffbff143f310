"""Batch prediction: cases, outputs, manifest, --continue, refusals, all-or-nothing writes, reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pedseg.errors import ConfigError, OutputExistsError, VolumeError
from pedseg.inference import writing
from pedseg.inference.batch import (
    MANIFEST_NAME,
    BatchEvent,
    BatchOptions,
    collect_cases,
    predict_cases,
)
from pedseg.inference.manifest import LOCK_NAME
from pedseg.inference.predictor import Predictor
from pedseg.io import read_volume
from tests.inference.test_predictor import phantom, store, threshold_predictor


def make_inputs(folder: Path, names: tuple[str, ...] = ("a", "b", "c")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        store(folder / f"{name}.nii.gz", phantom(seed=k), spacing=(0.8, 0.9, 2.5))
    return folder


def write_nan(path: Path) -> Path:
    data = np.zeros((8, 8, 4), dtype=np.float32)
    data[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def files(folder: Path) -> set[str]:
    """The folder's files, but for the folder lock of concurrent runs (always there)."""
    names = {p.name for p in folder.iterdir()} if folder.exists() else set()
    return names - {LOCK_NAME}


def test_folder_of_cases_writes_outputs_manifest_and_reports(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    events: list[BatchEvent] = []
    result = predict_cases(
        threshold_predictor(), [inputs], BatchOptions(out=out), callback=events.append
    )
    assert [r.status for r in result.results] == ["done"] * 3
    assert files(out) == {MANIFEST_NAME} | {f"{n}{s}" for n in "abc" for s in (".nii.gz", ".json")}
    assert [e.kind for e in events] == ["start"] + ["case_start", "routed", "case_end"] * 3
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["format"] == 2 and manifest["tool"] == "pedseg predict"
    entry = manifest["cases"]["b"]
    assert entry["model_sha256"] == "0" * 64 and entry["domain"] == "toy"
    assert entry["status"] == "done" and [h["status"] for h in entry["history"]] == [
        "running",
        "done",
    ]
    assert manifest["cases"]["b"]["outputs"] == ["b.nii.gz", "b.json"]
    # the JSON report: volumes in mL = voxels x voxel volume / 1000, from the written label map
    report = json.loads((out / "a.json").read_text())
    labels = np.asarray(nib.load(out / "a.nii.gz").dataobj)
    voxels = int(np.sum(labels == 1))
    assert voxels > 0
    assert report["labels"]["bone"]["voxels"] == voxels
    assert math.isclose(
        report["labels"]["bone"]["ml"], voxels * 0.8 * 0.9 * 2.5 / 1000, rel_tol=1e-6
    )
    assert math.isclose(report["voxel_volume_mm3"], 0.8 * 0.9 * 2.5, rel_tol=1e-6)
    assert report["domain"] == "toy" and report["model_sha256"] == "0" * 64
    assert report["backend"] == "torch" and report["device"] == "cpu"
    assert set(report["timings_s"]) == {
        "read",
        "preprocess",
        "inference",
        "postprocess",
        "write",
        "total",
    }
    assert report["outputs"] == {"labels": "a.nii.gz", "report": "a.json"}


def test_bad_input_fails_alone_and_writes_nothing(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path / "in", ("a", "c"))
    write_nan(inputs / "b.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.int16), np.eye(4)), inputs / "d.nii.gz")
    (inputs / "e.nii.gz").write_bytes((inputs / "a.nii.gz").read_bytes()[:200])  # truncated
    out = tmp_path / "out"
    result = predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out))
    status = {r.case.name: r.status for r in result.results}
    assert status == {"a": "done", "b": "failed", "c": "done", "d": "failed", "e": "failed"}
    assert not any(name.startswith(("b", "d", "e", ".")) for name in files(out))
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert "NaN" in manifest["cases"]["b"]["reason"] or "nan" in manifest["cases"]["b"]["reason"]
    assert manifest["cases"]["d"]["status"] == "failed" and manifest["cases"]["d"]["outputs"] == []


def test_continue_skips_done_cases_only(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path / "in", ("a", "c"))
    write_nan(inputs / "b.nii.gz")
    out = tmp_path / "out"
    predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out))
    stamp = (out / "a.nii.gz").stat().st_mtime_ns
    store(inputs / "b.nii.gz", phantom(seed=7))  # the bad case is fixed
    result = predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out, resume=True))
    assert {r.case.name: r.status for r in result.results} == {
        "a": "skipped",
        "b": "done",
        "c": "skipped",
    }
    assert (out / "a.nii.gz").stat().st_mtime_ns == stamp
    assert json.loads((out / MANIFEST_NAME).read_text())["cases"]["b"]["status"] == "done"
    # a done case whose outputs were deleted is predicted again
    for name in ("c.nii.gz", "c.json"):
        (out / name).unlink()
    again = predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out, resume=True))
    assert [r.status for r in again.results] == ["skipped", "skipped", "done"]
    # another model's results are not "done" for this one
    other = predict_cases(
        _other_model(),
        [inputs],
        BatchOptions(out=out, resume=True, overwrite=True),
    )
    assert [r.status for r in other.results] == ["done"] * 3


def _other_model() -> Predictor:
    from dataclasses import replace

    predictor = threshold_predictor()
    predictor.info = replace(predictor.info, model_sha256="f" * 64)
    return predictor


def test_existing_outputs_are_refused_before_anything_runs(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path / "in", ("a", "b"))
    out = tmp_path / "out"
    predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out))
    (out / "b.json").unlink()
    (out / "b.nii.gz").unlink()
    stamp = (out / "a.nii.gz").stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="--overwrite"):
        predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out))
    assert "b.nii.gz" not in files(out)  # refused up front: b was not predicted either
    result = predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out, overwrite=True))
    assert [r.status for r in result.results] == ["done", "done"]
    assert (out / "a.nii.gz").stat().st_mtime_ns != stamp


def test_output_inside_an_input_folder_is_refused(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path / "in", ("a",))
    for out in (inputs, inputs / "predictions", inputs / "x" / ".." / "y"):
        with pytest.raises(ConfigError, match="inside the input folder"):
            predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out))
    assert files(inputs) == {"a.nii.gz"}
    # a single input file: its own path as --out is refused too
    with pytest.raises(ConfigError, match="would replace an input"):
        predict_cases(
            threshold_predictor(), [inputs / "a.nii.gz"], BatchOptions(out=inputs / "a.nii.gz")
        )
    with pytest.raises(ConfigError, match="would replace an input"):
        predict_cases(threshold_predictor(), [inputs / "a.nii.gz"], BatchOptions(out=inputs))


def test_two_inputs_with_one_output_name_are_refused(tmp_path: Path) -> None:
    first = make_inputs(tmp_path / "one", ("x",))
    second = make_inputs(tmp_path / "two", ("x",))
    with pytest.raises(ConfigError, match="both map to the output name 'x'"):
        collect_cases([first / "x.nii.gz", second / "x.nii.gz"])
    store(first / "x.nii", phantom())
    with pytest.raises(ConfigError, match="both map"):
        collect_cases([first])
    with pytest.raises(VolumeError, match="does not exist"):
        collect_cases([tmp_path / "missing.nii.gz"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no volumes"):
        collect_cases([tmp_path / "empty"])


@pytest.mark.parametrize("error", [VolumeError("x", "disk full"), RuntimeError("bug")])
def test_crash_while_writing_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    inputs = make_inputs(tmp_path / "in", ("a",))
    out = tmp_path / "out"
    real = writing.write_like
    calls: list[Path] = []

    def crashing(array: np.ndarray, reference: object, path: Path, **kw: object) -> None:
        calls.append(path)
        if len(calls) == 2:  # the probability map: labels are already written (to a temp)
            Path(path).write_bytes(b"half a file")
            raise error
        real(array, reference, path, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(writing, "write_like", crashing)
    options = BatchOptions(out=out, save_probabilities=True)
    if isinstance(error, VolumeError):
        result = predict_cases(threshold_predictor(), [inputs], options)
        assert result.results[0].status == "failed" and "disk full" in result.results[0].reason
    else:
        with pytest.raises(RuntimeError, match="bug"):
            predict_cases(threshold_predictor(), [inputs], options)
    assert len(calls) == 2
    assert files(out) == {MANIFEST_NAME}
    assert json.loads((out / MANIFEST_NAME).read_text())["cases"]["a"]["status"] == "failed"


def test_single_file_output_probabilities_and_preview(tmp_path: Path) -> None:
    source = store(tmp_path / "scan.nii.gz", phantom(), perm=(2, 0, 1), flips=(1, -1, 1))
    out = tmp_path / "res" / "seg.nii.gz"
    options = BatchOptions(out=out, save_probabilities=True, preview=True)
    result = predict_cases(threshold_predictor(), [source], options)
    assert result.manifest is None and result.results[0].status == "done"
    assert files(out.parent) == {
        "seg.nii.gz",
        "seg.json",
        "seg_probabilities.nii.gz",
        "seg_preview.png",
    }
    original = nib.load(source)
    probs = nib.load(out.parent / "seg_probabilities.nii.gz")
    assert probs.shape == (*original.shape, 2) and probs.get_data_dtype() == np.float32
    assert np.array_equal(probs.affine, original.affine)
    labels = np.asarray(nib.load(out).dataobj)
    assert np.array_equal(labels, np.argmax(np.asarray(probs.dataobj), axis=-1))
    assert (out.parent / "seg_preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out.parent / "seg.json").read_text())
    assert report["case"] == "scan" and report["outputs"]["preview"] == "seg_preview.png"


def test_dicom_series_folder_is_one_case(tmp_path: Path) -> None:
    from tests.io.conftest import write_dicom_series

    inputs = make_inputs(tmp_path / "in", ("a",))
    image_zyx = np.transpose(phantom((16, 16, 6)), (2, 1, 0))
    write_dicom_series(inputs / "series1", image_zyx, uid="1.2.3.4", description="t1")
    cases = collect_cases([inputs])
    assert [(c.name, c.source.name) for c in cases] == [("a", "a.nii.gz"), ("series1", "series1")]
    out = tmp_path / "out"
    result = predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out))
    assert [r.status for r in result.results] == ["done", "done"]
    seg = nib.load(out / "series1.nii.gz")
    reference = read_volume(inputs / "series1")
    assert seg.shape == reference.source.shape == (16, 16, 6)
    assert np.allclose(seg.affine, reference.source.affine, atol=1e-4)
    raw = np.transpose(image_zyx, (2, 1, 0))
    assert np.array_equal(np.asarray(seg.dataobj), (raw > raw.mean()).astype(np.uint8))


# ------------------------------------------------------------------------------------ prefetch
def _logged_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record ``(case file, thread name)`` of every volume the batch reads."""
    import threading

    from pedseg.inference import batch

    reads: list[tuple[str, str]] = []

    def logged(path: Path) -> object:
        reads.append((Path(path).name, threading.current_thread().name))
        return read_volume(path)

    monkeypatch.setattr(batch, "read_volume", logged)
    return reads


def test_prefetch_reads_the_next_case_ahead_and_keeps_order_and_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = make_inputs(tmp_path / "in", ("a", "c", "d"))
    write_nan(inputs / "b.nii.gz")
    reads = _logged_reads(monkeypatch)
    events: list[BatchEvent] = []
    out = tmp_path / "out"
    result = predict_cases(
        threshold_predictor(), [inputs], BatchOptions(out=out), callback=events.append
    )
    assert [(r.case.name, r.status) for r in result.results] == [
        ("a", "done"),
        ("b", "failed"),
        ("c", "done"),
        ("d", "done"),
    ]
    assert "nan" in result.results[1].reason.lower()  # the prefetched read's error, for b alone
    # every case read once, in input order, in the background thread
    assert [name for name, _ in reads] == ["a.nii.gz", "b.nii.gz", "c.nii.gz", "d.nii.gz"]
    assert all(thread.startswith("pedseg-prefetch") for _, thread in reads)
    ends = [e.case.name for e in events if e.kind == "case_end" and e.case is not None]
    assert ends == ["a", "b", "c", "d"]
    # the outputs and records are those of a run without prefetching
    reads.clear()
    single = tmp_path / "single"
    plain = predict_cases(threshold_predictor(), [inputs], BatchOptions(out=single, prefetch=False))
    assert not any(thread.startswith("pedseg-prefetch") for _, thread in reads)
    assert [(r.case.name, r.status, r.reason) for r in plain.results] == [
        (r.case.name, r.status, r.reason) for r in result.results
    ]
    for name in ("a", "c", "d"):
        expected = nib.load(single / f"{name}.nii.gz").get_fdata()
        np.testing.assert_array_equal(nib.load(out / f"{name}.nii.gz").get_fdata(), expected)
        report = json.loads((out / f"{name}.json").read_text())
        assert set(report["timings_s"]) >= {"read", "preprocess", "inference", "total"}


def test_prefetch_does_not_read_cases_the_manifest_marks_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = make_inputs(tmp_path / "in", ("a", "b", "c"))
    out = tmp_path / "out"
    predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out))
    (out / "b.json").unlink()  # b is to do again, a and c are done
    reads = _logged_reads(monkeypatch)
    result = predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out, resume=True))
    assert [r.status for r in result.results] == ["skipped", "done", "skipped"]
    assert [name for name, _ in reads] == ["b.nii.gz"]
