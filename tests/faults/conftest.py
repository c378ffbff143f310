"""The fault suite: one test per fault of the hostile-user trial (issue 11), through the CLI where
a user meets it, each asserting the exit code, the one-line message and the files left behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import pedseg  # the in-process CLI runner
from tests.conftest_runs import phantom_dir, single_thread, tiny_run_dir

__all__ = ["pedseg"]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("PEDSEG_NUM_THREADS", "1")
    with single_thread():
        yield


@pytest.fixture
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny trained ankle + shoulder run (shared: do not modify it)."""
    return tiny_run_dir(tmp_path_factory)


@pytest.fixture
def ankle_scan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 32x32x16 ankle phantom (shared: do not modify it)."""
    images = phantom_dir(tmp_path_factory) / "ankle" / "imagesTr"
    return sorted(images.iterdir())[0]
