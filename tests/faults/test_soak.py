"""Soak test (slow): many predictions into one folder from concurrent processes, one killed at
random every moment and restarted with ``--continue``. At the end every case is done exactly once,
the outputs equal a clean sequential run's, and no temporary file is left."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pedseg.inference.batch import BatchOptions, predict_cases
from pedseg.inference.manifest import LOCK_NAME, MANIFEST_NAME
from tests.inference.test_batch import make_inputs
from tests.inference.test_predictor import threshold_predictor

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.name != "posix", reason="POSIX")]
fork = multiprocessing.get_context("fork")
CASES = 200
PROCESSES = 4


def _worker(inputs: Path, out: Path) -> None:
    result = predict_cases(threshold_predictor(), [inputs], BatchOptions(out=out, resume=True))
    os._exit(0 if not result.failed else 3)


def _start(inputs: Path, out: Path) -> multiprocessing.process.BaseProcess:
    process = fork.Process(target=_worker, args=(inputs, out))
    process.start()
    return process


def _done(out: Path) -> dict[str, int]:
    if not (out / MANIFEST_NAME).exists():
        return {}
    cases = json.loads((out / MANIFEST_NAME).read_text())["cases"]
    return {
        name: sum(1 for h in entry["history"] if h["status"] == "done")
        for name, entry in cases.items()
        if entry["status"] == "done"
    }


def test_killed_and_restarted_runs_finish_every_case_once(tmp_path: Path) -> None:
    names = tuple(f"c{k:03d}" for k in range(CASES))
    inputs = make_inputs(tmp_path / "in", names)
    reference = tmp_path / "reference"
    predict_cases(threshold_predictor(), [inputs], BatchOptions(out=reference))
    out = tmp_path / "out"
    rng = random.Random(0)
    workers = [_start(inputs, out) for _ in range(PROCESSES)]
    kills, deadline = 0, time.monotonic() + 600
    while len(_done(out)) < CASES and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.2, 0.8))
        victim = rng.randrange(PROCESSES)
        if workers[victim].is_alive():
            os.kill(workers[victim].pid or 0, signal.SIGKILL)
            kills += 1
        workers[victim].join(10)
        workers = [w if w.is_alive() else _start(inputs, out) for w in workers]
    for worker in workers:
        worker.join(120)
    assert kills > 5
    done = _done(out)
    assert done == dict.fromkeys(names, 1), {k: v for k, v in done.items() if v != 1}
    for name in names:
        for suffix in (".nii.gz",):
            ours, theirs = (
                nib.load(out / f"{name}{suffix}"),
                nib.load(reference / f"{name}{suffix}"),
            )
            assert np.array_equal(np.asarray(ours.dataobj), np.asarray(theirs.dataobj))
            assert np.array_equal(ours.affine, theirs.affine)
        report = json.loads((out / f"{name}.json").read_text())
        expected = json.loads((reference / f"{name}.json").read_text())
        assert report["labels"] == expected["labels"]
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != LOCK_NAME]
    assert leftovers == []
