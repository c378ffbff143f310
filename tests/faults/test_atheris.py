"""Coverage-guided fuzzing with atheris (libFuzzer), briefly: a few thousand inputs per target.

Slow and optional: skipped where atheris is not installed (``pip install atheris``). Longer runs by
hand: see ``tests/faults/atheris_fuzz.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris")

HARNESS = Path(__file__).with_name("atheris_fuzz.py")


@pytest.mark.slow
@pytest.mark.parametrize("target", ["nifti", "niigz", "mha", "nrrd", "yaml"])
def test_atheris_finds_nothing(target: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(HARNESS), target, "-runs=3000", "-timeout=10"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PEDSEG_NUM_THREADS": "1"},
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done 3000 runs" in done.stderr
    assert list(tmp_path.iterdir()) == []  # no crash files
