"""Tiny trained runs for the export tests (see ``tests/conftest_runs.py``); one torch thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest_runs import single_thread, tiny_run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``dsl-contrastive`` run on ankle + shoulder phantoms (32x32, width 4, depth 3)."""
    return tiny_run_dir(tmp_path_factory, scheme="dsl-contrastive")


@pytest.fixture(scope="session")
def tiny_joint_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same, ``joint`` scheme (one shared BN, one head over the union of labels)."""
    return tiny_run_dir(tmp_path_factory, scheme="joint")


@pytest.fixture(scope="session")
def tiny_baseline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same, ``baseline`` scheme (one member run per domain under ``RUN/baseline``)."""
    return tiny_run_dir(tmp_path_factory, scheme="baseline")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Run a test with one torch thread (tiny models; avoids oversubscribing a shared CPU)."""
    with single_thread():
        yield
