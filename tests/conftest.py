"""Shared fixtures: an isolated PEDSEG_HOME for every test, the real data folder when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest_runs import tiny_run_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PEDSEG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def isolated_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Every test gets its own user registry and cache, never the developer's."""
    home = tmp_path_factory.mktemp("pedseg_home")
    monkeypatch.setenv("PEDSEG_HOME", str(home))
    monkeypatch.delenv("PEDSEG_DEBUG", raising=False)
    return home


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``dsl-contrastive`` run on ankle + shoulder phantoms (32x32, width 4, depth 3), trained once."""
    return tiny_run_dir(tmp_path_factory, scheme="dsl-contrastive")


@pytest.fixture(scope="session")
def tiny_joint_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same, ``joint`` scheme (one shared BN, one head over the union of labels)."""
    return tiny_run_dir(tmp_path_factory, scheme="joint")


@pytest.fixture(scope="session")
def tiny_baseline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same, ``baseline`` scheme (one member run per domain under ``RUN/baseline``)."""
    return tiny_run_dir(tmp_path_factory, scheme="baseline")


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (real MR volumes); skips the test where it is absent."""
    if not (SHARED_DATA / "pelvis").is_dir() or not (SHARED_DATA / "spine").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests cleanly where no CUDA device is usable."""
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
