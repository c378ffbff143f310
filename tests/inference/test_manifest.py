"""The output folder's manifest and locks: concurrent runs, kills, --continue, junk manifests."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from pedseg.errors import ConfigError, PedsegError
from pedseg.inference.batch import BatchOptions, predict_cases
from pedseg.inference.manifest import LOCK_NAME, MANIFEST_NAME, FolderLock, OutputManifest
from tests.inference.test_batch import files, make_inputs
from tests.inference.test_predictor import threshold_predictor

fork = multiprocessing.get_context("fork")
pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX record locks")


def _predict(inputs: Path, out: Path, resume: bool) -> None:
    try:
        options = BatchOptions(out=out, resume=resume)
        result = predict_cases(threshold_predictor(), [inputs], options)
    except PedsegError:  # what the CLI turns into one line and exit 1
        os._exit(1)
    os._exit(0 if not result.failed else 3)


def _run_processes(count: int, inputs: Path, out: Path, *, resume: bool = False) -> list[int]:
    processes = [fork.Process(target=_predict, args=(inputs, out, resume)) for _ in range(count)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
    return [p.exitcode if p.exitcode is not None else -1 for p in processes]


def _done_counts(out: Path) -> dict[str, int]:
    cases = json.loads((out / MANIFEST_NAME).read_text())["cases"]
    return {
        name: sum(1 for h in entry["history"] if h["status"] == "done")
        for name, entry in cases.items()
    }


def test_six_runs_at_once_each_case_done_exactly_once(tmp_path: Path) -> None:
    """The documented way to split a folder over processes: start them all with --continue."""
    names = tuple(f"c{k}" for k in range(6))
    inputs = make_inputs(tmp_path / "in", names)
    out = tmp_path / "out"
    assert _run_processes(6, inputs, out, resume=True) == [0] * 6
    assert _done_counts(out) == dict.fromkeys(names, 1)  # no lost record, no case done twice
    assert files(out) == {MANIFEST_NAME} | {f"{n}{s}" for n in names for s in (".nii.gz", ".json")}
    again = predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out, resume=True))
    assert [r.status for r in again.results] == ["skipped"] * 6


def test_six_plain_runs_at_once_never_share_a_case(tmp_path: Path) -> None:
    """Without --continue a run that finds another's outputs refuses them (exit 1, nothing
    written); the others share the cases; no record is lost and no case is done twice."""
    names = tuple(f"c{k}" for k in range(6))
    inputs = make_inputs(tmp_path / "in", names)
    out = tmp_path / "out"
    codes = _run_processes(6, inputs, out)
    assert set(codes) <= {0, 1} and 0 in codes
    assert _done_counts(out) == dict.fromkeys(names, 1)
    cases = json.loads((out / MANIFEST_NAME).read_text())["cases"]
    assert {entry["status"] for entry in cases.values()} == {"done"}


def test_case_locks_exclude_other_processes_and_die_with_them(tmp_path: Path) -> None:
    ready, holder = fork.Event(), None

    def hold() -> None:
        lock = FolderLock(tmp_path)
        assert lock.try_case("a")
        ready.set()
        time.sleep(60)

    holder = fork.Process(target=hold)
    holder.start()
    try:
        assert ready.wait(30)
        with FolderLock(tmp_path) as lock:
            assert not lock.try_case("a")  # held by the other process
            assert lock.try_case("b")
            lock.release_case("b")
            os.kill(holder.pid or 0, signal.SIGKILL)  # a killed holder releases its locks
            holder.join(30)
            assert lock.try_case("a")
    finally:
        if holder.is_alive():
            holder.kill()
    assert (tmp_path / LOCK_NAME).exists()


def test_interrupted_between_outputs_and_record_is_redone_on_continue(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path / "in", ("a", "b"))
    out = tmp_path / "out"
    predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out))
    # as if killed after b's files were in place but before its "done" record
    with FolderLock(out) as lock:
        OutputManifest(out, lock).record(
            "b",
            status="running",
            source=inputs / "b.nii.gz",
            outputs=[out / "b.nii.gz", out / "b.json"],
            domain=None,
            model_sha256=None,
        )
    (out / ".b.nii.gz.x1y2.tmp.nii.gz").write_bytes(b"half a file")  # the killed run's temp
    with pytest.raises(Exception, match="already exists"):
        predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out))
    result = predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out, resume=True))
    assert {r.case.name: r.status for r in result.results} == {"a": "skipped", "b": "done"}
    assert not (out / ".b.nii.gz.x1y2.tmp.nii.gz").exists()
    assert json.loads((out / MANIFEST_NAME).read_text())["cases"]["b"]["status"] == "done"


def test_outputs_nobody_recorded_are_not_replaced_by_continue(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path / "in", ("a",))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.nii.gz").write_bytes(b"the user's own file")
    result = predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out, resume=True))
    assert [r.status for r in result.results] == ["failed"]
    assert "a.nii.gz: already exists" in result.results[0].reason
    assert (out / "a.nii.gz").read_bytes() == b"the user's own file"
    assert not (out / "a.json").exists()


@pytest.mark.parametrize(
    "content",
    [b"not json at all", b'{"someone": "else"}', b'{"format": 2, "cases": []}', b"[1, 2]"],
)
def test_a_manifest_that_is_not_pedsegs_is_refused(tmp_path: Path, content: bytes) -> None:
    inputs = make_inputs(tmp_path / "in", ("a",))
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST_NAME).write_bytes(content)
    with pytest.raises(ConfigError, match="not a pedseg manifest"):
        predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out))
    assert (out / MANIFEST_NAME).read_bytes() == content
    assert files(out) == {MANIFEST_NAME}


def test_a_format_1_manifest_is_read_and_upgraded(tmp_path: Path) -> None:
    inputs = make_inputs(tmp_path / "in", ("a", "b"))
    out = tmp_path / "out"
    predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out))
    data = json.loads((out / MANIFEST_NAME).read_text())
    old = {  # what pedseg 0.1 wrote: one domain and model for the folder
        "format": 1,
        "pedseg_version": "0.1.0",
        "domain": "toy",
        "model_sha256": "0" * 64,
        "cases": {
            name: {k: v for k, v in entry.items() if k != "history"}
            for name, entry in data["cases"].items()
        },
    }
    (out / MANIFEST_NAME).write_text(json.dumps(old))
    result = predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out, resume=True))
    assert [r.status for r in result.results] == ["skipped", "skipped"]
